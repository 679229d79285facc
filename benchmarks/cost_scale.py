"""Quality as a lambda: the encoder's code costs scaled by m, the model otherwise as shipped (issue 8, item 3).

    python benchmarks/cost_scale.py --scales 1,0.7,1.4 [--model vqf8-v12] [--out benchmarks/results/cost_scale.json]

The entropy-constrained stages carry each code's cost lambda_s x L(c) in `code_cost`, which only the encoder
reads (the greedy search and the beam add it to the distances). Scaling every stage's costs by m moves each
quality's operating point without a format change: m < 1 spends more bits for less error, m > 1 fewer. If
the points of some m lay above the m = 1 curve, a quality could be a (stages, m) pair. Measured on the 48 training
crops of compare_autoencoders.py, whole .vq files at the default effort, every quality; BD-rate of each m against
m = 1, in PSNR and in MS-SSIM (dB). The prior stays the shipped one (trained on m = 1's indices).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scales", default="1,0.7,1.4", help="comma-separated multipliers m; include 1 (the anchor)")
    ap.add_argument("--model", default=None, help="model name or folder (default: the shipped model)")
    ap.add_argument("--data", default="../shared/data/train")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/cost_scale.json"))
    args = ap.parse_args()
    scales = [float(a) for a in args.scales.split(",")]
    if 1.0 not in scales:
        raise SystemExit("Error: --scales must include 1 (the anchor)")

    from compare_autoencoders import codec_curve, training_crops
    from vqcodec.bench.bdrate import bd_rate
    from vqcodec.codec import load_codec

    crops = training_crops(args.data)                                       # (48, 3, 256, 256)
    codec = load_codec(args.model)          # (cached: its costs are changed in place, in this process only)
    stages = codec.autoencoder.rvq.stages
    shipped = [vq.code_cost.clone() for vq in stages]
    curves = {}
    for m in scales:
        for vq, cost in zip(stages, shipped):
            vq.code_cost.copy_(cost * m)
        bpp, db, ms = codec_curve(codec, crops)
        curves[m] = dict(bpp=bpp, psnr=db, msssim_db=ms)
        print(f"m = {m}: (bpp, PSNR, MS-SSIM dB)", [(round(r, 4), round(d, 2), round(s, 2)) for r, d, s in zip(bpp, db, ms)],
              flush=True)
    a = curves[1.0]
    result = {"model": codec.cfg.name, "qualities": list(codec.qualities), "curves": {}}
    for m, c in curves.items():
        bd = {"psnr": bd_rate(a["bpp"], a["psnr"], c["bpp"], c["psnr"]),
              "msssim_db": bd_rate(a["bpp"], a["msssim_db"], c["bpp"], c["msssim_db"])}
        result["curves"][str(m)] = {**c, "bd_rate_vs_1": bd}
        print(f"m = {m}: BD-rate against m = 1: PSNR {bd['psnr']:+.2f} %, MS-SSIM (dB) {bd['msssim_db']:+.2f} %")
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
