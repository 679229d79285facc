"""Codecs under test: classic codecs through Pillow, and an adapter for our own codec.

Every codec turns an RGB PIL image into bytes (the complete file, headers included) and back.
`qualities` is the sweep the benchmark runs, ordered from lowest to highest rate; the sweeps are
chosen to span roughly 0.05-2 bpp on Kodak-like photos where the codec can reach it.
"""
from __future__ import annotations

import io
import time

from PIL import Image


class Codec:
    name: str = "codec"
    qualities: list = []
    settings: str = ""  # one line for reports: the encoder options used
    pillow_format: str | None = None  # the Pillow format it writes, if any: checked before a run

    def encode(self, image: Image.Image, quality) -> bytes:
        raise NotImplementedError

    def decode(self, data: bytes) -> Image.Image:
        with Image.open(io.BytesIO(data)) as im:
            return im.convert("RGB")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


def _save(image: Image.Image, **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, **options)
    return buf.getvalue()


class JPEG(Codec):
    """libjpeg-turbo through Pillow, optimized Huffman tables, baseline (not progressive)."""

    pillow_format = "JPEG"
    qualities = [5, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90]

    def __init__(self, subsampling: str = "4:2:0"):
        if subsampling not in ("4:2:0", "4:4:4"):
            raise ValueError(f"JPEG subsampling must be 4:2:0 or 4:4:4, got {subsampling!r}")
        self.subsampling = subsampling
        self.name = "jpeg" if subsampling == "4:2:0" else "jpeg444"
        self.settings = f"Pillow/libjpeg-turbo, {subsampling}, optimize=True, quality {self.qualities}"

    def encode(self, image, quality):
        return _save(image, format=self.pillow_format, quality=int(quality), subsampling=self.subsampling, optimize=True)


class WebP(Codec):
    """libwebp lossy (always 4:2:0), slowest/best method 6."""

    pillow_format = "WEBP"
    name = "webp"
    qualities = [0, 5, 15, 25, 35, 50, 65, 75, 85, 90]
    settings = f"Pillow/libwebp lossy, method=6, quality {qualities}"

    def encode(self, image, quality):
        return _save(image, format=self.pillow_format, quality=int(quality), method=6)


class AVIF(Codec):
    """libavif (aom encoder, dav1d decoder) through Pillow, 4:4:4 full range."""

    pillow_format = "AVIF"
    name = "avif"
    speed = 6
    qualities = [0, 10, 20, 30, 40, 50, 60, 70, 80, 85]
    settings = f"Pillow/libavif, 4:4:4, full range, speed={speed}, quality {qualities}"

    def encode(self, image, quality):
        return _save(image, format=self.pillow_format, quality=int(quality), subsampling="4:4:4", speed=self.speed)


class JPEG2000(Codec):
    """OpenJPEG through Pillow: 9/7 irreversible wavelet, colour transform, one layer at a fixed
    compression ratio (quality = ratio vs 24 bpp; bpp ~= 24 / ratio), raw codestream (no JP2 box)."""

    pillow_format = "JPEG2000"
    name = "jpeg2000"
    qualities = [480, 240, 160, 100, 64, 40, 28, 20, 14, 10]  # ~0.05 .. 2.4 bpp
    settings = f"Pillow/OpenJPEG, irreversible=True, mct=1, quality_mode=rates, ratios {qualities}"

    def encode(self, image, quality):
        return _save(image, format=self.pillow_format, quality_mode="rates", quality_layers=[float(quality)],
                     irreversible=True, mct=1, no_jp2=True)


class HEVC(Codec):
    """HEVC intra (x265, decoded by libde265) in a HEIF file, 4:4:4, through the pillow-heif plugin: the
    anchor of phones and of the HEIF format. `pip install 'vqcodec[anchors]'`."""

    pillow_format = "HEIF"
    name = "hevc"
    qualities = [5, 15, 25, 35, 45, 55, 65, 75, 85, 92]
    settings = f"pillow-heif/x265, 4:4:4, quality {qualities}"

    def __init__(self):
        _plugin("pillow_heif", "hevc")
        import pillow_heif

        pillow_heif.register_heif_opener()

    def encode(self, image, quality):
        return _save(image, format=self.pillow_format, quality=int(quality), chroma=444)


class JPEGXL(Codec):
    """JPEG XL (libjxl, VarDCT) through the pillow-jxl-plugin, effort 7, its default (which tunes for the eye,
    not for PSNR). `pip install 'vqcodec[anchors]'`."""

    pillow_format = "JXL"
    name = "jxl"
    qualities = [5, 15, 25, 35, 45, 55, 65, 75, 85, 92]
    settings = f"pillow-jxl-plugin/libjxl, effort=7, quality {qualities}"

    def __init__(self):
        _plugin("pillow_jxl", "jxl")

    def encode(self, image, quality):
        return _save(image, format=self.pillow_format, quality=int(quality), effort=7)


