"""Issue 30: what sets the transform's ceiling? On the 64 held-out crops: the trained model's decoder on every
unquantized value (its ceiling), its linear synthesis path alone on the same values, and a KLT of 8x8x3 blocks
fitted on training crops keeping its first n components (n = 32, 96, 128, 160, 192), all unquantized.

    python experiments/ceiling_sources.py runs/v4/r64/autoencoder/autoencoder.ckpt --json experiments/results/ceiling_sources.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from vqcodec.holdout import split, validation_crops
from vqcodec.train import fit_klt, load_autoencoder, load_images_from, psnr


def klt_psnr(val: torch.Tensor, basis: torch.Tensor, mean: torch.Tensor, n: int, f: int = 8) -> float:
    x = val - mean.view(1, 3, 1, 1)
    blocks = F.unfold(x, f, stride=f)                                         # (N, 192, L)
    b = basis[:n].double()
    rec = b.t() @ (b @ blocks.double())
    out = F.fold(rec.float(), val.shape[2:], f, stride=f) + mean.view(1, 3, 1, 1)
    return psnr(float((out.clamp(0, 1) - val).pow(2).mean()))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("--data", default="../shared/data/train")
    ap.add_argument("--json")
    args = ap.parse_args()
    model, state = load_autoencoder(args.checkpoint)
    model.eval()
    cfg = model.cfg
    train, held = split(args.data)
    val = validation_crops(held)
    out = {"checkpoint": args.checkpoint, "step": state.get("step")}
    with torch.no_grad():
        entry = cfg.decoder_level(cfg.refine_levels, cfg.num_stages // 2)
        mse_full = mse_lin = 0.0
        for x in val.split(16):
            z = model.encoder(x).float()
            mse_full += float((model.decode(z, entry).clamp(0, 1) - x).pow(2).sum())
            mse_lin += float((model.decoder.linear(z).clamp(0, 1) - x).pow(2).sum())
        n = val.numel()
        out["model_unquantized_psnr"] = round(psnr(mse_full / n), 3)
        out["model_linear_path_alone_psnr"] = round(psnr(mse_lin / n), 3)
    images = load_images_from(train[::4], 64)
    basis, mean = fit_klt(images, 8, 192, crops=3200, crop=64)
    out["klt_psnr"] = {str(k): round(klt_psnr(val, basis, mean, k), 3) for k in (32, 64, 96, 128, 160, 192)}
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
