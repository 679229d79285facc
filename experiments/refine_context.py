"""Issue 30: does a spatial context (checkerboard, He et al. 2021) save refinement bits over the hyperprior alone?

The refinement's entropy model predicts each refined value's mean and scale from the VQ latent only. Here the
autoencoder is frozen (its values, steps and VQ indices fixed) and only entropy models are trained, on cached
latents of training crops, for the same number of steps:

- `hyper`: the run's own network, trained on (the fair baseline: extra training alone also gains);
- `checker`: the same network for the anchor half (positions with (row + column) even), and for the other half the
  same plus a context branch over the anchors' decoded values (zero-initialised, so it starts as `hyper`).

Bits are measured on the 64 held-out crops with rounding (ideal code length, float model) at the ladder's
points, and the reconstruction is the same for both up to the mean (value = mean + q x step).

    python experiments/refine_context.py runs/v4/r64/autoencoder/autoencoder.ckpt --json experiments/results/refine_context.json
"""
from __future__ import annotations

import argparse
import copy
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from vqcodec.holdout import split, validation_crops
from vqcodec.refine import LOG_SCALE_MAX, LOG_SCALE_MIN, ScalarRefinement, gaussian_bits
from vqcodec.train import load_autoencoder, random_crops

LADDER = [(3, 4), (4, 4), (5, 5), (6, 5), (7, 6), (8, 6)]


def anchors(h: int, w: int) -> torch.Tensor:  # (1, 1, h, w) bool: the checkerboard half coded first
    return ((torch.arange(h)[:, None] + torch.arange(w)[None]) % 2 == 0)[None, None]