def _plugin(module: str, codec: str) -> None:
    """Import an optional Pillow plugin (it registers its format), or refuse with what to install."""
    import importlib

    try:
        importlib.import_module(module)
    except ImportError:
        raise ValueError(f"{codec} needs the {module.replace('_', '-')} plugin: pip install 'vqcodec[anchors]' "
                         f"(or leave {codec} out of --codecs)") from None


class VQCodecAdapter(Codec):
    """Adapter for our codec (vqcodec.codec). Loads the model (timed as `model_load_s`), synchronizes
    CUDA around every call so wall times are honest, and exposes the core's per-call time split."""

    name = "vqcodec"

    def __init__(self, model=None, device: str = "cpu", codec=None, batch: bool | None = None):
        self.device = str(device)
        self.model_load_s = None
        if codec is None:
            from vqcodec.codec import load_codec

            self._sync()  # CUDA context creation is not part of the model load time
            t0 = time.perf_counter()
            codec = load_codec(model=model, device=self.device)
            self._sync()
            self.model_load_s = time.perf_counter() - t0
        self.codec = codec
        self.qualities = list(codec.qualities)
        # batching only pays off on a GPU; per-image times are then batch time / batch size
        has_batch = hasattr(codec, "compress_batch") and hasattr(codec, "decompress_batch")
        if batch and not has_batch:
            raise ValueError("this vqcodec version has no compress_batch/decompress_batch")
        self.batch = (has_batch and self.device.startswith("cuda")) if batch is None else batch
        model_name = getattr(codec, "model_name", None)
        self.settings = (f"vqcodec model {model_name} on {self.device}, qualities {self.qualities}"
                         + (", batched per quality" if self.batch else ""))

    @classmethod
    def random(cls, seed: int = 0, device: str = "cpu", config=None) -> "VQCodecAdapter":
        """Adapter around a tiny untrained model, for tests (its build time is the model_load_s)."""
        from vqcodec.codec import VQCodec as CoreCodec

        t0 = time.perf_counter()
        adapter = cls(codec=CoreCodec.random(config=config, seed=seed, device=device), device=device)
        adapter.model_load_s = time.perf_counter() - t0
        return adapter

    def _sync(self) -> None:
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()

    @property
    def last_timings(self) -> dict:
        return dict(getattr(self.codec, "last_timings", None) or {})

    def encode(self, image, quality):
        data = self.codec.compress(image, quality)
        self._sync()
        return data

    def decode(self, data):
        image = self.codec.decompress(data)
        self._sync()
        return image.convert("RGB")

    def encode_batch(self, images, quality) -> list[bytes]:
        data = self.codec.compress_batch(images, quality)
        self._sync()
        return list(data)

    def decode_batch(self, datas) -> list[Image.Image]:
        images = self.codec.decompress_batch(datas)
        self._sync()
        return [im.convert("RGB") for im in images]


# Registry: explicit names -> factory(device, model). Classic codecs always run on the CPU.
CODECS = {
    "vqcodec": lambda device, model: VQCodecAdapter(model=model, device=device),
    "jpeg": lambda device, model: JPEG("4:2:0"),
    "jpeg444": lambda device, model: JPEG("4:4:4"),
    "webp": lambda device, model: WebP(),
    "avif": lambda device, model: AVIF(),
    "jpeg2000": lambda device, model: JPEG2000(),
    "hevc": lambda device, model: HEVC(),        # optional: pip install 'vqcodec[anchors]'
    "jxl": lambda device, model: JPEGXL(),       # optional: pip install 'vqcodec[anchors]'
}
DEFAULT_CODECS = ("vqcodec", "jpeg", "webp", "avif", "jpeg2000")


def make_codec(name: str, device: str = "cpu", model=None) -> Codec:
    if name not in CODECS:
        raise ValueError(f"unknown codec {name!r}; valid names: {', '.join(CODECS)}")
    codec = CODECS[name](device, model)
    check_pillow_writes(codec)
    return codec


def check_pillow_writes(codec: Codec) -> None:
    """A classic codec needs its encoder in this Pillow build (AVIF only from Pillow 11.3, and builds may leave
    any of them out): refuse before the run, with what to do, rather than fail on the first image."""
    Image.init()
    fmt = codec.pillow_format
    if fmt is not None and fmt not in Image.SAVE:
        import PIL

        raise ValueError(f"this Pillow ({PIL.__version__}) cannot write {fmt}"
                         + (" (Pillow 11.3 and newer can)" if fmt == "AVIF" else "")
                         + f"; leave {codec.name} out of --codecs")
