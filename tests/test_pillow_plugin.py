"""The Pillow plugin: `import vqcodec.pillow`, then Image.open / load / save know .vq files."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, UnidentifiedImageError

import vqcodec
import vqcodec.pillow

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def plugin(tiny_model_dir):
    """The plugin, decoding and encoding with the tiny model (restored to the defaults afterwards)."""
    vqcodec.pillow.register(model=tiny_model_dir)
    yield vqcodec.pillow
    vqcodec.pillow.register()


@pytest.fixture
def vq_file(tmp_path, photo_like, tiny_model_dir):
    path = tmp_path / "photo.vq"
    path.write_bytes(vqcodec.compress(photo_like, quality=2, model=tiny_model_dir))
    return path


def test_registered():
    assert Image.registered_extensions()[".vq"] == "VQ"
    assert Image.MIME["VQ"] == "image/x-vq"
    assert "VQ" in Image.OPEN and "VQ" in Image.SAVE


def test_open_reads_the_header_only(plugin, vq_file, monkeypatch):
    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded on open")
    monkeypatch.setattr(vqcodec, "decompress", no_decoding)
    with Image.open(vq_file) as im:
        assert (im.format, im.size, im.mode) == ("VQ", (37, 29), "RGB")
        assert im.info["quality"] == 2 and im.info["model"] == "tiny-test"
        assert im.get_format_mimetype() == "image/x-vq"


def test_open_does_not_import_torch(vq_file):
    code = ("import sys, json; import vqcodec.pillow; from PIL import Image; "
            f"im = Image.open({str(vq_file)!r}); "
            "print(json.dumps([im.format, im.size, im.mode, 'torch' in sys.modules]))")
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert json.loads(out.stdout) == ["VQ", [37, 29], "RGB", False]


def test_load_decodes(plugin, vq_file, tiny_model_dir):
    expected = vqcodec.decompress(vq_file.read_bytes(), model=tiny_model_dir)
    with Image.open(vq_file) as im:
        im.load()
        assert np.array_equal(np.asarray(im), np.asarray(expected))
    with Image.open(io.BytesIO(vq_file.read_bytes())) as im:  # from a file object too
        assert np.array_equal(np.asarray(im.convert("RGB")), np.asarray(expected))


def test_grayscale(plugin, tmp_path, photo_like, tiny_model_dir):
    path = tmp_path / "gray.vq"
    photo_like.convert("L").save(path, quality=1)
    with Image.open(path) as im:
        assert im.mode == "L" and im.size == (37, 29)
        assert np.array_equal(np.asarray(im), np.asarray(vqcodec.decompress(path.read_bytes(), model=tiny_model_dir)))


def test_save_encodes(plugin, tmp_path, photo_like, tiny_model_dir):
    path = tmp_path / "saved.vq"
    photo_like.save(path, quality=3)
    assert path.read_bytes() == vqcodec.compress(photo_like, quality=3, model=tiny_model_dir)
    buffer = io.BytesIO()
    photo_like.save(buffer, format="VQ", quality=1, model=tiny_model_dir)
    assert vqcodec.read_info(buffer.getvalue()).quality == 1
    with pytest.raises(ValueError, match="quality must be an integer from 1 to 3, not 90"):
        photo_like.save(tmp_path / "bad.vq", quality=90)


def test_bad_files_are_not_identified(tmp_path, vq_file):
    data = vq_file.read_bytes()
    for name, bad in (("magic-only.vq", b"VQIM"), ("garbage.vq", b"VQIM" + bytes(40)),
                      ("flipped.vq", data[:12] + bytes([data[12] ^ 1]) + data[13:]),
                      ("version.vq", data[:4] + b"\x09" + data[5:])):
        path = tmp_path / name
        path.write_bytes(bad)
        with pytest.raises(UnidentifiedImageError):
            Image.open(path)


def test_corrupt_payload_fails_on_load(plugin, tmp_path, vq_file):
    data = bytearray(vq_file.read_bytes())
    data[-3] ^= 0xFF  # the header is fine: open works, decoding fails
    path = tmp_path / "corrupt.vq"
    path.write_bytes(bytes(data))
    with Image.open(path) as im:
        assert im.size == (37, 29)
        with pytest.raises(OSError, match="cannot decode .vq file: corrupt"):
            im.load()


def test_other_formats_unaffected(tmp_path, photo_like):
    path = tmp_path / "x.png"
    photo_like.save(path)
    with Image.open(path) as im:
        assert im.format == "PNG"


@pytest.mark.parametrize("make", ["RGBA", "LA", "P+tRNS", "L", "RGB"])
def test_every_mode_compress_takes_opens_loads_and_resaves_with_its_metadata(plugin, tmp_path, tiny_model_dir, make):
    """Alpha (RGBA, LA, palette with tRNS) and ICC / EXIF / XMP come back through Image.open, as decompress gives."""
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x010F] = "vqcodec test camera"
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/">plugin</x:xmpmeta>'
    base = Image.new("RGBA", (40, 24), (200, 40, 40, 255))
    base.paste((20, 80, 200, 0), (0, 0, 20, 24))
    im = {"RGBA": base, "LA": base.convert("LA"), "L": base.convert("L"), "RGB": base.convert("RGB"),
          "P+tRNS": base.convert("RGB").convert("P")}[make]
    src = tmp_path / "src.png"
    kwargs = {"icc_profile": icc, "exif": exif.tobytes()} if make != "P+tRNS" else {"transparency": 0}
    im.save(src, **kwargs)
    data = vqcodec.compress(str(src), quality=2, model=tiny_model_dir)
    direct = vqcodec.decompress(data, model=tiny_model_dir)
    path = tmp_path / "f.vq"
    path.write_bytes(data)
    with Image.open(path) as opened:
        assert opened.mode == direct.mode
        opened.load()
        assert opened.tobytes() == direct.tobytes()
        for key in ("icc_profile", "exif"):
            assert opened.info.get(key) == direct.info.get(key)
        # as for any Pillow image: the ICC profile travels by itself, EXIF when passed on (exif=)
        opened.save(tmp_path / "copy.png", exif=opened.info.get("exif", b""))
    with Image.open(tmp_path / "copy.png") as copy:
        assert copy.mode == direct.mode
        if make != "P+tRNS":
            assert copy.info.get("icc_profile") == icc
            assert copy.getexif()[0x010F] == "vqcodec test camera"
