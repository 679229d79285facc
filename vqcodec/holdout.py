"""The held-out photos: a fixed, named part of the training set that no training phase sees.

Learning curves and bake-offs are measured on crops of them. `clean` photos (large ImageNet photos) are
downscaled 2x with antialiasing first, which removes most of their JPEG blocking: they stand for the clean,
smooth photos users have. `plain` photos (BSDS500) are used as they are.
"""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .data import find_images

HOLDOUT_FILE = Path(__file__).with_name("holdout.txt")


def holdout_names() -> dict[str, str]:
    """{path relative to the data folder: 'clean' or 'plain'}."""
    out = {}
    for line in HOLDOUT_FILE.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            kind, name = line.split(" ", 1)
            out[name] = kind
    return out


def split(data_dir: str | Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The images under data_dir -> (training paths, [(held-out path, kind)]).

    A data folder that holds none of the named photos (a crop pack, a test folder) holds nothing out."""
    root = Path(data_dir)
    names = holdout_names()
    train, held = [], []
    for p in find_images(root):
        kind = names.get(p.relative_to(root).as_posix())
        if kind is None:
            train.append(p)
        else:
            held.append((p, kind))
    return train, held


def load_holdout_image(path: Path, kind: str) -> np.ndarray:
    """(H, W, 3) uint8: a clean photo downscaled 2x (Lanczos), a plain one as it is."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        if kind == "clean":
            im = im.resize((im.width // 2, im.height // 2), Image.Resampling.LANCZOS)
        return np.asarray(im, dtype=np.uint8).copy()


def validation_crops(held: list[tuple[Path, str]], count: int = 64, crop: int = 128, seed: int = 0) -> torch.Tensor:
    """`count` crops of the held-out photos, in turn, at fixed random places -> (count, 3, crop, crop) in [0, 1]."""
    if not held:
        raise ValueError("no held-out photos in the data folder")
    rng = random.Random(seed)
    images = [load_holdout_image(p, k) for p, k in held]
    images = [im for im in images if min(im.shape[:2]) >= crop] or images
    out = np.empty((count, crop, crop, 3), dtype=np.uint8)
    for i in range(count):
        img = images[i % len(images)]
        if min(img.shape[:2]) < crop:
            raise ValueError(f"held-out photos are smaller than {crop}x{crop}")
        y, x = rng.randrange(img.shape[0] - crop + 1), rng.randrange(img.shape[1] - crop + 1)
        out[i] = img[y:y + crop, x:x + crop]
    return torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(255.0)
