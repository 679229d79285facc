"""Issue 30, the colour layer's encoder: block means (as built) against least-squares values for the decoder's
bilinear surface. The format and the decoder stay as they are; only `colour.fit` changes.

The decoder adds bilinear(q * step) between block centres. The block mean is the least-squares value of a
piecewise-constant correction, not of a bilinear one: on a ramp the means are right, but where the error
changes from one block to the next the interpolation smears it. Least squares over the bilinear weights
(per channel, separable: Wy V Wx^T ~ E, so V = Gy^-1 (Wy^T E Wx) Gx^-1 with the tridiagonal Gram matrices
G = W^T W), with an optional pull toward the block means (ridge lambda = alpha x B^2, through the Grams'
eigenvectors), then rounded to the step. (`colour.fit` now computes the plain least squares, lsq here; fit_means
below is the encoder it replaced.)

Each held-out clean photo is compressed without the layer at qualities 1-5 and decoded once (cached under
--cache); every fit, block and step is then scored with real layer bytes (colour.Layer.cost_bytes), and each
image takes its best candidate by the encoder's rule (gain in dB less colour.DB_PER_BPP x added bpp).

    python experiments/colour_lsq.py vqf8-v13 runs/holdout_clean --cache runs/colour_cache --json experiments/results/colour_lsq_v13.json
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
from PIL import Image

from vqcodec import colour
from vqcodec.bench.bdrate import bd_rate_with_overlap


def bilinear_matrix(n: int, blocks: int, log2_block: int) -> np.ndarray:
    """(n, blocks) float64: the decoder's bilinear weights along one axis (colour._weights)."""
    lo, hi, r = colour._weights(n, blocks, log2_block)
    b2 = 2 << log2_block
    w = np.zeros((n, blocks))
    np.add.at(w, (np.arange(n), lo), (b2 - r) / b2)
    np.add.at(w, (np.arange(n), hi), r / b2)
    return w


def fit_means(original: np.ndarray, decoded: np.ndarray, log2_block: int, step: int) -> np.ndarray:
    """Symbols (C, gh, gw): each block's mean error (its pixels only) over the step, rounded and clipped (the
    colour layer's first encoder)."""
    h, w, c = original.shape
    b = 1 << log2_block
    gh, gw = colour.grid_shape(w, h, log2_block)
    err = np.zeros((gh * b, gw * b, c))
    cnt = np.zeros((gh * b, gw * b, 1))
    err[:h, :w] = original.astype(np.float64) - decoded
    cnt[:h, :w] = 1
    sums = err.reshape(gh, b, gw, b, c).sum((1, 3))
    count = cnt.reshape(gh, b, gw, b, 1).sum((1, 3))
    t = colour.half_width(step)
    return np.clip(np.rint(sums / (count * step)), -t, t).astype(np.int64).transpose(2, 0, 1)


def fit_lsq(original: np.ndarray, decoded: np.ndarray, log2_block: int, step: int, alpha: float = 0.0) -> np.ndarray:
    """Symbols (C, gh, gw): least-squares values of the bilinear correction, pulled toward the block means by
    alpha x B^2, rounded to the step and clipped as colour.fit's are."""
    h, w, c = original.shape
    gh, gw = colour.grid_shape(w, h, log2_block)
    wy, wx = bilinear_matrix(h, gh, log2_block), bilinear_matrix(w, gw, log2_block)
    sy, uy = np.linalg.eigh(wy.T @ wy)
    sx, ux = np.linalg.eigh(wx.T @ wx)
    lam = alpha * (1 << log2_block) ** 2
    means = fit_means(original, decoded, log2_block, 1).astype(np.float64)   # step 1: the block means, rounded
    err = original.astype(np.float64) - decoded
    t = colour.half_width(step)
    out = np.empty((c, gh, gw), dtype=np.int64)
    for ch in range(c):
        rhs = wy.T @ err[..., ch] @ wx + lam * means[ch]
        v = uy @ ((uy.T @ rhs @ ux) / (np.outer(sy, sx) + lam)) @ ux.T
        out[ch] = np.clip(np.rint(v / step), -t, t)
    return out


FITS = {"mean": None, "lsq": 0.0, "lsq a0.1": 0.1, "lsq a0.3": 0.3, "lsq a1": 1.0}


