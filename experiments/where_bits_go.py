# Frozen record, not maintained. It ran as benchmarks/where_bits_go.py (first at commit 31632f3); the record is
# experiments/where-bits-go.md. Its paths (benchmarks/..., benchmarks/results/...) and its imports of other
# benchmarks/ scripts are as they were then: run it from that commit, not from here.
"""Where the dB and the bits go in the shipped model: transform, each residual stage, the prior (issue 8).

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python benchmarks/where_bits_go.py [--model NAME]

On the 48 fixed 256x256 bsds500/test crops of klt_baseline.py (held out from the KLT's fit, but part of
the model's training data: vqcodec trains on all of --train-dir) and on the 24 Kodak images (reporting only):
(a) the transform's own PSNR, no quantization: decoder(encoder(x));
(b) the PSNR after the first q residual stages, q = 1..S (decode_indices of the first q stages);
(c) each stage's bits per index under the exact integer prior: the ideal code length -log2(f / sum f)
    of every index, with the frequencies f from IntegerPrior.frequencies in the coding order of
    IndexCoder.encode (stage by stage; within a stage, the passes of the 2x2 schedule, each pass's
    context holding the stages below and this stage's earlier passes). The probability cap of the
    range coder is not applied, so this is the prior's own cross-entropy; also per pass;
(d) the fraction of the raw capacity, log2(K) = 9 bits per index, each stage spends; and, for
    reference, the stage's context-free entropy (its code histogram pooled over the set).
PSNR is the mean of per-image PSNR on 8-bit RGB (the decoder output rounded to 0..255). One index
codes 8x8 pixels, so bpp = bits per index / 64. Writes benchmarks/results/where_bits_go.json.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from klt_baseline import heldout_crops, kodak_images  # noqa: E402  (the same image sets)

from vqcodec.codec import load_codec  # noqa: E402
from vqcodec.prior import build_context, known_before, stage_masks  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def psnr(ref: np.ndarray, out: torch.Tensor) -> float:
    """ref (H, W, 3) uint8; out (1, 3, H, W) in [0, 1] -> PSNR of the 8-bit rounded output."""
    rec = (out[0].clamp(0, 1) * 255).round().permute(1, 2, 0).double().numpy()
    mse = np.mean((ref.astype(np.float64) - rec) ** 2)
    return float(10 * math.log10(255 ** 2 / mse))


def index_bits(prior, indices: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """indices (h, w, S) -> (ideal code length in bits (S, passes), indices per pass (S, passes)):
    the loop of IndexCoder.encode."""
    h, w, s_total = indices.shape
    schedule = stage_masks(prior.cfg, h, w)[:s_total]                   # per stage: (P_s, h, w)
    bits = np.zeros((s_total, max(len(m) for m in schedule)))           # a stage's missing passes: 0 bits
    counts = np.zeros_like(bits)
    prev = torch.zeros(prior.cfg.latent_dim, h, w, dtype=torch.int64)
    for s in range(s_total):
        cur = prior.input_vectors(s, indices[..., s])
        masks = schedule[s]
        known = known_before(masks)[:, None].long()                      # (P, 1, h, w) decoded before pass p
        for p in range(masks.shape[0]):
            ctx = build_context(prior.to_input(prev), prior.to_input(cur), known[p])
            freqs = prior.frequencies(s, ctx, masks[p])                  # (N, K) integers in float64
            symbols = indices[..., s][masks[p]].numpy()
            prob = freqs[np.arange(len(symbols)), symbols] / freqs.sum(1)
            bits[s, p] = float(-np.log2(prob).sum())
            counts[s, p] = len(symbols)
        prev = prev + cur
    return bits, counts


def measure(codec, images: list[np.ndarray]) -> dict:
    ae, prior = codec.autoencoder, codec.prior
    f, s_total, k = codec.cfg.downsampling, codec.cfg.num_stages, codec.cfg.codebook_size
    db_unq, db_stages, bits, n_indices = [], [], 0.0, 0
    per_pass = 0.0
    bits_per_image = []
    hist = np.zeros((s_total, k))
    for img in images:
        assert img.shape[0] % f == 0 and img.shape[1] % f == 0, "image sides must be multiples of 8"
        x = torch.from_numpy(img.copy()).permute(2, 0, 1)[None].float() / 255
        with torch.no_grad():
            z = ae.encoder(x)
            db_unq.append(psnr(img, ae.decode(z)))
            b, d, h, w = z.shape
            idx = ae.rvq.encode(z.permute(0, 2, 3, 1).reshape(-1, d), s_total).reshape(h, w, s_total)
            db_stages.append([psnr(img, ae.decode_indices(idx[None, ..., :q])) for q in range(1, s_total + 1)])
        image_bits, counts = index_bits(prior, idx)
        bits += image_bits
        per_pass += counts
        bits_per_image.append(image_bits.sum(1) / (h * w))
        n_indices += h * w
        for s in range(s_total):
            hist[s] += np.bincount(idx[..., s].flatten().numpy(), minlength=k)
    bpi = bits.sum(1) / n_indices                                        # (S,) bits per index, pooled
    p = hist / hist.sum(1, keepdims=True)
    marginal = -(p * np.log2(np.where(p > 0, p, 1))).sum(1)
    psnr_q = np.mean(db_stages, 0)
    cum_bpp = np.cumsum(np.mean(bits_per_image, 0)) / (f * f)           # mean of per-image bpp, ideal code
    stages = []
    for s in range(s_total):
        gain = psnr_q[s] - (psnr_q[s - 1] if s else float("nan"))
        stages.append({
            "stage": s + 1, "psnr_after": float(psnr_q[s]), "psnr_gain_db": None if s == 0 else float(gain),
            "bits_per_index": float(bpi[s]), "bits_per_index_by_pass": (bits[s][per_pass[s] > 0] / per_pass[s][per_pass[s] > 0]).tolist(),
            "fraction_of_raw": float(bpi[s] / math.log2(k)), "bpp": float(bpi[s] / (f * f)),
            "cumulative_bpp": float(cum_bpp[s]),
            "db_per_bpp": None if s == 0 else float(gain / (bpi[s] / (f * f))),
            "context_free_entropy": float(marginal[s]), "codes_used": int((hist[s] > 0).sum()),
        })
    return {"images": len(images), "indices": n_indices, "psnr_unquantized": float(np.mean(db_unq)),
            "stages": stages, "bits_per_index_all_stages": float(bpi.sum())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train-dir", default="../shared/data/train", type=Path)
    ap.add_argument("--kodak", default="benchmarks/kodak", type=Path)
    ap.add_argument("--model", default=None, help="shipped model name or folder (default: the shipped default)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/where_bits_go.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()

    codec = load_codec(args.model)
    sets = {"crops": heldout_crops(args.train_dir)[0], "kodak": kodak_images(args.kodak)[0]}
    results = {}
    for name, images in sets.items():
        r = results[name] = measure(codec, images)
        print(f"\n{name} ({r['images']} images): unquantized {r['psnr_unquantized']:.2f} dB, "
              f"all stages {r['bits_per_index_all_stages']:.3f} bits per latent")
        print("| stage | PSNR after (dB) | gain (dB) | bits/index | of 9 bits | context-free | cum. bpp | dB per bpp |")
        print("|---|---|---|---|---|---|---|---|")
        for st in r["stages"]:
            gain = "" if st["psnr_gain_db"] is None else f"{st['psnr_gain_db']:+.2f}"
            slope = "" if st["db_per_bpp"] is None else f"{st['db_per_bpp']:.1f}"
            print(f"| {st['stage']} | {st['psnr_after']:.2f} | {gain} | {st['bits_per_index']:.3f} | "
                  f"{100 * st['fraction_of_raw']:.1f} % | {st['context_free_entropy']:.3f} | "
                  f"{st['cumulative_bpp']:.4f} | {slope} |", flush=True)
    out = {
        "description": __doc__.strip().splitlines()[0],
        "model": codec.model_name, "model_hash": codec.model_hash.hex(),
        "bits": "ideal code length under the integer prior's tables, -log2(f / sum f), no probability cap",
        "crops_note": "48 fixed 256x256 crops of bsds500/test (seed 7): held out from the KLT fit, "
                      "but in the model's training data",
        "crops": results["crops"], "kodak": results["kodak"],
        "env": {"torch": torch.__version__, "torch_threads": torch.get_num_threads()},
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out} in {out['wall_s']} s")


if __name__ == "__main__":
    main()
