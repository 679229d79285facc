"""Issue 30: rate-distortion optimised rounding of the refined values, an encoder-only change (same format, same
decoder): does rounding some values toward their predicted mean buy more rate than it costs in PSNR?

Each refined value u (in steps, from its predicted mean) is rounded to the nearest integer q0 today. Two rules:

- `deadzone θ`: q = sign(u) floor(|u| + 1/2 - θ), the video codecs' rounding offset (θ = 0 is today's);
- `rdoq λ`: q0, or q0 moved one step toward zero where (u - q)^2 + λ bits(q) is smaller (in squared steps per
  bit, bits from the value's own Gaussian; a fine uniform quantizer's own slope is ln 2 / 6 = 0.116).

Frozen checkpoint, the 64 held-out crops, the ladder's (k, b) points; VQ bits by vqf8-v13's integer prior (ideal
code length), refinement bits by the float Gaussian (ideal), PSNR through the decoder. Each rule's six points
make a curve; its BD-rate is against today's rounding on the same crops.

    python experiments/refine_rdoq.py runs/v4/r64/autoencoder/autoencoder.ckpt --json experiments/results/refine_rdoq.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from vqcodec.bench.bdrate import bd_rate_with_overlap
from vqcodec.codec import VQCodec
from vqcodec.coding import IndexCoder
from vqcodec.holdout import split, validation_crops
from vqcodec.refine import LOG_SCALE_MAX, LOG_SCALE_MIN, gaussian_bits
from vqcodec.train import load_autoencoder, psnr

LADDER = [(3, 4), (4, 4), (5, 5), (6, 5), (7, 6), (8, 6)]


def round_rule(u: torch.Tensor, scale: torch.Tensor, step: torch.Tensor, rule: str, p: float) -> torch.Tensor:
    if rule == "deadzone":
        return torch.sign(u) * torch.clamp(torch.floor(u.abs() + 0.5 - p), min=0)
    q0 = torch.round(u)
    q1 = q0 - torch.sign(q0)
    cost = lambda q: (u - q).pow(2) + p * gaussian_bits(q, scale)  # noqa: E731
    return torch.where(cost(q1) < cost(q0), q1, q0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("--data", default="../shared/data/train")
    ap.add_argument("--json")
    args = ap.parse_args()
    model, state = load_autoencoder(args.checkpoint)
    model.eval()
    cfg = model.cfg
    prior = VQCodec.load("models/vqf8-v13").prior
    _, held = split(args.data)
    val = validation_crops(held)
    pixels = val.shape[0] * val.shape[2] * val.shape[3]
    s, d = cfg.num_stages, cfg.latent_dim
    rules = [("deadzone", 0.0)] + [("deadzone", t) for t in (0.05, 0.1, 0.15, 0.2, 0.25)] + \
            [("rdoq", lam) for lam in (0.03, 0.06, 0.116, 0.2)]
    out = {"checkpoint": args.checkpoint, "step": state.get("step"), "ladder": LADDER, "rules": {}}
    with torch.no_grad():
        z_all = model.encoder(val).float()
        z = z_all[:, :d]
        idx = model.rvq.encode(model._flatten(z), s).reshape(len(val), *z.shape[2:], s)
        vq_bits = {}
        for b in sorted({b for _, b in LADDER}):
            coder, total = IndexCoder(prior), 0.0
            for i in range(len(val)):
                stats = {}
                coder.encode(idx[i, ..., :b], stats=stats)
                total += stats["ideal_bits"]
            vq_bits[b] = total
        for rule, p in rules:
            points = []
            for k, b in LADDER:
                zq = sum(model.rvq.stages[t].codebook[idx[..., t]] for t in range(b)).permute(0, 3, 1, 2)
                r = torch.cat([z - zq, z_all[:, d:]], 1)
                n = len(val)
                level, base = torch.full((n,), k), torch.full((n,), b)
                step = model.refine.step(level)
                mean, log_scale = model.refine.mean_scale(zq, base)
                scale = (log_scale - step.log()).clamp(LOG_SCALE_MIN, LOG_SCALE_MAX).exp()
                u = (r - mean) / step
                q = round_rule(u, scale, step, rule, p)
                bits = float(gaussian_bits(q, scale).sum())
                r_hat = mean + q * step
                zr = torch.cat([zq + r_hat[:, :d], r_hat[:, d:]], 1)
                rec = torch.cat([model.decode(zr[i:i + 16], cfg.decoder_level(k, b)) for i in range(0, n, 16)])
                points.append({"k": k, "b": b, "bpp": round((vq_bits[b] + bits) / pixels, 5),
                               "psnr": round(psnr(float((rec.clamp(0, 1) - val).pow(2).mean())), 4),
                               "zeros": round(float((q == 0).float().mean()), 4)})
            name = f"{rule} {p:g}"
            out["rules"][name] = points
            base_pts = out["rules"]["deadzone 0"]
            bd, overlap = bd_rate_with_overlap([x["bpp"] for x in base_pts], [x["psnr"] for x in base_pts],
                                               [x["bpp"] for x in points], [x["psnr"] for x in points])
            out["rules"][name] = {"points": points, "bd_rate_vs_rounding_pct": round(bd, 2),
                                  "overlap": round(overlap, 3)} if name != "deadzone 0" else points
            print(name, f"BD-rate {bd:+.2f} %", [(x["bpp"], x["psnr"]) for x in points], flush=True)
            if name == "deadzone 0":
                out["rules"][name] = points
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
