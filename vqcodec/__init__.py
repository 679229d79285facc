"""vqcodec: a learned image codec (VQ-VAE indices, an exact integer prior, range coding).

    >>> import vqcodec
    >>> data = vqcodec.compress("photo.png", quality=6)   # bytes of a .vq file
    >>> image = vqcodec.decompress(data)                   # PIL.Image.Image

torch is imported on first use, so `import vqcodec` stays light.
"""
from __future__ import annotations

from pathlib import Path

__version__ = "0.14.0.dev0"
DEFAULT_QUALITY = 7
DEFAULT_MAX_PIXELS = 1 << 27   # decoding and reading refuse larger images unless max_pixels says otherwise
METADATA_CHOICES = ("all", "none", "icc", "exif", "xmp")   # what compress keeps of ICC / EXIF / XMP
ALPHA_CHOICES = ("keep", "drop")
EFFORT_BEAMS = (1, 4)         # --effort 0, 1: the residual quantizer's beam (1: greedy nearest codes); 4 measured
DEFAULT_EFFORT = 1            # -6 % BD-rate, 8 no better (experiments/beam-search.md)

__all__ = ["compress", "compress_to_size", "decompress", "sample", "read_info", "DEFAULT_QUALITY", "DEFAULT_MAX_PIXELS", "__version__"]


def compress(image, quality: int = DEFAULT_QUALITY, model: str | Path | None = None, device: str = "cpu",
             metadata: str = "all", alpha: str = "keep", max_pixels: int | None = DEFAULT_MAX_PIXELS,
             effort: int = DEFAULT_EFFORT, colour_layer: bool = True) -> bytes:
    """Compress a PIL image (or an image file's path or bytes) into the bytes of a .vq file.

    quality runs from 1 (smallest file) to the model's number of levels; anything else is a ValueError.
    metadata: all | none | icc | exif | xmp (what is kept); alpha: keep | drop (drop says so in a note).
    effort: 0 (fastest: the nearest code at each residual stage) or 1 (default: a beam search over the stages,
    EFFORT_BEAMS[1] paths, for about 6 % fewer bits at the same PSNR; the same decoder reads both).
    colour_layer: at the qualities without a refinement, a coarse correction of the decoded colour where it pays
    (docs/format.md, "Colour layer"); False: never.
    """
    from .codec import load_codec
    return load_codec(model, device).compress(image, quality, metadata=metadata, alpha=alpha, max_pixels=max_pixels,
                                              effort=effort, colour_layer=colour_layer)


def compress_to_size(image, target_size: int | None = None, target_bpp: float | None = None,
                     model: str | Path | None = None, device: str = "cpu", **options) -> bytes:
    """Compress at the highest quality whose file takes at most target_size bytes, or target_bpp bits per
    pixel (one of the two). ValueError if not even quality 1 fits. options: as for compress."""
    from .codec import load_codec
    return load_codec(model, device).compress_to_fit(image, max_bytes=target_size, max_bpp=target_bpp,
                                                      **options)[1]


def decompress(data: bytes, model: str | Path | None = None, device: str = "cpu", quality: int | None = None,
               max_pixels: int | None = DEFAULT_MAX_PIXELS, max_work: float | None = None, detail: str = "coded",
               seed: int = 0, detail_stages: int | None = None, decoder: str = "fidelity"):
    """Decode the bytes of a .vq file into a PIL image. model None = the shipped model the file names.

    quality: a lower quality decoded from the same file (its first residual stages), faster; a file cut
    off at a stage boundary decodes at any quality its whole stages hold. Images over max_pixels are refused,
    and so, before any decoding, are files that ask for more than max_work index positions per coded byte
    (None: no limit; a valid file asks for at most about 175, a photo for 1 to 3).
    detail: "coded" (the file's stages) or "sample": the stages the file does not code, up to detail_stages,
    drawn from the integer prior given those it does, with `seed` (the same indices on any machine).
    decoder: "fidelity" (default) or "realistic": the model's second decoder, trained adversarially to draw
    plausible texture at low qualities (where the model ships one; `read_decoders` says).
    """
    from .codec import load_codec, load_codec_for_file
    codec = load_codec_for_file(read_info(data), device) if model is None else load_codec(model, device)
    return codec.decompress(data, quality=quality, max_pixels=max_pixels, max_work=max_work, detail=detail,
                            seed=seed, detail_stages=detail_stages, decoder=decoder)


def sample(width: int = 512, height: int = 512, seed: int = 0, stages: int | None = None, like: bytes | None = None,
           keep: int = 1, model: str | Path | None = None, device: str = "cpu",
           max_pixels: int | None = DEFAULT_MAX_PIXELS):
    """An image drawn from the model's prior: every residual stage up to `stages` (None: all) drawn in the
    decoder's order with `seed`, then decoded. like: the bytes of a .vq file whose first `keep` stages are kept
    (variations of that photo; its model, its size). The same seed gives the same indices on any machine."""
    from .codec import load_codec, load_codec_for_file
    if like is not None and model is None:
        codec = load_codec_for_file(read_info(like), device)
    else:
        codec = load_codec(model, device)
    return codec.sample(width, height, seed, stages, like, keep, max_pixels)


def read_decoders(model_name: str) -> tuple[str, ...]:
    """The decoders the installed model `model_name` offers, from its folder's files (no weights loaded, no
    torch): ("fidelity",), with "realistic" where it ships realistic.safetensors; () if it is not installed."""
    from .container import _NAME_RE
    try:
        import vqcodec.models as shipped
        folder = Path(shipped.__path__[0]) / model_name
    except ImportError:
        folder = Path(__file__).resolve().parents[1] / "models" / model_name
    if not _NAME_RE.fullmatch(model_name.encode("ascii", "replace")) or not (folder / "config.json").is_file():
        return ()
    return ("fidelity", "realistic") if (folder / "realistic.safetensors").is_file() else ("fidelity",)


def read_info(data: bytes):
    """The validated header of a .vq file (no model, no torch needed)."""
    from .container import unpack
    return unpack(data)