def decoded_pair(codec, path: Path, q: int, cache: Path):
    """(original, decoded without the layer, file bytes) of one photo at quality q, cached."""
    f = cache / f"{path.stem}_q{q}.npz"
    x = np.asarray(Image.open(path).convert("RGB"))
    if f.exists():
        z = np.load(f)
        return x, z["decoded"], int(z["bytes"])
    data = codec.compress(Image.fromarray(x), q, colour_layer=False)
    y = np.asarray(codec.decompress(data).convert("RGB"))
    np.savez(f, decoded=y, bytes=len(data))
    return x, y, len(data)


def curve(rows, qualities, fit_name, db_per_bpp):
    """Mean (bpp, PSNR) per quality when each image takes its best candidate of fit_name by the encoder's rule
    at db_per_bpp (fit_name None: no layer), and how often each candidate was taken."""
    pts, picks = [], {}
    for q in qualities:
        bpp, psnr = [], []
        for r in rows[str(q)]:
            best = (0.0, r["bytes"], r["sse"], None)
            for v in r["fits"].get(fit_name, []) if fit_name else []:
                score = 10 * math.log10(r["sse"] / max(v["sse"], 1e-9)) - db_per_bpp * 8 * v["cost"] / r["pixels"]
                if score > best[0]:
                    best = (score, r["bytes"] + v["cost"], v["sse"], f"B{1 << v['log2_block']} s{v['step']}")
            picks[str(best[3])] = picks.get(str(best[3]), 0) + 1
            bpp.append(8 * best[1] / r["pixels"])
            psnr.append(10 * math.log10(255 ** 2 * 3 * r["pixels"] / max(best[2], 1e-9)))
        pts.append([round(float(np.mean(bpp)), 5), round(float(np.mean(psnr)), 4)])
    return pts, picks


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("images")
    ap.add_argument("--qualities", default="1-5")
    ap.add_argument("--cache", required=True)
    ap.add_argument("--json")
    args = ap.parse_args()
    from vqcodec.codec import load_codec

    codec = load_codec(args.model)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    lo, hi = (int(v) for v in args.qualities.split("-"))
    qualities = list(range(lo, hi + 1))
    paths = sorted(Path(args.images).glob("*.png"))
    rows = {}
    for q in qualities:
        rows[str(q)] = []
        for p in paths:
            x, y, nbytes = decoded_pair(codec, p, q, cache)
            px = x.shape[0] * x.shape[1]
            r = dict(image=p.name, pixels=px, bytes=nbytes, sse=colour._sse(x, y), fits={})
            if 8 * nbytes < colour.MAX_BPP * px:          # the encoder tries a layer only below MAX_BPP
                for name, alpha in FITS.items():
                    r["fits"][name] = []
                    for lb, s in colour.CANDIDATES:
                        v = fit_means(x, y, lb, s) if alpha is None else fit_lsq(x, y, lb, s, alpha)
                        if not v.any():
                            continue
                        decays, stream = colour.encode(v, s)
                        r["fits"][name].append(dict(log2_block=lb, step=s, sse=colour._sse(x, y, v, lb, s),
                                                    cost=colour.Layer(lb, s, decays, stream, v).cost_bytes))
            rows[str(q)].append(r)
        print(q, "done", flush=True)
    ref, _ = curve(rows, qualities, "mean", colour.DB_PER_BPP)
    none, _ = curve(rows, qualities, None, 0)
    results = {"none": dict(points=none)}
    for name in FITS:
        for t in (20, 30, 40, 60, 80):
            pts, picks = curve(rows, qualities, name, t)
            bd = bd_rate_with_overlap([a for a, _ in ref], [b for _, b in ref], [a for a, _ in pts], [b for _, b in pts])[0]
            results[f"{name} @{t:g}"] = dict(bd_rate_vs_mean_at_40_pct=round(bd, 2), points=pts, picks=picks)
            print(f"{name:9s} @{t:<3g} {bd:+.2f} %  q1 {pts[0]}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(dict(model=args.model, images=args.images, count=len(paths),
                                                   qualities=qualities, results=results)) + "\n")


if __name__ == "__main__":
    main()
