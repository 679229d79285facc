"""Quality as a lambda: the encoder's code costs scaled by m, the model otherwise as shipped (issue 8, item 3).

    python benchmarks/cost_scale.py --scales 1,0.7,1.4 [--model vqf8-v13] [--out benchmarks/results/cost_scale.json]
    python benchmarks/cost_scale.py --export runs/m07/base --scales 0.7 [--model ...]   # a model folder with costs x m

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
    ap.add_argument("--export", type=Path, default=None, metavar="DIR",
                    help="instead: write the model with its costs scaled by the one --scales value to DIR (a model "
                         "folder named NAME-mM), for training a prior or decoder on that m's indices")
    args = ap.parse_args()
    scales = [float(a) for a in args.scales.split(",")]
    if args.export is not None:
        if len(scales) != 1:
            raise SystemExit("Error: --export takes one --scales value")
        export_scaled(args.model, scales[0], args.export)
        return
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


def export_scaled(model, m: float, out: Path) -> None:
    """The model (name or folder) with every stage's code costs times m, as a model folder."""
    from vqcodec.codec import VQCodec, resolve_model_dir
    from vqcodec.config import ModelConfig
    from vqcodec.training_cli import export_model

    src = resolve_model_dir(model)
    codec = VQCodec.load(src)                              # not the cache: its costs change
    for vq in codec.autoencoder.rvq.stages:
        vq.code_cost.mul_(m)
    cfg = ModelConfig.from_dict(codec.cfg.to_dict() | {"name": f"{codec.cfg.name}-m{m:g}"})
    codec.autoencoder.cfg = cfg
    report = json.loads((src / "training_report.json").read_text()) | {"cost_scale": m, "cost_scale_of": str(src)}
    export_model(VQCodec.serialize(codec.autoencoder, codec.prior, codec.coarse_codes), cfg, report, out)
    print("exported", out, cfg.name)


if __name__ == "__main__":
    main()
