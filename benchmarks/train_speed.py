"""Training speed per phase on this machine: one thread, fp32 against bf16 autocast against bf16 with
torch.compile, median step time after warm-up steps, and megapixels per second.

    python benchmarks/train_speed.py --json benchmarks/results/train_speed.json

Phases timed: the autoencoder (vqf8-v13's architecture, batch 8 of 128x128 crops, all VQ levels), the same
with refinement (refine_dim 64, 8 levels: the bake-off's design), the decoder fine-tune step (batch 16 of
128x128: decoder, gains and post-filter on fixed indices) and the prior step (batch 16 of 16x16 index grids).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def median_step(step, warmup: int, steps: int) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--modes", default="fp32,bf16,bf16+compile")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from vqcodec.autoencoder import VQAutoencoder
    from vqcodec.config import ModelConfig
    from vqcodec.prior import PriorNet, training_contexts
    from vqcodec.train import sample_levels

    base = json.loads((ROOT / "models" / "vqf8-v13" / "config.json").read_text())
    configs = {"autoencoder": ModelConfig.from_dict(base),
               "autoencoder+refinement": ModelConfig.from_dict({**base, "refine_levels": 8, "refine_dim": 64,
                                                                "refine_hidden": 96})}
    out: dict = {"threads": 1, "torch": torch.__version__, "phases": {}}
    gen = torch.Generator().manual_seed(0)
    for name, cfg in configs.items():
        model = VQAutoencoder(cfg).train()
        opt = torch.optim.Adam(model.parameters(), 1e-5)
        x = torch.rand(8, 3, 128, 128)
        row = {}
        for mode in args.modes.split(","):
            net = torch.compile(model) if "compile" in mode else model

            def step():
                levels, bases = sample_levels(8, cfg, 0.5, gen)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled="bf16" in mode):
                    recon, commit, _, bits = net(x, levels, bases)
                loss = (recon.float() - x).pow(2).mean() + 0.25 * commit + 1e-4 * bits.mean() / 128 ** 2
                opt.zero_grad()
                loss.backward()
                opt.step()
            s = median_step(step, args.warmup + (4 if "compile" in mode else 0), args.steps)
            row[mode] = {"step_s": round(s, 4), "megapixels_per_s": round(8 * 128 * 128 / 1e6 / s, 4)}
            print(name, mode, row[mode], flush=True)
        out["phases"][name] = row

    cfg = configs["autoencoder"]
    model = VQAutoencoder(cfg).train()
    model.rvq.eval()
    opt = torch.optim.Adam(list(model.decoder.parameters()) + list(model.postfilter.parameters()), 1e-5)
    z = torch.randn(16, cfg.latent_dim, 16, 16)
    target = torch.rand(16, 3, 128, 128)
    row = {}
    for mode in [m for m in args.modes.split(",") if "compile" not in m]:
        def step():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled="bf16" in mode):
                out_ = model.decode(z, torch.randint(1, cfg.num_stages + 1, (16,)))
            loss = (out_.float() - target).pow(2).mean().log()
            opt.zero_grad()
            loss.backward()
            opt.step()
        s = median_step(step, args.warmup, args.steps)
        row[mode] = {"step_s": round(s, 4), "megapixels_per_s": round(16 * 128 * 128 / 1e6 / s, 4)}
        print("decoder", mode, row[mode], flush=True)
    out["phases"]["decoder"] = row

    prior = PriorNet(cfg)
    codebooks = [vq.codebook for vq in model.rvq.stages]
    opt = torch.optim.Adam(prior.parameters(), 1e-5)
    grids = torch.randint(0, cfg.codebook_size, (16, 16, 16, cfg.num_stages))
    row = {}
    for mode in [m for m in args.modes.split(",") if "compile" not in m]:
        def step():
            ctx, tgt, sel = training_contexts(prior, codebooks, grids)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled="bf16" in mode):
                logits = prior(ctx, None)
            logp = torch.log_softmax(logits.float(), dim=2)
            loss = -(logp.gather(2, tgt[:, :, None]).squeeze(2) * sel[:, :, 0]).sum() / sel.sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
        s = median_step(step, args.warmup, args.steps)
        row[mode] = {"step_s": round(s, 4)}
        print("prior", mode, row[mode], flush=True)
    out["phases"]["prior"] = row
    print(json.dumps(out, indent=1))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
