"""A Pillow plugin for .vq files: `import vqcodec.pillow`, then Image.open and Image.save know them.

    >>> import vqcodec.pillow
    >>> from PIL import Image
    >>> im = Image.open("photo.vq")        # size and mode from the header: no decoding, no torch
    >>> im.load()                          # decodes (vqcodec.decompress)
    >>> im.save("copy.vq", quality=5)      # encodes (vqcodec.compress)

Opening reads only the header fields through vqcodec.read_info, which needs no torch; the model is loaded
when the pixels are first needed. Decoding uses the shipped model the file names, unless `register(model=...)`
names another (a model folder, for instance). `save` takes quality=, model=, device= and, where the
library has them, metadata=, alpha=, effort= and colour_layer=: the keyword arguments of vqcodec.compress.
"""
from __future__ import annotations

from PIL import Image, ImageFile

from . import DEFAULT_QUALITY

FORMAT = "VQ"
MIME = "image/x-vq"
EXTENSION = ".vq"
MAGIC = b"VQIM"  # vqcodec.container.MAGIC (not imported: keeps this module light)

_options: dict = {"model": None, "device": "cpu"}


def _accept(prefix: bytes) -> bool:
    """Pillow hands over the first 16 bytes of a file: ours start with the magic."""
    return prefix[:4] == MAGIC


def _tile(decoder: str, size: tuple[int, int]):
    tile_class = getattr(ImageFile, "_Tile", None)  # Pillow >= 11
    extents = (0, 0, *size)
    return tile_class(decoder, extents, 0, None) if tile_class else (decoder, extents, 0, None)


class VqImageFile(ImageFile.ImageFile):
    format = FORMAT
    format_description = "vqcodec learned image"

    def _open(self) -> None:
        from . import read_info

        from .container import decoded_mode, read_bounded, sections
        from .images import unpack_metadata

        try:
            data = read_bounded(self.fp.read)
            header = read_info(data)
            meta = unpack_metadata(sections(data, header, 0).metadata) if header.metadata_len else {}
        except ValueError as e:  # FormatError: Pillow tries the other plugins, then UnidentifiedImageError
            raise SyntaxError(str(e).splitlines()[0] if str(e) else "not a .vq file") from None
        self._size = (header.width, header.height)
        mode = decoded_mode(header)
        if isinstance(getattr(type(self), "mode", None), property):  # Pillow >= 10.1
            self._mode = mode
        else:
            self.mode = mode
        self.info["quality"] = header.quality
        self.info["model"] = header.model_name
        for key, name in (("icc", "icc_profile"), ("exif", "exif"), ("xmp", "xmp")):
            if meta.get(key):
                self.info[name] = meta[key]
        self.tile = [_tile("vqcodec", self._size)]


class VqDecoder(ImageFile.PyDecoder):
    """Decodes a whole .vq file at once (the file is read from its start)."""

    _pulls_fd = True

    def decode(self, buffer):
        from . import decompress

        self.fd.seek(0)
        data = self.fd.read()
        try:
            image = decompress(data, model=_options["model"], device=_options["device"])
        except ValueError as e:
            raise OSError(f"cannot decode .vq file: {str(e).splitlines()[0] if str(e) else e.__class__.__name__}") \
                from None
        if image.mode != self.mode or image.size != (self.state.xsize, self.state.ysize):
            raise OSError(f"decoded a {image.mode} {image.size[0]}x{image.size[1]} image, the header said "
                          f"{self.mode} {self.state.xsize}x{self.state.ysize}")
        self.set_as_raw(image.tobytes())
        return -1, 0


def _save(im: Image.Image, fp, filename) -> None:
    from . import compress

    info = dict(im.encoderinfo)
    options = {"quality": info.pop("quality", DEFAULT_QUALITY), "model": info.pop("model", _options["model"]),
               "device": info.pop("device", _options["device"])}
    for key in ("metadata", "alpha", "effort", "colour_layer"):
        if key in info:
            options[key] = info.pop(key)
    fp.write(compress(im, **options))


def register(model=None, device: str = "cpu") -> None:
    """Register the .vq format with Pillow (done on import). model/device: what Image.open(...).load()
    and Image.save use by default (model None: the shipped model a file names, or the default one)."""
    _options.update(model=model, device=device)
    Image.register_open(FORMAT, VqImageFile, _accept)
    Image.register_decoder("vqcodec", VqDecoder)
    Image.register_save(FORMAT, _save)
    Image.register_extension(FORMAT, EXTENSION)
    Image.register_mime(FORMAT, MIME)


register()
