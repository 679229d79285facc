# Frozen record, not maintained. It ran as benchmarks/quantizer_comparison.py (first at commit d40dbd4); the record is
# experiments/rvq-vs-fsq.md. Its paths (benchmarks/..., benchmarks/results/...) and its imports of other
# benchmarks/ scripts are as they were then: run it from that commit, not from here.
"""EMA residual VQ against residual FSQ, trained the same way at the same bits per latent.

Both arms share vqcodec's encoder and decoder, training loop, data and quantizer dropout; only the
quantizer differs:
  rvq: ResidualVQ, 2 stages x 512 EMA codes in D=32 (k-means init, dead-code restart)  -> 9 / 18 bits
  fsq: residual FSQ (Mentzer et al. 2023; residual stages as in vector-quantize-pytorch), a 1x1 projection
       D=32 -> 3, levels (8, 8, 8) per stage, stage 2 on the residual scaled by 1/7, projection back -> 9 / 18 bits
Evaluated on held-out training images (never Kodak: this chooses a design) at 1 and 2 stages: PSNR, codes
used, and the empirical entropy of each stage's indices (the rate a context-free coder would reach).

    python benchmarks/quantizer_comparison.py --steps 2000 --out benchmarks/results/quantizer_comparison.json
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn as nn

from vqcodec.autoencoder import Decoder, Encoder, VQAutoencoder
from vqcodec.config import ModelConfig
from vqcodec.data import CropSampler
from vqcodec.train import cosine_lr, load_images, sample_stage_counts


class ResidualFSQ(nn.Module):
    """Finite scalar quantization of a low-dimensional projection, in residual stages."""

    def __init__(self, dim: int, levels: tuple[int, ...], num_stages: int):
        super().__init__()
        self.register_buffer("levels", torch.tensor(levels, dtype=torch.float32))
        self.project_in, self.project_out = nn.Linear(dim, len(levels)), nn.Linear(len(levels), dim)
        self.num_stages = num_stages
        self.stage_scales = [float(max(levels) - 1) ** -s for s in range(num_stages)]

    def bound(self, z):  # squash to the level range; even level counts are offset by half a step
        half = (self.levels - 1) * (1 + 1e-3) / 2
        offset = torch.where(self.levels % 2 == 0, 0.5, 0.0)
        shift = torch.atanh(offset / half)
        return torch.tanh(z + shift) * half - offset

    def quantize(self, z):  # (N, d) -> (codes in [-1, 1] (N, d), indices (N,))
        b = self.bound(z)
        r = b + (b.round() - b).detach()  # straight-through rounding
        half_width = self.levels // 2
        digits = (r.detach() + half_width).long()  # 0..L-1 per dimension
        basis = torch.cumprod(torch.cat([torch.ones(1), self.levels[:-1]]), 0).long()
        return r / half_width, (digits * basis).sum(1)

    def forward(self, z, stages_per_sample):  # z (N, D), stages (N,) -> (quantized (N, D), indices (N, S))
        residual, total, indices = self.project_in(z), 0, []
        for s, scale in enumerate(self.stage_scales):
            q, idx = self.quantize(residual / scale)
            q = q * scale
            residual = residual - q.detach()
            total = total + q * (s < stages_per_sample)[:, None].to(q.dtype)
            indices.append(idx)
        return self.project_out(total), torch.stack(indices, 1)


class FSQAutoencoder(nn.Module):
    def __init__(self, cfg: ModelConfig, levels: tuple[int, ...]):
        super().__init__()
        self.encoder, self.decoder = Encoder(cfg), Decoder(cfg)
        self.fsq = ResidualFSQ(cfg.latent_dim, levels, cfg.num_stages)

    def forward(self, x, stages_per_sample):
        z = self.encoder(x)
        b, d, h, w = z.shape
        quantized, indices = self.fsq(VQAutoencoder._flatten(z), stages_per_sample.repeat_interleave(h * w))
        recon = self.decoder(VQAutoencoder._unflatten(quantized, b, h, w))
        return recon, torch.zeros(()), indices.reshape(b, h, w, -1)


def train_arm(model, images, steps, batch_size, crop, lr, num_stages, seed=0):
    sampler, gen = CropSampler(images, crop, seed=seed), torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, steps, lr)
        x = sampler.batch(batch_size)
        recon, commit, _, _ = model(x, sample_stage_counts(batch_size, num_stages, gen))
        loss = (recon - x).pow(2).mean() + 0.25 * commit
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if isinstance(model, VQAutoencoder) and step % 100 == 99:
            with torch.no_grad():
                model.rvq.restart_dead_codes(model._flatten(model.encoder(x)))
        if step % 250 == 249:
            print(f"  step {step + 1} loss {loss.item():.5f}", flush=True)


@torch.no_grad()
def evaluate(model, images, crop, num_stages, codebook_size, batches=25, batch_size=16):
    model.eval()
    sampler = CropSampler(images, crop, seed=12345)
    out = {}
    for q in range(1, num_stages + 1):
        sse, n, all_idx = 0.0, 0, []
        sampler.rng.seed(12345)
        for _ in range(batches):
            x = sampler.batch(batch_size)
            recon, _, idx, _ = model(x, torch.full((batch_size,), q))
            sse += float((recon.clamp(0, 1) - x).pow(2).sum())
            n += x.numel()
            all_idx.append(idx.reshape(-1, idx.shape[-1]))
        idx = torch.cat(all_idx)
        entropies, used = [], []
        for s in range(q):
            p = torch.bincount(idx[:, s], minlength=codebook_size).double() / len(idx)
            entropies.append(float(-(p[p > 0] * p[p > 0].log2()).sum()))
            used.append(int((p > 0).sum()))
        out[str(q)] = {"psnr": -10 * math.log10(sse / n), "bits_per_latent": q * math.log2(codebook_size),
                       "index_entropy_bits": sum(entropies), "codes_used": used}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data/train")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--crop", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/results/quantizer_comparison.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    images = load_images(args.data, args.crop)
    held_out, train = images[::10], [im for i, im in enumerate(images) if i % 10]
    cfg = ModelConfig(channels=(32, 64, 96), latent_dim=32, codebook_size=512, num_stages=2)
    results = {"command": "python benchmarks/quantizer_comparison.py " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()), "config": cfg.to_dict(),
        "train_images": len(train), "held_out_images": len(held_out), "arms": {}}
    for arm in ("rvq", "fsq"):
        torch.manual_seed(0)
        model = VQAutoencoder(cfg) if arm == "rvq" else FSQAutoencoder(cfg, (8, 8, 8))
        t0 = time.time()
        print(f"{arm}: training {args.steps} steps", flush=True)
        train_arm(model, train, args.steps, args.batch_size, args.crop, args.lr, cfg.num_stages)
        results["arms"][arm] = {"train_seconds": round(time.time() - t0),
                                "by_stages": evaluate(model, held_out, args.crop, cfg.num_stages, 512)}
        print(json.dumps(results["arms"][arm]), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
