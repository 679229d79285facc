"""A refined model's quality ladder, chosen with real files on the held-out photos (the export phase's "auto").

Every VQ level and every (refinement level k, VQ stages b) is a candidate. Each is measured by compressing the
held-out photos (vqcodec/holdout.txt; clean ones downscaled 2x) at the default effort: mean bpp of whole files,
mean PSNR. The ladder keeps the VQ levels up to the last one on the upper convex hull of (bpp, PSNR), so that
the low qualities stay progressive prefixes of one another, then the hull's refined points above it.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from tqdm import tqdm


def candidates(cfg) -> object:
    """cfg with every VQ level and every (k, b) as its qualities."""
    pairs = tuple((k, b) for b in range(1, cfg.num_stages + 1) for k in range(1, cfg.refine_levels + 1))
    return dataclasses.replace(cfg, vq_qualities=cfg.num_stages, refine_ladder=pairs)


def measure(codec, images) -> list[dict]:
    """codec: a model with candidates() as its qualities; images: PIL images -> one point per quality above the
    coarse ones: k (0 for a VQ level), b, mean bpp, mean PSNR."""
    cfg = codec.cfg
    qualities = range(len(cfg.coarse_sizes) + 1, cfg.num_qualities + 1)
    points = []
    for q in tqdm(qualities, desc="ladder", unit="quality"):
        bpp, psnr = [], []
        for im in images:
            data = codec.compress(im, q)
            out = np.asarray(codec.decompress(data), dtype=np.float64)
            mse = ((out - np.asarray(im.convert("RGB"), dtype=np.float64)) ** 2).mean()
            bpp.append(8 * len(data) / (im.width * im.height))
            psnr.append(10 * np.log10(255 ** 2 / max(mse, 1e-10)))
        points.append(dict(k=cfg.refine_level(q), b=cfg.quality_plan(q)[0], bpp=round(float(np.mean(bpp)), 5),
                           psnr=round(float(np.mean(psnr)), 4)))
    return points


def upper_hull(points: list[dict]) -> list[dict]:
    """The points on the upper convex hull of (bpp, PSNR), rising in both."""
    out: list[dict] = []
    for p in sorted(points, key=lambda p: (p["bpp"], -p["psnr"])):
        if out and p["psnr"] <= out[-1]["psnr"]:
            continue
        while len(out) >= 2:
            (x1, y1), (x2, y2) = (out[-2]["bpp"], out[-2]["psnr"]), (out[-1]["bpp"], out[-1]["psnr"])
            if (y2 - y1) * (p["bpp"] - x1) <= (p["psnr"] - y1) * (x2 - x1):
                out.pop()
            else:
                break
        out.append(p)
    return out


def choose(points: list[dict]) -> tuple[int, tuple[tuple[int, int], ...]]:
    """Measured points -> (vq_qualities, refine_ladder) for ModelConfig."""
    top = upper_hull(points)
    vq = max([p["b"] for p in top if p["k"] == 0], default=1)
    vq_bpp = next(p["bpp"] for p in points if p["k"] == 0 and p["b"] == vq)
    return vq, tuple((p["k"], p["b"]) for p in top if p["k"] and p["bpp"] > vq_bpp)
