"""Training images: loaded once into memory, served as random crops with flips."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from PIL import Image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm"}


def find_images(folder: str | Path) -> list[Path]:
    paths = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise FileNotFoundError(f"no images found under {folder}")
    return paths


def load_training_image(path: Path, crop: int, max_short_side: int = 512) -> np.ndarray:
    """RGB uint8 (H, W, 3). Large photos are downscaled (removes JPEG noise), small ones upsampled to the crop."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        short = min(im.size)
        scale = None
        if short > max_short_side:
            scale = max_short_side / short
        elif short < crop:
            scale = crop / short
        if scale is not None:
            size = (max(crop, round(im.width * scale)), max(crop, round(im.height * scale)))
            im = im.resize(size, Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BICUBIC)
        return np.asarray(im, dtype=np.uint8).copy()


class CropSampler:
    """Random crops (and horizontal flips) from images held in memory."""

    def __init__(self, images: list[np.ndarray], crop: int, seed: int = 0):
        self.images, self.crop = images, crop
        self.rng = random.Random(seed)

    def batch(self, batch_size: int) -> torch.Tensor:
        out = np.empty((batch_size, self.crop, self.crop, 3), dtype=np.uint8)
        for i in range(batch_size):
            img = self.images[self.rng.randrange(len(self.images))]
            y = self.rng.randrange(img.shape[0] - self.crop + 1)
            x = self.rng.randrange(img.shape[1] - self.crop + 1)
            patch = img[y:y + self.crop, x:x + self.crop]
            out[i] = patch[:, ::-1] if self.rng.random() < 0.5 else patch
        return torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(255.0)  # (B, 3, crop, crop)
