"""Issue 30: the refinement's integer model against its float one, on the held-out crops, for every
(refinement level k, VQ stages b); and the quality ladder those points give.

    python experiments/refine_integer.py runs/v4/r64/autoencoder/autoencoder.ckpt --json experiments/results/refine_integer.json

Bits: VQ stages by v13's integer prior (the shipped coder's ideal code length, the VQ side being frozen),
refinement by the float Gaussian (noise=False) and by IntegerRefinement's tables (ideal code length). PSNR with
the integer model's values (mean + q x step) through the decoder. Calibration: 32 training crops of 128x128.
"""
from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch

from vqcodec.codec import VQCodec
from vqcodec.coding import IndexCoder
from vqcodec.holdout import split, validation_crops
from vqcodec.prior import IntegerPrior
from vqcodec.refine import IntegerRefinement
from vqcodec.train import load_autoencoder, psnr, random_crops


def int_latent(prior: IntegerPrior, idx: torch.Tensor, b: int) -> torch.Tensor:
    """idx (N, h, w, S) -> the prior's int8-range input of b stages' sum (N, D, h, w)."""
    v = sum(prior.t["codebooks"][t][idx[..., t].long()] for t in range(b))   # (N, h, w, D)
    return IntegerPrior.to_input(v.permute(0, 3, 1, 2))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("--data", default="../shared/data/train")
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.manual_seed(0)
    model, state = load_autoencoder(args.checkpoint)
    cfg = model.cfg
    v13 = VQCodec.load("models/vqf8-v13")
    prior = v13.prior
    input_scale = float(prior.t["codebooks"][0].double().abs().max() /
                        v13.autoencoder.rvq.stages[0].codebook.abs().max().double()) / 16
    train, held = split(args.data)
    val = validation_crops(held)
    rng = random.Random(1)
    crops = [c for c, _ in zip(random_crops(train, 128, rng), range(32))]
    calib = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255
    s, d = cfg.num_stages, cfg.latent_dim
    with torch.no_grad():
        zc = model.encoder(calib)[:, :d]
        idc = model.rvq.encode(model._flatten(zc), s).reshape(len(calib), *zc.shape[2:], s)
        cal = torch.cat([sum(model.rvq.stages[t].codebook[idc[..., t]] for t in range(b)).permute(0, 3, 1, 2)
                         for b in (1, 3, 5, 10)])
        rint = IntegerRefinement.from_float(model.refine, round(input_scale), cal)
        z_all = model.encoder(val)
        z = z_all[:, :d]
        idx = model.rvq.encode(model._flatten(z), s).reshape(len(val), *z.shape[2:], s)
        pixels = val.shape[0] * val.shape[2] * val.shape[3]
        vq_bits = []
        for b in range(1, s + 1):   # the shipped prior's ideal bits of b stages, per crop
            total = 0.0
            coder = IndexCoder(prior)
            for i in range(len(val)):
                stats = {}
                coder.encode(idx[i, ..., :b], stats=stats)
                total += stats["ideal_bits"]
            vq_bits.append(total)
        points = []
        for b in range(1, s + 1):
            zq = sum(model.rvq.stages[t].codebook[idx[..., t]] for t in range(b)).permute(0, 3, 1, 2)
            rec = model.decode(zq, b).clamp(0, 1)
            points.append(dict(k=0, b=b, bpp=vq_bits[b - 1] / pixels,
                               psnr=psnr(float((rec - val).pow(2).mean()))))
            zin = int_latent(prior, idx, b)
            r = torch.cat([z - zq, z_all[:, d:]], 1)
            for k in range(1, cfg.refine_levels + 1):
                t0 = time.time()
                lv, bs = torch.full((len(val),), s + k), torch.full((len(val),), b)
                _, fbits = model.refine(r, zq, lv - s, bs, noise=False)
                mean, table = rint.mean_table(zin, b, k)
                q = rint.quantize(r, mean, table, k)
                ibits = rint.table_set.bits(q.numpy().ravel(), table.numpy().ravel())
                r_hat = rint.dequantize(q, mean, k)
                clamp_share = float((q.abs() == torch.from_numpy(rint.halves)[table]).float().mean())
                zr = torch.cat([zq + r_hat[:, :d], r_hat[:, d:]], 1)
                rec = model.decode(zr, torch.full((len(val),), cfg.decoder_level(k, b))).clamp(0, 1)
                p = dict(k=k, b=b, bpp=(vq_bits[b - 1] + ibits) / pixels, psnr=psnr(float((rec - val).pow(2).mean())),
                         refine_bpp_float=float(fbits.sum()) / pixels, refine_bpp_int=ibits / pixels,
                         at_table_end=clamp_share, seconds=round(time.time() - t0, 2))
                points.append(p)
                print(json.dumps({k2: round(v, 4) if isinstance(v, float) else v for k2, v in p.items()}), flush=True)
    # the ladder: the lower convex hull of (bpp, -psnr)
    pts = sorted(points, key=lambda p: p["bpp"])
    hull = []
    for p in pts:
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = (hull[-2]["bpp"], hull[-2]["psnr"]), (hull[-1]["bpp"], hull[-1]["psnr"])
            if (y2 - y1) * (p["bpp"] - x1) <= (p["psnr"] - y1) * (x2 - x1):
                hull.pop()
            else:
                break
        hull.append(p)
    out = dict(checkpoint_step=state["step"], input_scale=input_scale, points=points,
               ladder=[(p["k"], p["b"], round(p["bpp"], 4), round(p["psnr"], 3)) for p in hull])
    print(json.dumps(out["ladder"]))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
