"""Image input/output (numpy + pillow): reading with limits, orientation, metadata, alpha, depth, padding.

    prepare(image)  -> Prepared: the RGB or L pixels vqcodec codes, plus what travels beside them
                       (alpha plane, ICC / EXIF / XMP, source depth) and notes for the user
    finish(...)     -> the decoded PIL image with its alpha and metadata put back
"""
from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from . import ALPHA_CHOICES, DEFAULT_MAX_PIXELS, METADATA_CHOICES

GRAY_MODES = {"1", "L", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
# metadata entries in a .vq file: type byte -> name; see docs/format.md ("Metadata")
META_TYPES = {1: "icc", 2: "exif", 3: "xmp"}
META_CODES = {v: k for k, v in META_TYPES.items()}
JPEG_MARKER_BYTES = 65533        # the most EXIF bytes one JPEG APP1 marker holds (Pillow refuses more)
ALPHA_PNG = 0                    # alpha section method: the 8-bit plane as a grayscale PNG (lossless)


class ImageError(ValueError):
    """The input image cannot be read or is of a kind vqcodec does not take."""


@dataclass
class Prepared:
    image: Image.Image                  # RGB or L, 8-bit, upright
    mode: str                           # "RGB" or "L": what the file records
    depth: int = 8                      # bits per sample of the source
    alpha: np.ndarray | None = None     # (H, W) uint8, kept alpha
    metadata: dict = field(default_factory=dict)  # "icc" / "exif" / "xmp" -> bytes
    notes: list = field(default_factory=list)


def check_pixels(width: int, height: int, max_pixels: int | None, what: str) -> None:
    if max_pixels is not None and width * height > max_pixels:
        raise ImageError(f"{what} is {width}x{height} = {width * height} pixels, over the limit of {max_pixels} "
                         "(raise it with --max-pixels / max_pixels=)")


def open_image(image: "Image.Image | str | Path | bytes", max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """A PIL image, a path, or the bytes of an image file -> an opened PIL image (pixels not yet loaded).

    The size is checked against max_pixels before any pixel is decoded."""
    if isinstance(image, Image.Image):
        check_pixels(image.width, image.height, max_pixels, "the image")
        return image
    name = "the input" if isinstance(image, (bytes, bytearray)) else str(image)
    source = io.BytesIO(image) if isinstance(image, (bytes, bytearray)) else Path(image)
    old_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # vqcodec's own limit applies, before any pixel is decoded
    try:
        im = Image.open(source)
        check_pixels(im.width, im.height, max_pixels, name)
        return im
    except FileNotFoundError:
        raise ImageError(f"no such file: {name}") from None
    except IsADirectoryError:
        raise ImageError(f"{name} is a directory, not an image") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        if isinstance(e, ImageError):
            raise
        raise ImageError(f"cannot read {name} as an image ({e.__class__.__name__})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = old_limit


def _load(im: Image.Image) -> None:
    try:
        im.load()
    except MemoryError:
        raise ImageError(f"not enough memory to read a {im.width}x{im.height} image") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"cannot read the image ({e.__class__.__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None


def _source_depth(im: Image.Image) -> int:
    if im.mode.startswith("I;16") or im.mode == "I":
        return 16
    # a tile's raw mode (its args), e.g. "RGB;16B": a named tuple from Pillow 11, a plain tuple before
    if any(";16" in str(getattr(t, "args", t[-1] if isinstance(t, tuple) and t else ""))
           for t in (getattr(im, "tile", None) or [])):
        return 16
    return 8


def _metadata(im: Image.Image, choice: str) -> dict:
    if choice not in METADATA_CHOICES:
        raise ValueError(f"metadata must be one of {', '.join(METADATA_CHOICES)}, not {choice!r}")
    found = {"icc": im.info.get("icc_profile"), "xmp": im.info.get("xmp") or im.info.get("XML:com.adobe.xmp")}
    exif = im.getexif()
    found["exif"] = exif.tobytes() if len(exif) else None
    keep = set(META_CODES) if choice == "all" else set() if choice == "none" else {choice}
    out = {}
    for key in sorted(keep):
        value = found.get(key)
        if isinstance(value, str):
            value = value.encode("utf-8")
        if value:
            out[key] = bytes(value)
    return out


def prepare(image, metadata: str = "all", alpha: str = "keep",
            max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Prepared:
    """Whatever the user gave -> the upright 8-bit RGB or L pixels, alpha, metadata and notes."""
    if alpha not in ALPHA_CHOICES:
        raise ValueError(f"alpha must be one of {', '.join(ALPHA_CHOICES)}, not {alpha!r}")
    im = open_image(image, max_pixels)
    notes: list[str] = []
    if getattr(im, "n_frames", 1) > 1:
        notes.append(f"the input has {im.n_frames} frames; coded the first only")
        im.seek(0)
    depth = _source_depth(im)
    _load(im)
    kept = _metadata(im, metadata)
    if im.mode == "CMYK":
        im = _cmyk_to_rgb(im, notes)
        kept.pop("icc", None)  # the pixels are sRGB now
    orientation = im.getexif().get(0x0112, 1)
    if orientation not in (1, None):
        im = ImageOps.exif_transpose(im)
        notes.append(f"applied EXIF orientation {orientation} (the decoded image is upright)")
        if "exif" in kept:
            exif = im.getexif()
            exif[0x0112] = 1
            kept["exif"] = exif.tobytes()
    plane, im = _split_alpha(im, alpha, notes)
    im, mode = _to_codec_mode(im, notes)
    if depth == 16:
        notes.append("reduced 16-bit samples to 8 bits (the file records the original depth)")
    return Prepared(im, mode, depth, plane, kept, notes)


def _cmyk_to_rgb(im: Image.Image, notes: list) -> Image.Image:
    icc = im.info.get("icc_profile")
    if icc:
        from PIL import ImageCms
        try:
            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            out = ImageCms.profileToProfile(im, src, ImageCms.createProfile("sRGB"), outputMode="RGB")
            notes.append("converted CMYK to sRGB through its ICC profile")
            return out
        except (ImageCms.PyCMSError, OSError):
            notes.append("converted CMYK to RGB without colour management (its ICC profile could not be used)")
            return im.convert("RGB")
    notes.append("converted CMYK to RGB without colour management (no ICC profile)")
    return im.convert("RGB")


def _split_alpha(im: Image.Image, choice: str, notes: list) -> tuple[np.ndarray | None, Image.Image]:
    mode = im.mode
    if not (mode in ALPHA_MODES or (mode == "P" and "transparency" in im.info)):
        return None, im
    plane = np.asarray(im.convert("RGBA"))[..., 3]
    base = im.convert("LA").convert("L") if mode in ("LA", "La") else im.convert("RGB")
    if (plane == 255).all():
        notes.append(f"dropped a fully opaque alpha channel ({mode})")
        return None, base
    if choice == "drop":
        notes.append(f"dropped the alpha channel ({mode}) as asked (--alpha drop)")
        return None, base
    if mode == "P":
        notes.append("converted P with transparency to RGBA (it decodes as RGBA)")
    return np.ascontiguousarray(plane), base


def _to_codec_mode(im: Image.Image, notes: list) -> tuple[Image.Image, str]:
    mode = im.mode
    if mode in ("RGB", "L"):
        return im, mode
    if mode in GRAY_MODES:
        if mode.startswith("I;16") or mode == "I":
            arr = np.asarray(im, dtype=np.float64)
            scale = 255.0 / 65535.0 if mode.startswith("I;16") or arr.max() > 255 else 1.0
            return Image.fromarray(np.clip(np.round(arr * scale), 0, 255).astype(np.uint8), "L"), "L"
        notes.append(f"converted {mode} to 8-bit grayscale")
        return im.convert("L"), "L"
    notes.append(f"converted {mode} to RGB")
    return im.convert("RGB"), "RGB"


# --- the sections beside the pixels ------------------------------------------------------------
def pack_metadata(meta: dict) -> bytes:
    """{"icc": b, "exif": b, "xmp": b} -> the metadata section: (type u8, length u32) + bytes, by type."""
    out = bytearray()
    for code, key in sorted(META_TYPES.items()):
        if meta.get(key):
            out += struct.pack("<BI", code, len(meta[key])) + meta[key]
    return bytes(out)


def unpack_metadata(data: bytes) -> dict:
    """The metadata section -> dict; ValueError (FormatError in the codec) on anything malformed."""
    meta, pos = {}, 0
    last = 0
    while pos < len(data):
        if pos + 5 > len(data):
            raise ValueError("metadata entry header incomplete")
        code, length = struct.unpack_from("<BI", data, pos)
        if code not in META_TYPES or code <= last:
            raise ValueError(f"metadata entry type {code} unknown or out of order")
        if length == 0 or pos + 5 + length > len(data):
            raise ValueError("metadata entry length out of range")
        meta[META_TYPES[code]] = bytes(data[pos + 5:pos + 5 + length])
        pos, last = pos + 5 + length, code
    return meta


def pack_alpha(plane: np.ndarray) -> bytes:
    """(H, W) uint8 -> the alpha section: method byte 0, then a lossless grayscale PNG."""
    buf = io.BytesIO()
    Image.fromarray(plane, "L").save(buf, format="PNG", optimize=True)
    return bytes([ALPHA_PNG]) + buf.getvalue()


def unpack_alpha(data: bytes, width: int, height: int) -> np.ndarray:
    """The alpha section -> (H, W) uint8; ValueError unless it is a whole 8-bit grayscale PNG of exactly that
    size. Its image data is inflated once, bounded by the size, to check it holds every row (a PNG cut short
    inside its zlib stream would otherwise decode with the missing rows as 0) before Pillow decodes it."""
    if not data or data[0] != ALPHA_PNG:
        raise ValueError("unknown alpha method")
    png = data[1:]
    _check_alpha_png(png, width, height)
    old_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # the size is the header's, already checked against max_pixels
    try:
        with Image.open(io.BytesIO(png), formats=["PNG"]) as im:
            if im.size != (width, height) or im.mode != "L":
                raise ValueError("alpha plane of the wrong size or mode")
            im.load()
            return np.asarray(im, dtype=np.uint8)
    except (OSError, SyntaxError, Image.DecompressionBombError) as e:
        raise ValueError(f"alpha plane does not decode ({e.__class__.__name__})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = old_limit


def _check_alpha_png(png: bytes, width: int, height: int) -> None:
    """ValueError unless png is an 8-bit grayscale, non-interlaced PNG of width x height whose IDAT chunks
    inflate to exactly height * (width + 1) bytes (a filter byte per row) and end its zlib stream."""
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("alpha plane is not a PNG")
    pos, idat, ihdr = 8, [], None
    while pos + 8 <= len(png):
        length, kind = struct.unpack_from(">I4s", png, pos)
        body = png[pos + 8:pos + 8 + length]
        if len(body) < length:
            raise ValueError("alpha plane PNG cut short")
        if kind == b"IHDR":
            ihdr = body
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        pos += 12 + length
    else:
        raise ValueError("alpha plane PNG has no end")
    if ihdr is None or len(ihdr) != 13:
        raise ValueError("alpha plane PNG has no header")
    w, h, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", ihdr)
    if (w, h) != (width, height) or depth != 8 or colour != 0 or interlace != 0:
        raise ValueError("alpha plane of the wrong size or mode")
    expected = height * (width + 1)
    inflater, got = zlib.decompressobj(), 0
    try:
        for chunk in idat:
            pending = chunk
            while pending and got <= expected and not inflater.eof:   # at most 4 MiB of output at a time
                got += len(inflater.decompress(pending, min(1 << 22, expected + 1 - got)))
                pending = inflater.unconsumed_tail
    except zlib.error:
        raise ValueError("alpha plane PNG does not inflate") from None
    if got != expected or not inflater.eof:
        raise ValueError("alpha plane PNG holds the wrong number of rows")


def finish(im: Image.Image, alpha: np.ndarray | None, meta: dict) -> Image.Image:
    """The decoded RGB or L image -> with its alpha (RGBA / LA) and metadata in .info."""
    if alpha is not None:
        im = im.convert("RGBA" if im.mode == "RGB" else "LA")
        im.putalpha(Image.fromarray(alpha, "L"))
    if meta.get("icc"):
        im.info["icc_profile"] = meta["icc"]
    if meta.get("exif"):
        im.info["exif"] = meta["exif"]
    if meta.get("xmp"):
        im.info["xmp"] = meta["xmp"]
    return im


def save_image(im: Image.Image, fp, fmt: str, notes: list | None = None) -> None:
    """Save a decoded image, with its ICC profile, EXIF and XMP where the format takes them (XMP in PNG as an
    iTXt chunk XML:com.adobe.xmp, in TIFF as tag 700). What the format cannot take, or a damaged EXIF, is left
    out with a note in `notes`.

    A format that cannot hold the alpha channel (JPEG, PPM) gets the image composited on white, with a note."""
    notes = [] if notes is None else notes
    icc, exif, xmp = (im.info.get(k) for k in ("icc_profile", "exif", "xmp"))
    if exif and fmt == "TIFF" and not _exif_readable(exif):  # the TIFF writer parses EXIF; the others copy it
        notes.append("the file's EXIF is damaged: TIFF cannot hold it, left out")
        exif = None
    if exif and fmt != "PPM" and _exif_readable(exif):
        parsed = Image.Exif()
        parsed.load(exif)
        if parsed.get(0x0112, 1) != 1:   # the pixels are upright (a .vq file's EXIF says 1): never rotated twice
            notes.append(f"the file's EXIF orientation {parsed.get(0x0112)} was set to 1 (the image is upright)")
            parsed[0x0112] = 1
            exif = parsed.tobytes()
    if fmt == "JPEG" and exif and len(exif) > JPEG_MARKER_BYTES:
        notes.append(f"the EXIF ({len(exif)} bytes) is longer than a JPEG marker holds: left out")
        exif = None
    if fmt == "JPEG" and xmp and len(xmp) > JPEG_MARKER_BYTES - 29:   # less the XMP namespace header
        notes.append(f"the XMP ({len(xmp)} bytes) is longer than a JPEG marker holds: left out")
        xmp = None
    if fmt in ("JPEG", "PPM") and im.mode in ("RGBA", "LA"):
        notes.append(f"{fmt} holds no alpha: the {im.mode} image is composited on white")
        base = Image.new(im.mode, im.size, (255,) * len(im.mode))
        im = Image.alpha_composite(base.convert("RGBA"), im.convert("RGBA")).convert(
            "RGB" if im.mode == "RGBA" else "L")
    kwargs: dict = {}
    if fmt == "PPM":
        dropped = [k for k, v in (("ICC profile", icc), ("EXIF", exif), ("XMP", xmp)) if v]
        if dropped:
            notes.append(f"PPM holds no metadata: {', '.join(dropped)} left out")
    else:
        if icc:
            kwargs["icc_profile"] = icc
        if exif:
            kwargs["exif"] = exif
        if xmp and fmt == "PNG":
            from PIL import PngImagePlugin

            info = PngImagePlugin.PngInfo()
            info.add_itxt("XML:com.adobe.xmp", xmp.decode("utf-8", "replace"))
            kwargs["pnginfo"] = info
        elif xmp and fmt == "TIFF" and exif:   # Pillow's TIFF writer takes one of exif= and tiffinfo=: one IFD
            merged = Image.Exif()
            merged.load(exif)
            merged[700] = xmp
            kwargs["exif"] = merged
        elif xmp and fmt == "TIFF":
            from PIL import TiffImagePlugin

            ifd = TiffImagePlugin.ImageFileDirectory_v2()
            ifd[700] = xmp
            ifd.tagtype[700] = 1  # BYTE
            kwargs["tiffinfo"] = ifd
        elif xmp and fmt in ("JPEG", "WEBP"):
            kwargs["xmp"] = xmp
        elif xmp:
            notes.append(f"{fmt} holds no XMP: left out")
    try:
        im.save(fp, format=fmt, **kwargs)
    except (OSError, SyntaxError, ValueError, TypeError, KeyError, struct.error) as e:
        raise ImageError(f"cannot write the image as {fmt} ({e.__class__.__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''})") from None


def _exif_readable(exif: bytes) -> bool:
    """Whether Pillow reads EXIF bytes without an error or a warning (it writes them into TIFF files)."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            parsed = Image.Exif()
            parsed.load(exif)
            dict(parsed)
            parsed.tobytes()
        return True
    except Exception:  # noqa: BLE001 - any failure to parse is a damaged EXIF
        return False


# --- pixels ------------------------------------------------------------------------------------
def to_rgb_array(im: Image.Image) -> np.ndarray:
    """RGB or L image -> (H, W, 3) uint8 (an RGB image is read without an intermediate converted copy)."""
    return np.asarray(im if im.mode == "RGB" else im.convert("RGB"), dtype=np.uint8)


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
