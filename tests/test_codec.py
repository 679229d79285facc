"""Images <-> .vq bytes with a tiny random model: qualities, sizes, modes, errors, determinism."""

import numpy as np
import pytest
import torch
from PIL import Image

from vqcodec.codec import ModelMismatchError, VQCodec
from vqcodec.container import FormatError
from vqcodec.images import ImageError

from conftest import TINY, compress_at_thread_counts


def test_every_quality_round_trips(tiny_codec, photo_like):
    sizes = []
    for q in tiny_codec.qualities:
        data = tiny_codec.compress(photo_like, q)
        out = tiny_codec.decompress(data)
        assert out.size == photo_like.size and out.mode == "RGB"
        assert set(tiny_codec.last_timings) == {"network_s", "prior_s", "entropy_s"}
        sizes.append(len(data))
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]


@pytest.mark.parametrize("quality", [0, 4, -1, 2.5, True, "2"])
def test_quality_out_of_range_is_a_value_error(tiny_codec, photo_like, quality):
    with pytest.raises(ValueError, match="quality must be an integer from 1 to 3"):
        tiny_codec.compress(photo_like, quality)


@pytest.mark.parametrize("size", [(1, 1), (1, 17), (9, 1), (5, 4), (33, 2)])
def test_any_size(tiny_codec, size):
    im = Image.new("RGB", size, (120, 30, 200))
    out = tiny_codec.decompress(tiny_codec.compress(im, 2))
    assert out.size == size


def test_grayscale_stays_grayscale(tiny_codec, photo_like):
    out = tiny_codec.decompress(tiny_codec.compress(photo_like.convert("L"), 1))
    assert out.mode == "L" and out.size == photo_like.size


@pytest.mark.parametrize("mode,expect_mode,note", [
    ("P", "RGB", "converted P to RGB"),
    ("CMYK", "RGB", "converted CMYK to RGB"),
    ("I;16", "L", "converted I;16 to 8-bit grayscale"),
    ("RGBA", "RGB", "dropped a fully opaque alpha channel"),
    ("LA", "L", "dropped a fully opaque alpha channel"),
])
def test_other_modes_are_converted_with_a_note(tiny_codec, photo_like, mode, expect_mode, note):
    im = photo_like.convert("L").convert(mode) if mode in ("I;16", "LA") else photo_like.convert(mode)
    notes = []
    out = tiny_codec.decompress(tiny_codec.compress(im, 1, notes=notes))
    assert out.mode == expect_mode
    assert any(note in n for n in notes)


def test_transparency_is_refused_clearly(tiny_codec, photo_like):
    im = photo_like.convert("RGBA")
    im.putpixel((0, 0), (1, 2, 3, 0))
    with pytest.raises(ImageError, match="transparency"):
        tiny_codec.compress(im, 1)


def test_same_bytes_whatever_the_thread_count(tiny_codec, photo_like):
    out = compress_at_thread_counts(tiny_codec, photo_like, 3)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        decoded_2 = np.asarray(tiny_codec.decompress(out[0]))
        torch.set_num_threads(1)
        decoded_1 = np.asarray(tiny_codec.decompress(out[0]))
    finally:
        torch.set_num_threads(before)
    assert out[0] == out[1]
    assert decoded_1.shape == decoded_2.shape


def test_decoding_twice_gives_the_same_pixels(tiny_codec, photo_like):
    data = tiny_codec.compress(photo_like, 3)
    assert np.array_equal(np.asarray(tiny_codec.decompress(data)), np.asarray(tiny_codec.decompress(data)))


def test_file_from_another_model_is_refused_naming_it(tiny_codec, photo_like):
    other = VQCodec.random(TINY, seed=1)
    data = other.compress(photo_like, 1)
    with pytest.raises(ModelMismatchError, match=f"made with model {TINY.name} \\(weights {other.model_hash.hex()}\\)"):
        tiny_codec.decompress(data)


def test_corrupt_payload_is_a_format_error(tiny_codec, photo_like):
    data = bytearray(tiny_codec.compress(photo_like, 2))
    data[-3] ^= 0xFF
    with pytest.raises(FormatError, match="checksum"):
        tiny_codec.decompress(bytes(data))


def test_path_input(tiny_codec, photo_like, tmp_path):
    path = tmp_path / "in.png"
    photo_like.save(path)
    assert tiny_codec.compress(path, 1) == tiny_codec.compress(photo_like, 1)
    with pytest.raises(ImageError, match="no such file"):
        tiny_codec.compress(tmp_path / "missing.png", 1)
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(ImageError, match="cannot read"):
        tiny_codec.compress(tmp_path / "text.png", 1)


def test_exported_model_loads_back_identically(tiny_codec, tiny_model_dir, photo_like):
    loaded = VQCodec.load(tiny_model_dir)
    assert loaded.model_hash == tiny_codec.model_hash
    data = tiny_codec.compress(photo_like, 2)
    assert loaded.compress(photo_like, 2) == data
    assert np.array_equal(np.asarray(loaded.decompress(data)), np.asarray(tiny_codec.decompress(data)))


def test_batches_match_single_images(tiny_codec, photo_like):
    images = [photo_like, photo_like.transpose(Image.Transpose.ROTATE_90), photo_like.convert("L"), photo_like]
    files = tiny_codec.compress_batch(images, 2)
    assert set(tiny_codec.last_timings) == {"network_s", "prior_s", "entropy_s"}
    singles = [tiny_codec.compress(im, 2) for im in images]
    decoded = tiny_codec.decompress_batch(files)
    for im, data, single, out in zip(images, files, singles, decoded):
        assert out.size == im.size and out.mode == im.mode
        one = np.asarray(tiny_codec.decompress(data), dtype=int)
        assert np.abs(np.asarray(out, dtype=int) - one).max() <= 1  # float decoder, batched or not
        assert tiny_codec.read_header(data)[0] == tiny_codec.read_header(single)[0]
