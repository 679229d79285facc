"""vqcodec: a learned image codec (VQ-VAE indices, an exact integer prior, range coding).

    >>> import vqcodec
    >>> data = vqcodec.compress("photo.png", quality=6)   # bytes of a .vq file
    >>> image = vqcodec.decompress(data)                   # PIL.Image.Image

torch is imported on first use, so `import vqcodec` stays light.
"""
from __future__ import annotations

from pathlib import Path

__version__ = "0.1.0"
DEFAULT_QUALITY = 7

__all__ = ["compress", "decompress", "read_info", "DEFAULT_QUALITY", "__version__"]


def compress(image, quality: int = DEFAULT_QUALITY, model: str | Path | None = None, device: str = "cpu") -> bytes:
    """Compress a PIL image (or an image file's path) into the bytes of a .vq file.

    quality runs from 1 (smallest file) to the model's number of levels; anything else is a ValueError.
    """
    from .codec import load_codec
    return load_codec(model, device).compress(image, quality)


def decompress(data: bytes, model: str | Path | None = None, device: str = "cpu"):
    """Decode the bytes of a .vq file into a PIL image. model None = the shipped model the file names."""
    from .codec import load_codec
    if model is None:
        model = read_info(data).model_name
    return load_codec(model, device).decompress(data)


def read_info(data: bytes):
    """The validated header of a .vq file (no model needed)."""
    from .container import unpack
    return unpack(data)[0]
