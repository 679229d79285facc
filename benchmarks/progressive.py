"""What progressive decoding costs: a lower quality decoded from a top-quality file against a file made at
that quality, on Kodak images (mean PSNR and bpp), at each encoder effort.

    python benchmarks/progressive.py --every 3 --json benchmarks/results/progressive.json

At effort 0 (greedy) the first stages of a file are exactly what a lower quality's file holds, so the two agree.
At effort 1 the beam search picks each vector's path for the file's own stage count, and a prefix of that path
is not the best path of fewer stages: that difference is what this measures.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def psnr(a: Image.Image, b: Image.Image) -> float:
    x = np.asarray(a.convert("RGB"), dtype=np.float64)
    y = np.asarray(b.convert("RGB"), dtype=np.float64)
    return float(10 * np.log10(255.0 ** 2 / np.mean((x - y) ** 2)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", type=Path, default=ROOT / "benchmarks" / "kodak")
    ap.add_argument("--every", type=int, default=1, help="every Nth image (1: all)")
    ap.add_argument("--efforts", default="1,0")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    import torch

    from vqcodec.codec import load_codec

    torch.set_num_threads(1)
    codec = load_codec()
    top = max(codec.qualities)
    lowest_prefix = len(codec.cfg.coarse_sizes) + 1        # coarse levels decode only from their own files
    paths = sorted(args.dataset.glob("kodim*.png"))[::args.every]
    images = [Image.open(p).convert("RGB") for p in paths]
    pixels = sum(im.width * im.height for im in images)
    out = {"model": codec.model_name, "images": [p.name for p in paths], "efforts": {}}
    t0 = time.time()
    for effort in map(int, args.efforts.split(",")):
        files = {q: [codec.compress(im, q, effort=effort) for im in images] for q in range(lowest_prefix, top + 1)}
        rows = []
        for q in range(lowest_prefix, top):
            own = np.mean([psnr(im, codec.decompress(d)) for im, d in zip(images, files[q])])
            prefix = np.mean([psnr(im, codec.decompress(d, quality=q)) for im, d in zip(images, files[top])])
            own_bpp = 8 * sum(map(len, files[q])) / pixels
            rows.append({"quality": q, "own_file_psnr": round(float(own), 3), "from_top_file_psnr": round(float(prefix), 3),
                         "psnr_cost_db": round(float(own - prefix), 3), "own_file_bpp": round(own_bpp, 4)})
            print(json.dumps({"effort": effort, **rows[-1]}), flush=True)
        out["efforts"][str(effort)] = rows
    out["seconds"] = round(time.time() - t0)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
