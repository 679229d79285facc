# Frozen record, not maintained. It ran as benchmarks/probability_cap.py (first at commit 31bcf33); the record is
# experiments/probability-cap.md. Its paths (benchmarks/..., benchmarks/results/...) and its imports of other
# benchmarks/ scripts are as they were then: run it from that commit, not from here.
"""What it costs to cap each coded symbol's probability (the work bound of format version 2).

    python benchmarks/probability_cap.py [--data ../shared/data/train]

A decoder can only bound its work by the payload if every coded index costs at least some bits. The
format caps the prior's largest frequency in each table so that no symbol has a probability above
1 - 2^-k; then each index costs at least -log2(1 - 2^-k) bits. This measures the rate cost of several k
on 48 fixed 256x256 training crops (not Kodak), at one full stage and at all stages of the default model:
the ideal code length with and without the cap.
"""
from __future__ import annotations

import argparse
import json


def capped(freqs, k: int):
    """(N, K) integer frequencies -> the same with the largest capped at (sum of the rest) * (2^k - 1)."""
    import numpy as np

    f = freqs.copy()
    top = f.argmax(1)
    rows = np.arange(len(f))
    rest = f.sum(1) - f[rows, top]
    f[rows, top] = np.minimum(f[rows, top], rest * (2 ** k - 1))
    return f


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/train")
    ap.add_argument("--out", default="benchmarks/results/probability_cap.json")
    args = ap.parse_args()

    import numpy as np
    import torch

    from compare_autoencoders import training_crops
    from vqcodec.codec import load_codec
    from vqcodec.prior import build_context, known_before, stage_masks

    codec = load_codec()
    prior, cfg = codec.prior, codec.cfg
    crops = training_crops(args.data)
    ks = (3, 4, 5, 6, 8)
    bits = {"none": np.zeros(cfg.num_stages), **{k: np.zeros(cfg.num_stages) for k in ks}}
    count = 0
    for i in range(0, len(crops), 8):
        idx = codec.autoencoder.encode_indices(crops[i:i + 8], cfg.num_stages)   # (B, h, w, S)
        for one in idx:
            h, w, s_all = one.shape
            schedule = stage_masks(cfg, h, w)                      # per stage: (P_s, h, w)
            prev = torch.zeros(cfg.latent_dim, h, w, dtype=torch.int64)
            count += h * w
            for s in range(s_all):
                cur = prior.input_vectors(s, one[..., s])
                masks = schedule[s]
                known = known_before(masks)[:, None].long()
                for p in range(masks.shape[0]):
                    ctx = build_context(prior.to_input(prev), prior.to_input(cur), known[p])
                    f = prior.frequencies(s, ctx, masks[p])
                    sym = one[..., s][masks[p]].numpy()
                    for key in bits:
                        g = f if key == "none" else capped(f, key)
                        bits[key][s] += -np.log2(g[np.arange(len(sym)), sym] / g.sum(1)).sum()
                prev = prev + cur
    report = {"crops": len(crops), "positions": count, "min_bits_per_index": {k: -np.log2(1 - 2.0 ** -k) for k in ks},
              "bits_per_index_stage0": {str(k): v[0] / count for k, v in bits.items()},
              "bits_per_index_all_stages": {str(k): v.sum() / count / cfg.num_stages for k, v in bits.items()},
              "increase_stage0_percent": {str(k): 100 * (bits[k][0] / bits["none"][0] - 1) for k in ks},
              "increase_all_percent": {str(k): 100 * (bits[k].sum() / bits["none"].sum() - 1) for k in ks}}
    print(json.dumps(report, indent=1))
    with open(args.out, "w") as fh:
        json.dump(report, fh, indent=1)


if __name__ == "__main__":
    main()
