# Frozen record, not maintained. It ran as benchmarks/rdo_quantization.py (first at commit 31632f3); the record is
# experiments/rdo-quantization.md. Its paths (benchmarks/..., benchmarks/results/...) and its imports of other
# benchmarks/ scripts are as they were then: run it from that commit, not from here.
"""Rate-constrained index choice (vqcodec/rdo.py) against nearest codes, on training crops (not Kodak).

    python benchmarks/rdo_quantization.py [--lams 0,0.5,1,2,4,8] [--crops 24]

For each lambda, the indices of all stages are chosen once (a stage's choice does not depend on later
stages), and every prefix of 1..S stages gives a point: bits per pixel (the prior's ideal code length of
the chosen indices; the coded payload is within 0.1 % of it) and mean PSNR of the crops. lambda = 0 is the
plain encoder. The BD-rate of the lower envelope of all points against the lambda = 0 curve says what
rate-constrained quantization saves at equal PSNR.
"""
from __future__ import annotations

import argparse
import json
import time


def rdo_indices(coder, codebooks, z, stages: int, lam: float):
    """z: (h, w, D) float latents -> indices (h, w, stages): each index minimises
    ||residual - codebook[k]||^2 + lam * bits(k), bits under the exact (capped) integer prior, in the order
    the decoder decodes (stage by stage, pass by pass), so every table is the one the decoder will see."""
    import numpy as np
    import torch

    from vqcodec.entropy import cap_probabilities

    prior = coder.prior
    h, w, _ = z.shape
    schedule = coder._schedule(h, w)                                          # per stage: (masks, known)
    residual = z.float().clone()                                              # (h, w, D)
    prev = torch.zeros(prior.cfg.latent_dim, h, w, dtype=torch.int64)
    out = torch.zeros(h, w, stages, dtype=torch.int64)
    with torch.no_grad():
        for s in range(stages):
            cb = codebooks[s].float()                                         # (K, D)
            current = torch.zeros(h, w, dtype=torch.int64)
            masks, known = schedule[s]
            for p in range(masks.shape[0]):
                freqs = cap_probabilities(coder._tables(s, prev, prior.input_vectors(s, current), known[p], masks[p]))
                bits = torch.from_numpy(np.log2(freqs.sum(1, keepdims=True)) - np.log2(freqs)).float()  # (N, K)
                r = residual[masks[p]]                                        # (N, D)
                dist = r.pow(2).sum(1, keepdim=True) - 2 * r @ cb.t() + cb.pow(2).sum(1)[None]
                current[masks[p]] = (dist + lam * bits).argmin(1)
            out[..., s] = current
            residual -= cb[current]
            prev = prev + prior.input_vectors(s, current)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/train")
    ap.add_argument("--lams", default="0,0.5,1,2,4,8")
    ap.add_argument("--crops", type=int, default=24)
    ap.add_argument("--model", default=None)
    ap.add_argument("--out", default="benchmarks/results/rdo_quantization.json")
    args = ap.parse_args()

    import torch

    from compare_autoencoders import training_crops
    from vqcodec.bench.bdrate import bd_rate
    from vqcodec.codec import load_codec

    codec = load_codec(args.model)
    ae, cfg = codec.autoencoder, codec.cfg
    crops = training_crops(args.data)[:args.crops]                          # (N, 3, 256, 256)
    pixels = crops.shape[0] * crops.shape[2] * crops.shape[3]
    codebooks = [vq.codebook for vq in ae.rvq.stages]
    with torch.no_grad():
        z = ae.encoder(crops).permute(0, 2, 3, 1)                             # (N, h, w, D)
    points = {}
    for lam in (float(x) for x in args.lams.split(",")):
        t = time.perf_counter()
        indices = torch.stack([rdo_indices(codec.coder, codebooks, zi, cfg.num_stages, lam) for zi in z])  # (N, h, w, S)
        rows = []  # each prefix of q stages: the coder's ideal code length, and the decoded PSNR
        for q in range(1, cfg.num_stages + 1):
            stats = {}
            for idx in indices:
                codec.coder.encode(idx[..., :q], stats=stats)
            with torch.no_grad():
                out = torch.cat([ae.decode_indices(indices[i:i + 8, ..., :q]) for i in range(0, len(indices), 8)])
            mse = (out - crops).pow(2).mean((1, 2, 3))
            psnr = float((-10 * torch.log10(mse)).mean())
            rows.append({"stages": q, "bpp": stats["ideal_bits"] / pixels, "psnr": psnr})
        points[lam] = rows
        print(lam, f"{time.perf_counter() - t:.0f}s", [(r["stages"], round(r["bpp"], 4), round(r["psnr"], 2)) for r in rows], flush=True)
    def bd(rows_a, rows_b):
        try:
            return bd_rate([r["bpp"] for r in rows_a], [r["psnr"] for r in rows_a],
                           [r["bpp"] for r in rows_b], [r["psnr"] for r in rows_b])
        except ValueError:  # no common PSNR range
            return None

    base = points[0.0]
    allp = sorted((r["bpp"], r["psnr"]) for rows in points.values() for r in rows)
    envelope, best = [], -1e9
    for bpp, psnr in allp:                     # lower-right envelope: each point better than every cheaper one
        if psnr > best:
            envelope.append((bpp, psnr))
            best = psnr
    report = {"crops": len(crops), "points": {str(k): v for k, v in points.items()}, "envelope": envelope,
              "bd_rate_envelope_vs_nearest_pct": bd(base, [{"bpp": b, "psnr": p} for b, p in envelope])}
    for lam, rows in points.items():
        if lam:
            report[f"bd_rate_lam_{lam}_vs_nearest_pct"] = bd(base, rows)
    print(json.dumps({k: v for k, v in report.items() if k.startswith("bd")}, indent=1))
    with open(args.out, "w") as fh:
        json.dump(report, fh, indent=1)


if __name__ == "__main__":
    main()
