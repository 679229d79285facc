# Frozen record, not maintained. It ran as benchmarks/prior_context.py (first at commit 2152108); the record is
# experiments/prior-context.md, experiments/stage0-prior.md and experiments/prior-width.md. Its paths (benchmarks/..., benchmarks/results/...) and its imports of other
# benchmarks/ scripts are as they were then: run it from that commit, not from here.
"""Prior contexts compared at equal steps on a trained model's indices (training crops, not Kodak).

    python benchmarks/prior_context.py --model vqf8-v3 --arms k3p4,k5p4,k5p6,k3p4+s0k5p6 --steps 1500 [--crops 600]

Each arm is a float PriorNet (`vqcodec.prior`) with a k x k context (`prior_kernel`) and a decoding
schedule of P passes (`prior_passes`: 4 = the 2x2 schedule, 6 = a 4x4 lattice first); "+s0k5p6" gives stage 0
its own (`stage0_prior_kernel`, `stage0_prior_passes`), and a suffix "h128" another width (`prior_hidden`). Trained the way
`vqcodec train` trains the prior's float phase (Adam, lr 2e-3 cosine, batch 16 of 16x16 index grids) on
the indices of random 256x256 training crops under the model's autoencoder, then scored on held-out crops
(1/20): cross-entropy in bits per index, per stage and per pass. One thread per arm.
Writes benchmarks/results/prior_context.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path


def score(prior, codebooks, indices):
    """Held-out cross-entropy: bits per index -> (per stage (S,), per pass (P,), all)."""
    import torch

    from vqcodec.prior import training_contexts

    p_count = max(prior.cfg.stage_prior(t)[1] for t in range(prior.cfg.num_stages))
    s_count = prior.cfg.num_stages
    bits, n = torch.zeros(p_count, s_count, dtype=torch.float64), torch.zeros(p_count, s_count, dtype=torch.float64)
    with torch.no_grad():
        for i in range(len(indices)):
            ctx, tgt, sel = training_contexts(prior, codebooks, indices[i:i + 1])   # B' = P_max
            logp = torch.log_softmax(prior(ctx), dim=2)
            nll = -logp.gather(2, tgt[:, :, None]).squeeze(2)                      # (P, S, h, w)
            bits += (nll * sel[:, :, 0]).sum((2, 3)).double() / math.log(2)
            n += sel.sum((2, 3, 4)).double()                                       # (P, S)
    per_stage = bits.sum(0) / n.sum(0)
    per_pass = bits.sum(1) / n.sum(1)                  # pooled over the stages that have the pass
    return per_stage.tolist(), per_pass.tolist(), float(bits.sum() / n.sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="shipped model name or folder (default: the default model)")
    ap.add_argument("--arms", default="k3p4,k5p4,k5p6")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--crops", type=int, default=600)
    ap.add_argument("--data", default="../shared/data/train")
    ap.add_argument("--out", default="benchmarks/results/prior_context.json")
    args = ap.parse_args()

    import torch

    from vqcodec.codec import load_codec
    from vqcodec.prior import PriorNet, training_contexts
    from vqcodec.train import choose_input_scale, collect_indices, cosine_lr, load_images, random_subgrids

    torch.set_num_threads(1)
    ae = load_codec(args.model).autoencoder
    indices = collect_indices(ae, load_images(args.data, 256), args.crops)     # (N, 32, 32, S)
    held = max(1, len(indices) // 20)
    val, train = indices[:held], indices[held:]
    codebooks = [vq.codebook.detach() for vq in ae.rvq.stages]
    scale = choose_input_scale(codebooks, train[:64])
    rows = []
    for arm in args.arms.split(","):
        spec, _, width = arm.partition("h")                     # ...h128: prior_hidden 128 (default: the model's)
        base, _, first = spec.partition("+s0")                   # e.g. k3p4, or k3p4+s0k5p6: stage 0's own
        kernel, passes = int(base[1]), int(base[3:])
        hidden = int(width) if width else ae.cfg.prior_hidden
        k0, p0 = (int(first[1]), int(first[3:])) if first else (0, 0)
        cfg = dataclasses.replace(ae.cfg, prior_kernel=kernel, prior_passes=passes, stage0_prior_kernel=k0,
                                  stage0_prior_passes=p0, prior_hidden=hidden)
        torch.manual_seed(0)
        prior = PriorNet(cfg, scale)
        prior.quantize = False
        opt = torch.optim.Adam(prior.parameters(), lr=2e-3)
        gen = torch.Generator().manual_seed(0)
        t0 = time.time()
        for step in range(args.steps):
            for g in opt.param_groups:
                g["lr"] = cosine_lr(step, args.steps, 2e-3, warmup=50)
            pick = torch.randint(0, len(train), (16,), generator=gen)
            grids = random_subgrids(train[pick], 16, gen)
            pass_index = torch.stack([torch.randint(0, cfg.stage_prior(t)[1], (16,), generator=gen)
                                      for t in range(cfg.num_stages)], 1)              # (16, S)
            ctx, tgt, sel = training_contexts(prior, codebooks, grids, pass_index)
            nll = -torch.log_softmax(prior(ctx), dim=2).gather(2, tgt[:, :, None]).squeeze(2)
            loss = (nll * sel[:, :, 0]).sum() / sel.sum() / math.log(2)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        per_stage, per_pass, total = score(prior, codebooks, val)
        row = {"arm": arm, "prior_hidden": hidden, "prior_kernel": kernel, "prior_passes": passes, "stage0_prior_kernel": k0,
               "stage0_prior_passes": p0, "steps": args.steps,
               "train_seconds": round(time.time() - t0), "bits_per_index": round(total, 4),
               "per_stage": [round(b, 3) for b in per_stage], "per_pass": [round(b, 3) for b in per_pass]}
        print(json.dumps(row), flush=True)
        rows.append(row)
    Path(args.out).write_text(json.dumps({"command": "python benchmarks/prior_context.py " + " ".join(sys.argv[1:]),
                                          "model": ae.cfg.name, "held_out_crops": held, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
