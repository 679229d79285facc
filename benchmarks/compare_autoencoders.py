"""Autoencoders of shipped models side by side on fixed training crops (not Kodak: this picks a model).

    python benchmarks/compare_autoencoders.py vqf8-v1 vqf8-v2

PSNR (dB) of 48 fixed random 256x256 crops from every 15th training photo, after 1, 2, 3, 5 and all
stages of the residual VQ and without quantization. Training data: this measures fit, not generalisation.
"""
from __future__ import annotations

import argparse


def training_crops(data: str):
    """48 fixed random 256x256 crops from every 15th training photo -> (48, 3, 256, 256) in [0, 1]."""
    from vqcodec.data import CropSampler
    from vqcodec.train import load_images

    return CropSampler(load_images(data, 256)[::15], 256, seed=7).batch(48)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", help="shipped model names or model folders")
    ap.add_argument("--data", default="../shared/data/train")
    args = ap.parse_args()

    import torch

    from vqcodec.codec import load_codec

    crops = training_crops(args.data)  # (48, 3, 256, 256)

    def psnr(run) -> float:
        with torch.no_grad():
            out = torch.cat([run(crops[i:i + 8]) for i in range(0, len(crops), 8)])
        return round(float(-10 * torch.log10((out - crops).pow(2).mean())), 2)

    for name in args.models:
        ae = load_codec(name).autoencoder
        stages = sorted({1, 2, 3, 5, ae.cfg.num_stages})
        row = {q: psnr(lambda x: ae.decode_indices(ae.encode_indices(x, q))) for q in stages}
        row["unquantized"] = psnr(lambda x: ae.decoder(ae.encoder(x)).clamp(0, 1))
        print(name, row, flush=True)


if __name__ == "__main__":
    main()
