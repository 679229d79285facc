"""Issue 30: do the 96 values the encoder makes hold a KLT's worth of the image, read linearly? On the 64 held-out
crops: the best linear synthesis of each 8x8x3 block from its 96 unquantized values (least squares, fitted on
training crops), against the model's decoder on the same values and a KLT of 96 components. If the linear read-out
falls far short of the KLT, the encoder's values themselves lose what the KLT keeps (a question for the encoder);
if it comes close, the loss is in the decoder.

    python experiments/latent_linear_fit.py runs/v4/r64/autoencoder/autoencoder.ckpt --json experiments/results/latent_linear_fit.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from vqcodec.holdout import split, validation_crops
from vqcodec.train import load_autoencoder, load_images_from, psnr, random_crops


def blocks(model, x: torch.Tensor):
    """crops (N, 3, H, W) -> (values (M, D), pixels (M, 192)) per 8x8 block, unquantized."""
    with torch.no_grad():
        z = torch.cat([model.encoder(c).float() for c in x.split(16)])                # (N, D, H/8, W/8)
    px = F.unfold(x, 8, stride=8)                                                     # (N, 192, L)
    return z.flatten(2).transpose(1, 2).reshape(-1, z.shape[1]).double(), px.transpose(1, 2).reshape(-1, 192).double()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("--data", default="../shared/data/train")
    ap.add_argument("--crops", type=int, default=512)
    ap.add_argument("--json")
    args = ap.parse_args()
    model, state = load_autoencoder(args.checkpoint)
    model.eval()
    train, held = split(args.data)
    import numpy as np
    import random

    crops = [c for c, _ in zip(random_crops(train, 128, random.Random(5)), range(args.crops))]
    xt = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255
    zt, pt = blocks(model, xt)
    a = torch.cat([zt, torch.ones(len(zt), 1, dtype=torch.float64)], 1)               # values and a bias
    lin = torch.linalg.lstsq(a, pt).solution                                          # (D + 1, 192)
    val = validation_crops(held)
    zv, pv = blocks(model, val)
    rec = torch.cat([zv, torch.ones(len(zv), 1, dtype=torch.float64)], 1) @ lin
    out = {"checkpoint": args.checkpoint, "step": state.get("step"), "train_crops": args.crops,
           "linear_readout_psnr": round(psnr(float((rec.clamp(0, 1) - pv).pow(2).mean())), 3)}
    with torch.no_grad():
        cfg = model.cfg
        entry = cfg.decoder_level(cfg.refine_levels, cfg.num_stages // 2)
        mse = sum(float((model.decode(model.encoder(c).float(), entry).clamp(0, 1) - c).pow(2).sum()) for c in val.split(16))
    out["model_decoder_psnr"] = round(psnr(mse / val.numel()), 3)
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
