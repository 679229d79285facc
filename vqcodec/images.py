"""Image input/output: mode handling, padding to the downsampling factor (numpy + pillow)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

GRAY_MODES = {"1", "L", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}


class ImageError(ValueError):
    """The input image cannot be read or is of a kind vqcodec does not take."""


def open_image(image: "Image.Image | str | Path") -> Image.Image:
    if isinstance(image, Image.Image):
        return image
    path = Path(image)
    try:
        with Image.open(path) as im:
            im.load()
            return im
    except FileNotFoundError:
        raise ImageError(f"no such file: {path}") from None
    except IsADirectoryError:
        raise ImageError(f"{path} is a directory, not an image") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"cannot read {path} as an image ({e.__class__.__name__})") from None
    except Image.DecompressionBombError as e:
        raise ImageError(f"{path}: {e}") from None


def to_codec_mode(im: Image.Image) -> tuple[Image.Image, str, list[str]]:
    """-> (RGB or L image, the mode the file will record, notes about conversions)."""
    notes: list[str] = []
    mode = im.mode
    if mode in ALPHA_MODES or (mode == "P" and "transparency" in im.info):
        alpha = np.asarray(im.convert("RGBA"))[..., 3]
        if (alpha != 255).any():
            raise ImageError(f"images with transparency ({mode}) are not supported yet; "
                             "flatten the alpha channel first")
        notes.append(f"dropped a fully opaque alpha channel ({mode})")
        im = im.convert("L" if mode in ("LA", "La") else "RGB")
    elif mode in ("RGB", "L"):
        pass
    elif mode in GRAY_MODES:
        notes.append(f"converted {mode} to 8-bit grayscale")
        if mode.startswith("I;16") or mode == "I":
            arr = np.asarray(im, dtype=np.float64)
            scale = 255.0 / 65535.0 if mode.startswith("I;16") or arr.max() > 255 else 1.0
            im = Image.fromarray(np.clip(np.round(arr * scale), 0, 255).astype(np.uint8), "L")
        else:
            im = im.convert("L")
    else:
        notes.append(f"converted {mode} to RGB")
        im = im.convert("RGB")
    return im, im.mode, notes


def to_rgb_array(im: Image.Image) -> np.ndarray:
    """RGB or L image -> (H, W, 3) uint8."""
    return np.asarray(im.convert("RGB"), dtype=np.uint8)


def pad_to_multiple(arr: np.ndarray, factor: int) -> np.ndarray:
    """(H, W, 3) -> (H', W', 3), H' and W' multiples of factor, padded by edge replication."""
    h, w = arr.shape[:2]
    ph, pw = -h % factor, -w % factor
    if ph or pw:
        arr = np.pad(arr, ((0, ph), (0, pw), (0, 0)), mode="edge")
    return arr


def from_rgb_array(arr: np.ndarray, width: int, height: int, mode: str) -> Image.Image:
    """(H', W', 3) uint8 -> PIL image cropped to width x height in the recorded mode."""
    im = Image.fromarray(np.ascontiguousarray(arr[:height, :width]), "RGB")
    return im.convert("L") if mode == "L" else im
