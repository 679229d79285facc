# Frozen record, not maintained. It ran as benchmarks/klt_baseline.py (first at commit 31632f3); the record is
# experiments/where-bits-go.md. Its paths (benchmarks/..., benchmarks/results/...) and its imports of other
# benchmarks/ scripts are as they were then: run it from that commit, not from here.
"""A linear baseline: the KLT (PCA) of 8x8x3 pixel blocks, fitted on training photos (issue 8).

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python benchmarks/klt_baseline.py

Fit: 512 random 8x8-aligned blocks from each of 400 photos drawn (seed 0) from bsds500/train and
imagenet1k of --train-dir (photos with a side below 64 px skipped, grayscale expanded to RGB). A block
is 192 values (8 x 8 pixels x RGB, pixel values 0..255), the fitted mean removed; the KLT is the
eigenbasis of their covariance, strongest first.

Reported on two sets, never used to fit anything:
  * crops: 48 random 256x256 crops of 48 distinct bsds500/test photos (seed 7), not in the fit set;
  * kodak: the 24 Kodak images (reporting only).
(a) PSNR when keeping the first 16, 24, 32, 48, 64 coefficients, unquantized (all 192: lossless).
(b) A coded baseline: the first k coefficients (k = 16 .. 192) uniformly quantized with one global
    step (mid-tread, reconstruction at the bin centre), the rate from a memoryless Laplace model per
    coefficient whose scale (mean |c|) is fitted on the fit blocks (an ideal arithmetic-code length),
    and, for reference, from the empirical per-coefficient entropy of the set itself (an oracle: no
    table cost, the set's own statistics). (bpp, PSNR) for every (k, step) and the best of them.
PSNR is the mean of per-image PSNR on 8-bit RGB, the reconstruction rounded and clipped to 0..255;
bpp is the mean of per-image bits / pixels. Writes benchmarks/results/klt_baseline.json.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
B = 8                                   # block side
KEEPS = (16, 24, 32, 48, 64, 192)       # coefficients kept
STEPS = (2, 3, 4, 6, 8, 11, 16, 22, 32, 45, 64, 90, 128, 180, 256)  # global quantization steps (pixel units)
CLAIMS = {"psnr_kodak": {"32": 32.9, "48": 36.4, "64": 41.0}, "coded": {"bpp": 0.94, "psnr": 31.6}}


def load_rgb(path: Path) -> np.ndarray:
    """(H, W, 3) uint8; grayscale and palette images expanded to RGB."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def to_blocks(img: np.ndarray) -> np.ndarray:
    """(H, W, 3), H and W multiples of 8 -> (H/8 * W/8, 192) float64, row-major blocks, (y, x, c) inside."""
    h, w, _ = img.shape
    return (img.reshape(h // B, B, w // B, B, 3).transpose(0, 2, 1, 3, 4)
            .reshape(-1, B * B * 3).astype(np.float64))


def from_blocks(blocks: np.ndarray, h: int, w: int) -> np.ndarray:
    """Inverse of to_blocks -> (H, W, 3) float64."""
    return blocks.reshape(h // B, w // B, B, B, 3).transpose(0, 2, 1, 3, 4).reshape(h, w, 3)


def psnr(ref: np.ndarray, rec: np.ndarray) -> float:
    """8-bit PSNR; rec is rounded and clipped to 0..255 first."""
    rec = np.clip(np.round(rec), 0, 255)
    mse = np.mean((ref.astype(np.float64) - rec) ** 2)
    return float(10 * math.log10(255 ** 2 / mse)) if mse > 0 else float("inf")


# --- data --------------------------------------------------------------------------------------
def fit_blocks(train_dir: Path, photos: int = 400, per_photo: int = 512, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Random 8x8-aligned blocks of `photos` random photos of bsds500/train + imagenet1k -> (N, 192)."""
    pool = sorted((train_dir / "bsds500/train").glob("*.jpg")) + sorted((train_dir / "imagenet1k").glob("*.JPEG"))
    rng = np.random.default_rng(seed)
    chosen, out = [], []
    for i in rng.permutation(len(pool)):
        img = load_rgb(pool[i])
        if min(img.shape[:2]) < 64:                                  # skip tiny images
            continue
        h, w = (img.shape[0] // B) * B, (img.shape[1] // B) * B
        blocks = to_blocks(img[:h, :w])
        out.append(blocks[rng.choice(len(blocks), size=min(per_photo, len(blocks)), replace=False)])
        chosen.append(str(pool[i].relative_to(train_dir)))
        if len(chosen) == photos:
            break
    return np.concatenate(out), chosen


def heldout_crops(train_dir: Path, n: int = 48, size: int = 256, seed: int = 7) -> tuple[list[np.ndarray], list[str]]:
    """n random size x size crops of n distinct bsds500/test photos (fixed seed) -> uint8 (size, size, 3) each."""
    paths = sorted((train_dir / "bsds500/test").glob("*.jpg"))
    rng = np.random.default_rng(seed)
    crops, names = [], []
    for i in sorted(rng.choice(len(paths), size=n, replace=False)):
        img = load_rgb(paths[i])
        y = int(rng.integers(img.shape[0] - size + 1))
        x = int(rng.integers(img.shape[1] - size + 1))
        crops.append(np.ascontiguousarray(img[y:y + size, x:x + size]))
        names.append(f"{paths[i].name}@{y},{x}")
    return crops, names


def kodak_images(kodak_dir: Path) -> tuple[list[np.ndarray], list[str]]:
    paths = sorted(kodak_dir.glob("kodim*.png"))
    return [load_rgb(p) for p in paths], [p.name for p in paths]


# --- the transform and the coded baseline ------------------------------------------------------
def fit_klt(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> (mean (192,), basis (192, 192) columns strongest first, eigenvalues (192,))."""
    mean = blocks.mean(0)
    centred = blocks - mean
    cov = centred.T @ centred / len(blocks)
    vals, vecs = np.linalg.eigh(cov)
    order = np.argsort(vals)[::-1]
    return mean, vecs[:, order], vals[order]


def laplace_bits(q: np.ndarray, step: float, scale: np.ndarray) -> np.ndarray:
    """Code length (bits) of integer symbols q (N, k) under a zero-mean Laplace of scale (k,) per column,
    integrated over the bin [(q - 1/2) step, (q + 1/2) step]."""
    r = step / scale                                            # (k,)
    log_p0 = np.log(-np.expm1(-r / 2))                          # P(0) = 1 - exp(-r/2)
    log_pq = math.log(0.5) - (np.abs(q) - 0.5) * r + np.log(-np.expm1(-r))  # P(q), q != 0
    return -np.where(q == 0, log_p0, log_pq) / math.log(2)


def evaluate_set(images: list[np.ndarray], mean, basis, laplace_scale) -> dict:
    """Unquantized PSNR per number of kept coefficients, and every (keep, step) coded point."""
    coeffs = [(to_blocks(im) - mean) @ basis for im in images]   # per image (n_blocks, 192)
    pixels = [im.shape[0] * im.shape[1] for im in images]

    unquantized = {}
    for k in KEEPS[:-1]:                                          # all 192 reconstruct exactly (PSNR infinite)
        db = [psnr(im, from_blocks(c[:, :k] @ basis[:, :k].T + mean, *im.shape[:2])) for im, c in zip(images, coeffs)]
        unquantized[str(k)] = float(np.mean(db))

    points = []
    for k in KEEPS:
        for step in STEPS:
            qs = [np.round(c[:, :k] / step) for c in coeffs]
            # empirical per-coefficient probabilities, pooled over the whole set (oracle reference)
            allq = np.concatenate(qs).astype(np.int64)
            offset = -allq.min(0)
            counts = [np.bincount(allq[:, j] + offset[j]) for j in range(k)]
            log2p = [np.log2(cnt / len(allq), where=cnt > 0, out=np.zeros(len(cnt))) for cnt in counts]
            db, bpp_lap, bpp_emp = [], [], []
            for im, q, n in zip(images, qs, pixels):
                rec = (q * step) @ basis[:, :k].T + mean
                db.append(psnr(im, from_blocks(rec, *im.shape[:2])))
                bpp_lap.append(float(laplace_bits(q, step, laplace_scale[:k]).sum()) / n)
                qi = q.astype(np.int64) + offset
                bpp_emp.append(-sum(float(log2p[j][qi[:, j]].sum()) for j in range(k)) / n)
            points.append({"keep": k, "step": step, "psnr": float(np.mean(db)),
                           "bpp_laplace": float(np.mean(bpp_lap)), "bpp_empirical": float(np.mean(bpp_emp))})
    return {"images": len(images), "psnr_unquantized": unquantized, "coded_points": points,
            "best_laplace": pareto(points, "bpp_laplace"), "best_empirical": pareto(points, "bpp_empirical")}


def pareto(points: list[dict], rate_key: str) -> list[dict]:
    """The points no other point beats in both rate and PSNR, by rising rate."""
    pts = sorted(points, key=lambda p: (p[rate_key], -p["psnr"]))
    front, best = [], -np.inf
    for p in pts:
        if p["psnr"] > best:
            front.append({"keep": p["keep"], "step": p["step"], "bpp": p[rate_key], "psnr": p["psnr"]})
            best = p["psnr"]
    return front


def interp(front: list[dict], x_key: str, y_key: str, x: float) -> float | None:
    """Linear interpolation on the front (None outside its range)."""
    xs, ys = [p[x_key] for p in front], [p[y_key] for p in front]
    return float(np.interp(x, xs, ys)) if xs[0] <= x <= xs[-1] else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train-dir", default="../shared/data/train", type=Path)
    ap.add_argument("--kodak", default="benchmarks/kodak", type=Path)
    ap.add_argument("--photos", type=int, default=400, help="photos the KLT is fitted on")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/klt_baseline.json"))
    args = ap.parse_args()
    t0 = time.perf_counter()

    fit, fit_names = fit_blocks(args.train_dir, args.photos)
    mean, basis, eigvals = fit_klt(fit)
    laplace_scale = np.abs((fit - mean) @ basis).mean(0)          # ML Laplace scale per coefficient
    energy = np.cumsum(eigvals) / eigvals.sum()
    print(f"fitted on {len(fit)} blocks of {len(fit_names)} photos; variance kept by "
          + ", ".join(f"{k}: {100 * energy[k - 1]:.2f} %" for k in KEEPS), flush=True)

    sets = {"crops": heldout_crops(args.train_dir), "kodak": kodak_images(args.kodak)}
    results = {}
    for name, (images, names) in sets.items():
        r = evaluate_set(images, mean, basis, laplace_scale)
        r["names"] = names
        results[name] = r
        print(f"\n{name} ({len(images)} images) PSNR unquantized, first k coefficients:",
              {k: round(v, 2) for k, v in r["psnr_unquantized"].items()})
        for key in ("best_laplace", "best_empirical"):
            print(f"  {key}: " + ", ".join(f"k{p['keep']}/s{p['step']}: {p['bpp']:.3f} bpp {p['psnr']:.2f} dB"
                                          for p in r[key]), flush=True)

    kodak = results["kodak"]
    check = {
        "psnr_unquantized": {k: {"claimed": v, "measured": kodak["psnr_unquantized"][k]}
                             for k, v in CLAIMS["psnr_kodak"].items()},
        "coded": {"claimed": CLAIMS["coded"],
                  "measured_psnr_at_claimed_bpp_laplace": interp(kodak["best_laplace"], "bpp", "psnr", CLAIMS["coded"]["bpp"]),
                  "measured_bpp_at_claimed_psnr_laplace": interp(kodak["best_laplace"], "psnr", "bpp", CLAIMS["coded"]["psnr"]),
                  "measured_psnr_at_claimed_bpp_empirical": interp(kodak["best_empirical"], "bpp", "psnr", CLAIMS["coded"]["bpp"]),
                  "measured_bpp_at_claimed_psnr_empirical": interp(kodak["best_empirical"], "psnr", "bpp", CLAIMS["coded"]["psnr"])},
    }
    print("\nissue 8 claims against Kodak:", json.dumps(check, indent=1))
    out = {
        "description": __doc__.strip().splitlines()[0],
        "fit": {"photos": len(fit_names), "blocks": len(fit), "seed": 0, "sources": ["bsds500/train", "imagenet1k"],
                "variance_kept": {str(k): float(energy[k - 1]) for k in KEEPS}, "photo_names": fit_names},
        "quantizer": "uniform mid-tread, one global step, first k coefficients, reconstruction at bin centres",
        "rates": {"bpp_laplace": "memoryless Laplace per coefficient, scale = mean |c| on the fit blocks",
                  "bpp_empirical": "empirical per-coefficient entropy pooled over the evaluated set (oracle)"},
        "keeps": list(KEEPS), "steps": list(STEPS),
        "crops": results["crops"], "kodak": results["kodak"], "claims_check": check,
        "env": {"numpy": np.__version__, "threads": os.environ.get("OMP_NUM_THREADS")},
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out} in {out['wall_s']} s")


if __name__ == "__main__":
    main()
