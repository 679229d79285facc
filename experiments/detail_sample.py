"""Issue 28: how much fine detail `--detail sample` gives back, and what it costs in PSNR.

For each photo and quality: the coded decode, and decodes with the missing residual stages drawn from the prior
up to several stage counts, by each decoder the model offers. Reported per (quality, fill, decoder): bpp, PSNR, MS-SSIM and the detail ratio (luma power
above 1/8 cycle per pixel, relative to the original's; vqcodec.bench.metrics.detail_ratio), medians over photos.

    python experiments/detail_sample.py --set holdout --json experiments/results/detail_sample_holdout.json
    python experiments/detail_sample.py --set kodak --json experiments/results/detail_sample_kodak.json

--set holdout: centre crops (384 x 384) of the first N held-out training photos (vqcodec/holdout.txt): where the
default is chosen. --set kodak: every fourth Kodak image, whole, as issue 28's table: for reporting only.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vqcodec.bench.metrics import detail_ratio, ms_ssim, psnr
from vqcodec.codec import load_codec
from vqcodec.holdout import load_holdout_image, split

ROOT = Path(__file__).resolve().parents[1]


def photos(which: str, count: int, data: Path) -> list[tuple[str, Image.Image]]:
    if which == "kodak":
        return [(f"kodim{i:02d}", Image.open(ROOT / "benchmarks" / "kodak" / f"kodim{i:02d}.png").convert("RGB"))
                for i in range(1, 25, 4)]
    out = []
    for path, kind in split(data)[1][:count]:
        a = load_holdout_image(path, kind)
        side = min(384, *a.shape[:2]) // 8 * 8
        y, x = (a.shape[0] - side) // 2, (a.shape[1] - side) // 2
        out.append((path.name, Image.fromarray(a[y:y + side, x:x + side])))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", choices=["holdout", "kodak"], default="holdout")
    ap.add_argument("--count", type=int, default=8, help="held-out photos (default 8)")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "train")
    ap.add_argument("--qualities", default="1,2,3,4,6")
    ap.add_argument("--fills", default="1,2,4,10", help="stages drawn beyond the coded ones (10: up to all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--decoders", choices=["fidelity", "all"], default="all",
                    help="all: also the realistic decoder, where the model has one")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    torch.set_num_threads(1)
    codec = load_codec(None)
    rows = []
    t0 = time.time()
    images = photos(a.set, a.count, a.data)
    for name, image in images:
        for q in map(int, a.qualities.split(",")):
            data = codec.compress(image, q)
            coded = codec.cfg.quality_plan(q)[0]
            bpp = 8 * len(data) / (image.width * image.height)
            fills = sorted({min(coded + f, codec.cfg.num_stages) for f in map(int, a.fills.split(","))} | {coded})
            for target in fills:
                for decoder in codec.decoders if a.decoders == "all" else ("fidelity",):
                    out = (codec.decompress(data, decoder=decoder) if target == coded else
                           codec.decompress(data, detail="sample", seed=a.seed, detail_stages=target, decoder=decoder))
                    rows.append({"image": name, "quality": q, "coded_stages": coded, "stages": target,
                                 "decoder": decoder, "bpp": bpp, "psnr": psnr(out, image),
                                 "ms_ssim": ms_ssim(out, image), "detail": detail_ratio(out, image)})
            print(f"{name} q{q} done ({time.time() - t0:.0f} s)", flush=True)
    summary = []
    for q in sorted({r["quality"] for r in rows}):
        for target in sorted({r["stages"] for r in rows if r["quality"] == q}):
            for decoder in sorted({r["decoder"] for r in rows}):
                sel = [r for r in rows if r["quality"] == q and r["stages"] == target and r["decoder"] == decoder]
                med = {k: float(np.median([r[k] for r in sel])) for k in ("bpp", "psnr", "ms_ssim", "detail")}
                summary.append({"quality": q, "coded_stages": sel[0]["coded_stages"], "stages": target,
                                "decoder": decoder, **med})
                print(f"q{q} stages {sel[0]['coded_stages']}->{target} {decoder}: bpp {med['bpp']:.3f} "
                      f"PSNR {med['psnr']:.2f} MS-SSIM {med['ms_ssim']:.4f} detail {med['detail']:.2f}")
    if a.json:
        a.json.write_text(json.dumps({"command": "python experiments/detail_sample.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(a).items() if k not in ("json", "data")),
            "model": codec.model_name, "images": [n for n, _ in images], "summary": summary, "rows": rows},
            indent=1) + "\n")


if __name__ == "__main__":
    main()
