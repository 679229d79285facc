"""Issue 30, the smooth-photo gap: what would a coarse colour layer buy at the VQ qualities?

The layer is the simplest one that could show the effect: the decoded image's error, averaged over B x B
blocks per channel (a 1/B-resolution colour image), quantized with step s, coded with a discretized Laplacian
fitted per image and channel (its scale sent as 16 bits), and added back (nearest: flat per block; or bilinear
between block centres). Bits and PSNR are whole-image, on the held-out clean photos (`runs/holdout_clean`:
training-set photos never trained on, downscaled 2x).

    python experiments/colour_layer.py runs/snap/vqf8-r1c runs/holdout_clean --json experiments/results/colour_layer.json
"""
from __future__ import annotations

import argparse
import io
import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from vqcodec.bench.bdrate import bd_rate_with_overlap
from vqcodec.codec import load_codec


def laplace_bits(q: np.ndarray) -> float:
    """Bits of integers q under a zero-mean discretized Laplacian of the maximum-likelihood scale, + 16."""
    b = max(float(np.abs(q).mean()), 1e-3)
    k = np.abs(q)
    # P(0) = 1 - e^{-1/(2b)}; P(k) = sinh(1/(2b)) e^{-k/b} for k != 0 (unit bins of a Laplacian of scale b)
    p0 = 1 - math.exp(-0.5 / b)
    pk = np.where(k == 0, p0, math.sinh(0.5 / b) * np.exp(-k / b))
    return float(-np.log2(np.maximum(pk, 1e-300)).sum()) + 16


def correct(x: np.ndarray, y: np.ndarray, block: int, step: float, smooth: bool) -> tuple[np.ndarray, float]:
    """x original, y decoded (H, W, 3) float -> (corrected y, bits)."""
    h, w, _ = x.shape
    e = torch.from_numpy(x - y).permute(2, 0, 1)[None]                                 # (1, 3, H, W)
    hb, wb = -(-h // block), -(-w // block)
    e = F.pad(e, (0, wb * block - w, 0, hb * block - h), mode="replicate")
    m = F.avg_pool2d(e, block)                                                         # (1, 3, hb, wb)
    q = torch.round(m / step)
    bits = sum(laplace_bits(q[0, c].numpy()) for c in range(3))
    mode = dict(mode="bilinear", align_corners=False) if smooth else dict(mode="nearest")
    up = F.interpolate(q * step, scale_factor=block, **mode)
    out = np.clip(y + up[0, :, :h, :w].permute(1, 2, 0).numpy(), 0, 255)
    return np.round(out), bits


def psnr(a, b):
    return 10 * math.log10(255 ** 2 / max(float(((a - b) ** 2).mean()), 1e-12))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("images")
    ap.add_argument("--qualities", default="1-10")
    ap.add_argument("--json")
    args = ap.parse_args()
    codec = load_codec(args.model)
    lo, hi = (int(v) for v in args.qualities.split("-"))
    variants = [(b, s, sm) for b in (16, 32, 64) for s in (1.0, 2.0, 4.0) for sm in (False, True)]
    paths = sorted(Path(args.images).glob("*.png"))
    rows = {}
    for q in range(lo, hi + 1):
        acc = {"base": [0.0, 0.0]} | {f"B{b} s{s:g} {'bilinear' if sm else 'flat'}": [0.0, 0.0] for b, s, sm in variants}
        for p in paths:
            img = Image.open(p).convert("RGB")
            x = np.asarray(img, dtype=np.float64)
            data = codec.compress(img, q)
            y = np.asarray(codec.decompress(data), dtype=np.float64)
            px = x.shape[0] * x.shape[1]
            acc["base"][0] += len(data) * 8 / px / len(paths)
            acc["base"][1] += psnr(x, y) / len(paths)
            for b, s, sm in variants:
                yc, bits = correct(x, y, b, s, sm)
                k = f"B{b} s{s:g} {'bilinear' if sm else 'flat'}"
                acc[k][0] += (len(data) * 8 + bits) / px / len(paths)
                acc[k][1] += psnr(x, yc) / len(paths)
        rows[q] = {k: {"bpp": round(v[0], 5), "psnr": round(v[1], 3)} for k, v in acc.items()}
        print(q, "base", rows[q]["base"], flush=True)
    base = [rows[q]["base"] for q in rows]
    bd = {}
    for k in rows[lo]:
        if k != "base":
            pts = [rows[q][k] for q in rows]
            bd[k] = round(bd_rate_with_overlap([p["bpp"] for p in base], [p["psnr"] for p in base],
                                               [p["bpp"] for p in pts], [p["psnr"] for p in pts])[0], 2)
    for k, v in sorted(bd.items(), key=lambda kv: kv[1]):
        print(f"{k:24s} BD-rate vs no layer {v:+.2f} %")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "images": args.images, "count": len(paths),
                                               "bd_rate_vs_none_pct": bd, "qualities": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
