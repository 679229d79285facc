"""A refined model's quality ladder, chosen with real files on the held-out photos (the export phase's "auto").

Every VQ level and every (refinement level k, VQ stages b) is a candidate. Each is measured by compressing the
held-out photos (vqcodec/holdout.txt; clean ones downscaled 2x) at the default effort: mean bpp of whole files,
mean PSNR. The ladder keeps the VQ levels up to the last one on (or within 0.05 dB of) the upper convex hull of
(bpp, PSNR), so that the low qualities stay progressive prefixes of one another, then the hull's refined points
above it, each at least 8 % more bits than the one before (no near-duplicate qualities).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from tqdm import tqdm


def candidates(cfg) -> object:
    """cfg with every VQ level and every (k, b) as its qualities."""
    pairs = tuple((k, b) for b in range(1, cfg.num_stages + 1) for k in range(1, cfg.refine_levels + 1))
    return dataclasses.replace(cfg, vq_qualities=cfg.num_stages, refine_ladder=pairs)


def measure(codec, images, cache: Path | None = None, key: str = "") -> list[dict]:
    """codec: a model with candidates() as its qualities; images: PIL images -> one point per quality above the
    coarse ones: k (0 for a VQ level), b, mean bpp, mean PSNR. cache: a JSON-lines file that keeps each point as
    it is measured, so that a stopped export goes on where it was; its lines count only under the same key (the
    caller's fingerprint of the weights and photos)."""
    cfg = codec.cfg
    qualities = range(len(cfg.coarse_sizes) + 1, cfg.num_qualities + 1)
    done, sep = _kept_points(cache, key, cfg, qualities)
    points = []
    for q in tqdm(qualities, desc="ladder", unit="quality"):
        if q in done:
            points.append(done[q])
            continue
        bpp, psnr = [], []
        for im in images:
            data = codec.compress(im, q)
            out = np.asarray(codec.decompress(data), dtype=np.float64)
            mse = ((out - np.asarray(im.convert("RGB"), dtype=np.float64)) ** 2).mean()
            bpp.append(8 * len(data) / (im.width * im.height))
            psnr.append(10 * np.log10(255 ** 2 / max(mse, 1e-10)))
        points.append(dict(k=cfg.refine_level(q), b=cfg.quality_plan(q)[0], bpp=round(float(np.mean(bpp)), 5),
                           psnr=round(float(np.mean(psnr)), 4)))
        if cache is not None:
            with cache.open("a") as f:
                f.write(sep + json.dumps(dict(key=key, quality=q, point=points[-1])) + "\n")
            sep = ""
    return points


def _kept_points(cache: Path | None, key: str, cfg, qualities) -> tuple[dict, str]:
    """The points a stopped export kept under this key ({quality: point}; anything malformed or of another
    quality plan is measured again), and the separator the next record needs after a line cut short."""
    if cache is None or not cache.exists():
        return {}, ""
    text = cache.read_text(errors="replace")
    done = {}
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:   # a line cut short when the run stopped
            continue
        if not isinstance(rec, dict) or rec.get("key") != key:
            continue
        q, p = rec.get("quality"), rec.get("point")
        if (type(q) is int and q in qualities and isinstance(p, dict) and p.get("k") == cfg.refine_level(q)
                and p.get("b") == cfg.quality_plan(q)[0]
                and all(type(p.get(f)) in (int, float) for f in ("bpp", "psnr"))):
            done[q] = p
    return done, ("\n" if text and not text.endswith("\n") else "")


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


def below_hull(points: list[dict], p: dict) -> float:
    """How far (dB) point p lies under the upper hull of points, at its rate (0 on the hull, or beyond its ends)."""
    top = upper_hull(points)
    for lo, hi in zip(top, top[1:]):
        if lo["bpp"] <= p["bpp"] <= hi["bpp"]:
            t = (p["bpp"] - lo["bpp"]) / max(hi["bpp"] - lo["bpp"], 1e-12)
            return max(0.0, lo["psnr"] + t * (hi["psnr"] - lo["psnr"]) - p["psnr"])
    return 0.0


def choose(points: list[dict], tolerance_db: float = 0.05, min_step: float = 0.08) -> tuple[int, tuple]:
    """Measured points -> (vq_qualities, refine_ladder) for ModelConfig. Points within tolerance_db of the upper
    hull count as on it; the VQ levels are kept up to the last such one; above its rate, the refined points on
    the hull, each at least min_step (relative) more bits than the one before, and better."""
    near = [p for p in points if below_hull(points, p) <= tolerance_db]
    vq = max([p["b"] for p in near if p["k"] == 0], default=1)
    last = next(p for p in points if p["k"] == 0 and p["b"] == vq)
    ladder = []
    for p in sorted((p for p in near if p["k"]), key=lambda p: (p["bpp"], -p["psnr"])):
        if p["bpp"] >= last["bpp"] * (1 + min_step) and p["psnr"] > last["psnr"]:
            ladder.append((p["k"], p["b"]))
            last = p
    return vq, tuple(ladder)