class CheckerRefinement(nn.Module):
    """The hyperprior network for anchors; for non-anchors, plus a branch over the anchors' decoded values."""

    def __init__(self, base: ScalarRefinement, hidden: int, kernel: int = 5):
        super().__init__()
        self.base = base
        dim = base.dim
        mid = base.net[2].out_channels
        self.ctx = nn.Sequential(nn.Conv2d(dim, hidden, kernel, padding=kernel // 2), nn.ReLU(inplace=True))
        self.fuse = nn.Sequential(nn.Conv2d(mid + hidden, hidden, 1), nn.ReLU(inplace=True),
                                  nn.Conv2d(hidden, 2 * dim, 1))
        nn.init.zeros_(self.fuse[-1].weight)
        nn.init.zeros_(self.fuse[-1].bias)

    def forward(self, r, zq, level, base, noise):
        b = self.base
        step = b.step(level)
        feat = b.net[:4](zq)
        mean, log_scale = b.net[4](feat).float().chunk(2, 1)
        log_scale = log_scale + b.base_log_scale[base.long() - 1][:, :, None, None]
        a = anchors(*r.shape[2:]).to(r.device)
        q_a = quantize((r.float() - mean) / step, noise)
        r_a = (mean + q_a * step) * a                                   # anchors' decoded values, 0 elsewhere
        dm, ds = self.fuse(torch.cat([feat, self.ctx(r_a)], 1)).float().chunk(2, 1)
        mean2, log_scale2 = mean + dm, log_scale + ds
        q_n = quantize((r.float() - mean2) / step, noise)
        q = torch.where(a, q_a, q_n)
        mean_all = torch.where(a, mean, mean2)
        ls_all = torch.where(a, log_scale, log_scale2)
        scale = (ls_all - step.log()).clamp(LOG_SCALE_MIN, LOG_SCALE_MAX).exp()
        bits = gaussian_bits(q, scale)
        return mean_all + q * step, bits.sum((1, 2, 3)), (bits * a).sum((1, 2, 3))


def quantize(u, noise):
    return u + torch.rand_like(u) - 0.5 if noise else torch.round(u)


def cache(model, crops: torch.Tensor, batch: int = 32):
    """crops (N, 3, H, W) -> (z_all (N, D + R, h, w), greedy indices (N, h, w, S))."""
    cfg = model.cfg
    zs, ids = [], []
    with torch.no_grad():
        for i in range(0, len(crops), batch):
            z_all = model.encoder(crops[i:i + batch]).float()
            z = z_all[:, :cfg.latent_dim]
            idx = model.rvq.encode(model._flatten(z), cfg.num_stages).reshape(len(z), *z.shape[2:], cfg.num_stages)
            zs.append(z_all)
            ids.append(idx.short())
    return torch.cat(zs), torch.cat(ids)


def zq_of(model, idx: torch.Tensor, bases: torch.Tensor) -> torch.Tensor:
    """idx (B, h, w, S), bases (B,) -> VQ latent of bases[i] stages (B, D, h, w)."""
    out = 0
    for t in range(idx.shape[-1]):
        keep = (bases > t).float()[:, None, None, None]
        out = out + model.rvq.stages[t].codebook[idx[..., t].long()] * keep
    return out.permute(0, 3, 1, 2)


def run_head(head, model, z_all, idx, level, base, noise):
    d = model.cfg.latent_dim
    zq = zq_of(model, idx, base)
    r = torch.cat([z_all[:, :d] - zq, z_all[:, d:]], 1)
    out = head(r, zq, level, base, noise)
    return out[1]


def evaluate(head, model, z_all, idx, pixels) -> dict:
    res = {}
    with torch.no_grad():
        for k, b in LADDER:
            n = len(z_all)
            lv = torch.full((n,), k)
            bs = torch.full((n,), b)
            res[f"r{k}b{b}"] = round(float(run_head(head, model, z_all, idx, lv, bs, False).sum()) / pixels, 5)
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("--data", default="../shared/data/train")
    ap.add_argument("--crops", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--hidden", type=int, default=96)
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.manual_seed(0)
    model, state = load_autoencoder(args.checkpoint)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    train, held = split(args.data)
    t0 = time.time()
    rng = random.Random(1)
    crops = np.stack([c for c, _ in zip(random_crops(train, 128, rng), range(args.crops))])
    crops = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255
    z_tr, id_tr = cache(model, crops)
    val = validation_crops(held)
    z_va, id_va = cache(model, val)
    pixels = val.shape[0] * val.shape[2] * val.shape[3]
    print(f"cached {len(z_tr)} training and {len(z_va)} held-out latents in {time.time() - t0:.0f} s", flush=True)

    original = model.refine
    hyper = copy.deepcopy(original)
    checker = CheckerRefinement(copy.deepcopy(original), args.hidden)

    class Hyper(nn.Module):   # same call signature as CheckerRefinement
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, r, zq, level, base, noise):
            r_hat, bits = self.m(r, zq, level, base, noise)
            return r_hat, bits, bits

    heads = {"hyper": Hyper(hyper), "checker": checker}
    results = {"checkpoint": args.checkpoint, "step": state.get("step"), "crops": args.crops, "steps": args.steps,
               "batch": args.batch, "lr": args.lr, "hidden": args.hidden,
               "original": evaluate(Hyper(original), model, z_va, id_va, pixels), "curves": {}}
    print("original", results["original"], flush=True)
    for name, head in heads.items():
        params = [p for n, p in head.named_parameters() if not n.endswith("log_step")]
        for n, p in head.named_parameters():
            p.requires_grad_(not n.endswith("log_step"))
        opt = torch.optim.Adam(params, lr=args.lr)
        gen = torch.Generator().manual_seed(0)
        curve = []
        t0 = time.time()
        for step in range(1, args.steps + 1):
            i = torch.randint(0, len(z_tr), (args.batch,), generator=gen)
            lv = torch.randint(3, model.cfg.refine_levels + 1, (args.batch,), generator=gen)
            bs = torch.randint(3, model.cfg.num_stages - 1, (args.batch,), generator=gen)
            z, idx = z_tr[i], id_tr[i]
            if torch.rand(1, generator=gen) < 0.5:  # flips
                z, idx = z.flip(-1), idx.flip(-2)
            bits = run_head(head, model, z, idx, lv, bs, True)
            loss = bits.mean() / (128 * 128)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step % 500 == 0 or step == args.steps:
                head.eval()
                ev = evaluate(head, model, z_va, id_va, pixels)
                head.train()
                curve.append({"step": step, "wall_s": round(time.time() - t0), **ev})
                print(name, curve[-1], flush=True)
        results["curves"][name] = curve
    final = {n: results["curves"][n][-1] for n in heads}
    results["saving_vs_hyper_pct"] = {p: round(100 * (final["checker"][p] / final["hyper"][p] - 1), 2) for p, _ in
                                      [(f"r{k}b{b}", 0) for k, b in LADDER]}
    print("checker vs hyper (%):", results["saving_vs_hyper_pct"])
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
