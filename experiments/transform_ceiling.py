"""Issue 30's ceiling requirement: the unquantized transform's PSNR (every value the encoder makes, unrounded,
through the decoder at the top quality's entry) against the top quality itself (the same, with b VQ stages and
the refinement rounded at level k), on the 64 held-out crops and, for reporting only, on Kodak.

    python experiments/transform_ceiling.py runs/v4/r64/autoencoder/autoencoder.ckpt --top 8,6 --kodak ../shared/data/kodak --json experiments/results/transform_ceiling.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vqcodec.holdout import split, validation_crops
from vqcodec.train import load_autoencoder, psnr


@torch.no_grad()
def ceiling_and_top(model, x: torch.Tensor, k: int, b: int) -> tuple[float, float]:
    """x (N, 3, H, W), H and W multiples of f -> (mse unquantized, mse at (k, b) with rounding)."""
    cfg, d = model.cfg, model.cfg.latent_dim
    z_all = model.encoder(x).float()
    level = cfg.decoder_level(k, b)
    ceiling = model.decode(z_all, level).clamp(0, 1)
    idx = model.rvq.encode(model._flatten(z_all[:, :d]), b).reshape(len(x), *z_all.shape[2:], b)
    zq = sum(model.rvq.stages[t].codebook[idx[..., t]] for t in range(b)).permute(0, 3, 1, 2)
    r = torch.cat([z_all[:, :d] - zq, z_all[:, d:]], 1)
    n = len(x)
    r_hat, _ = model.refine(r, zq, torch.full((n,), k), torch.full((n,), b), noise=False)
    top = model.decode(torch.cat([zq + r_hat[:, :d], r_hat[:, d:]], 1), level).clamp(0, 1)
    return float((ceiling - x).pow(2).mean()), float((top - x).pow(2).mean())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("--top", default="8,6", help="the top quality's (refinement level, VQ stages)")
    ap.add_argument("--data", default="../shared/data/train")
    ap.add_argument("--kodak")
    ap.add_argument("--json")
    args = ap.parse_args()
    k, b = (int(v) for v in args.top.split(","))
    model, state = load_autoencoder(args.checkpoint)
    model.eval()
    out = {"checkpoint": args.checkpoint, "step": state.get("step"), "top": [k, b]}
    val = validation_crops(split(args.data)[1])
    mses = [ceiling_and_top(model, val[i:i + 16], k, b) for i in range(0, len(val), 16)]
    out["held_out_crops"] = {"ceiling_psnr": round(psnr(np.mean([m[0] for m in mses])), 3),
                             "top_psnr": round(psnr(np.mean([m[1] for m in mses])), 3)}
    print("held-out crops", out["held_out_crops"], flush=True)
    if args.kodak:
        rows = []
        for p in sorted(Path(args.kodak).glob("*.png")):
            arr = np.asarray(Image.open(p).convert("RGB"))
            x = torch.from_numpy(arr.copy()).permute(2, 0, 1)[None].float() / 255
            with torch.no_grad():
                c_mse, t_mse = ceiling_and_top(model, x, k, b)   # Kodak's sides are multiples of 8
            rows.append((psnr(c_mse), psnr(t_mse)))
        out["kodak"] = {"images": len(rows), "ceiling_psnr_mean": round(float(np.mean([r[0] for r in rows])), 3),
                        "top_psnr_mean": round(float(np.mean([r[1] for r in rows])), 3)}
        print("kodak (reporting only)", out["kodak"], flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
