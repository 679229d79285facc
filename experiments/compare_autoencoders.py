"""Autoencoders of shipped models side by side on fixed training crops (not Kodak: this picks a model).

    python benchmarks/compare_autoencoders.py vqf8-v1 vqf8-v2 [--rd]

PSNR (dB) of the mean squared error over 48 fixed random 256x256 crops from every 15th training photo, after
1, 2, 3, 5 and all stages of the residual VQ (greedy codes) and without quantization. Training data: this
measures fit, not generalisation.
With --rd, also each model's whole codec on the same crops: bpp of the real .vq files, the mean of the crops'
PSNR (1.5 to 3 dB above the PSNR of their mean squared error: do not compare the two rows) and mean MS-SSIM at
every quality, and the BD-rate of each model against the first in PSNR and in MS-SSIM (dB).
"""
from __future__ import annotations

import argparse


EVAL_EVERY = 15  # every 15th training photo gives the evaluation crops; the others are for fitting


def training_crops(data: str, images=None):
    """48 fixed random 256x256 crops from every 15th training photo -> (48, 3, 256, 256) in [0, 1].
    images: the photos as `load_images(data, 256)` returns them, if already loaded."""
    from vqcodec.data import CropSampler
    from vqcodec.train import load_images

    images = load_images(data, 256) if images is None else images
    return CropSampler(images[::EVAL_EVERY], 256, seed=7).batch(48)


def fit_photos(images: list) -> list:
    """The training photos that give no evaluation crop (fitting an experiment on them keeps it held out)."""
    return [im for i, im in enumerate(images) if i % EVAL_EVERY]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", help="shipped model names or model folders")
    ap.add_argument("--data", default="../shared/data/train")
    ap.add_argument("--rd", action="store_true", help="also rate-distortion of the whole codec, and BD-rate")
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
        row["unquantized"] = psnr(lambda x: ae.decode(ae.encoder(x)).clamp(0, 1))
        print(name, "PSNR of the mean MSE, by stages:", row, flush=True)
    if args.rd:
        compare_rate_distortion(args.models, crops)


def codec_curve(codec, crops) -> tuple[list[float], list[float], list[float]]:
    """A codec on crops (B, 3, H, W) in [0, 1] at every quality (default effort) -> (bpp of the real files,
    mean PSNR, mean MS-SSIM in dB) per quality."""
    import numpy as np
    from PIL import Image

    from vqcodec.bench.metrics import ms_ssim, msssim_db

    arrays = (crops * 255).round().byte().permute(0, 2, 3, 1).numpy()       # (B, H, W, 3) uint8
    images = [Image.fromarray(a) for a in arrays]
    bpp, db, ms = [], [], []
    for q in codec.qualities:
        files = codec.compress_batch(images, q)
        decoded = codec.decompress_batch(files)
        bpp.append(float(np.mean([8 * len(f) / a.shape[0] / a.shape[1] for f, a in zip(files, arrays)])))
        mse = [np.mean((np.asarray(d, np.float64) - a) ** 2) for d, a in zip(decoded, arrays)]
        db.append(float(np.mean([10 * np.log10(255 ** 2 / m) for m in mse])))
        ms.append(float(np.mean([msssim_db(ms_ssim(np.asarray(d), a)) for d, a in zip(decoded, arrays)])))
    return bpp, db, ms


def compare_rate_distortion(models: list[str], crops) -> None:
    from vqcodec.bench.bdrate import bd_rate
    from vqcodec.codec import load_codec

    curves = {}
    for name in models:
        codec = load_codec(name)
        bpp, db, ms = codec_curve(codec, crops)
        curves[name] = (bpp, db, ms)
        print(name, "quality: (bpp, PSNR, MS-SSIM dB)",
              {q: (round(r, 4), round(d, 2), round(m, 2)) for q, r, d, m in zip(codec.qualities, bpp, db, ms)}, flush=True)
    anchor = models[0]
    for name in models[1:]:
        (ra, pa, ma), (rb, pb, mb) = curves[anchor], curves[name]
        print(f"BD-rate of {name} against {anchor}: PSNR {bd_rate(ra, pa, rb, pb):+.1f} %, "
              f"MS-SSIM (dB) {bd_rate(ra, ma, rb, mb):+.1f} %")


if __name__ == "__main__":
    main()
