"""Issue 30's colour complaint, measured: how far is a decoded image's mean colour from the original's, with and
without the colour layer? Per photo and channel, |mean(original) - mean(decoded)| in 8-bit levels, and the same
over 64x64 blocks (the largest block error of each photo), on the held-out clean photos.

    python experiments/colour_shift.py vqf8-v13 runs/holdout_clean --qualities 1,2,3,4 --json experiments/results/colour_shift_v13.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from vqcodec.codec import load_codec


def shifts(x: np.ndarray, y: np.ndarray, block: int = 64) -> tuple[float, float]:
    """(largest |mean error| over the channels, largest |mean error| over the 64x64 blocks and channels)."""
    e = x.astype(np.float64) - y
    whole = float(np.abs(e.mean((0, 1))).max())
    h, w = (s // block * block for s in e.shape[:2])
    if not h or not w:
        return whole, whole
    blocks = e[:h, :w].reshape(h // block, block, w // block, block, 3).mean((1, 3))
    return whole, float(np.abs(blocks).max())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("images")
    ap.add_argument("--qualities", default="1,2,3,4")
    ap.add_argument("--json")
    args = ap.parse_args()
    codec = load_codec(args.model)
    paths = sorted(Path(args.images).glob("*.png"))
    out = {}
    for q in map(int, args.qualities.split(",")):
        row = {}
        for layer in (False, True):
            whole, block, nbytes = [], [], 0
            for p in paths:
                img = Image.open(p).convert("RGB")
                data = codec.compress(img, q, colour_layer=layer)
                nbytes += len(data)
                a, b = shifts(np.asarray(img), np.asarray(codec.decompress(data)))
                whole.append(a)
                block.append(b)
            row["layer" if layer else "none"] = {
                "bytes": nbytes, "mean_shift_median": round(float(np.median(whole)), 2),
                "mean_shift_max": round(float(np.max(whole)), 2),
                "block_shift_median": round(float(np.median(block)), 2),
                "block_shift_max": round(float(np.max(block)), 2)}
        out[q] = row
        print(q, json.dumps(row), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "images": args.images, "count": len(paths),
                                               "qualities": out}, indent=1) + "\n")


if __name__ == "__main__":
    main()
