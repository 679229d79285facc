"""The colour layer (vqcodec/colour.py, format flag bit 3): integer tables, golden stream bytes, exact
bilinear correction, the encoder's decision, and the layer in files (lower qualities, truncation, modes)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from vqcodec import colour, container
from vqcodec.codec import VQCodec
from vqcodec.container import TruncatedError

from conftest import TINY


def test_tables_are_integer_symmetric_geometric_and_capped():
    f = colour.table(128, 4)                                   # T = 64: symbols -64..64
    assert len(f) == 129 and np.array_equal(f, f[::-1]) and np.array_equal(f, np.round(f))
    assert list(f[64:68]) == [65536, 32768, 16384, 8192] and f.min() == 1
    steep = colour.table(1, 4)                                 # 2^16, 256, then 1s: capped at 31 x the rest
    assert steep[64] == 31 * (steep.sum() - steep[64])


# Pins the colour stream (docs/format.md, "Colour layer"): change only with the format.
GOLDEN_VALUES = np.array([[[0, 1, -1], [2, 0, 0]], [[-3, 0, 0], [0, 0, 5]], [[0, 0, 0], [0, 1, 0]]])
GOLDEN_DECAYS = (78, 128, 21)
GOLDEN_STREAM_HEX = "edaf46a9b20f91aa"


def test_golden_colour_stream():
    decays, stream = colour.encode(GOLDEN_VALUES, 4)
    assert decays == GOLDEN_DECAYS and stream.hex() == GOLDEN_STREAM_HEX
    assert np.array_equal(colour.decode(bytes.fromhex(GOLDEN_STREAM_HEX), (3, 2, 3), GOLDEN_DECAYS, 4), GOLDEN_VALUES)


def test_a_damaged_stream_is_refused():
    _, stream = colour.encode(GOLDEN_VALUES, 4)
    with pytest.raises(ValueError, match="does not decode"):
        colour.decode(stream[:-4], (3, 2, 3), GOLDEN_DECAYS, 4)
    rng = np.random.default_rng(1)
    for _ in range(200):             # random words: a ValueError, never constriction's AssertionError
        junk = rng.integers(0, 256, 4 * int(rng.integers(1, 6)), dtype=np.uint8).tobytes()
        try:
            colour.decode(junk, (3, 2, 3), GOLDEN_DECAYS, 4)
        except ValueError:
            pass


@pytest.mark.parametrize("log2_block,size", [(4, (37, 50)), (6, (100, 130)), (8, (300, 260)), (5, (1, 7))])
def test_the_correction_is_torchs_bilinear_exactly(log2_block, size):
    """Integers only, so any machine gives the same pixels; they equal float bilinear between block centres."""
    rng = np.random.default_rng(log2_block)
    h, w = size
    decoded = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    gh, gw = colour.grid_shape(w, h, log2_block)
    values = rng.integers(-9, 10, (3, gh, gw))
    out = colour.apply(decoded, values, log2_block, 4, band=5)
    assert np.array_equal(out, colour.apply(decoded, values, log2_block, 4))     # any band: the same pixels
    b = 1 << log2_block
    up = F.interpolate(torch.tensor(values * 4, dtype=torch.float64)[None], size=(gh * b, gw * b),
                       mode="bilinear", align_corners=False)[0, :, :h, :w].permute(1, 2, 0).numpy()
    assert np.array_equal(out, np.clip(decoded + np.floor(up + 0.5), 0, 255).astype(np.uint8))


def test_a_wide_image_is_corrected_in_small_bands(monkeypatch):
    """Memory follows the band, not the image: the bands are BAND_SAMPLES samples, a row at least."""
    seen = []
    real = colour._corrected_bands

    def spy(*args, **kwargs):
        for y0, y1, rows in real(*args, **kwargs):
            seen.append(rows.size)
            yield y0, y1, rows
    monkeypatch.setattr(colour, "_corrected_bands", spy)
    decoded = np.zeros((40, 30000, 3), dtype=np.uint8)
    values = np.ones((3, *colour.grid_shape(30000, 40, 4)), dtype=np.int64)
    out = colour.apply(decoded, values, 4, 4)
    assert (out == 4).all() and max(seen) <= max(colour.BAND_SAMPLES, 30000 * 3)
    fitted = colour.fit(out, decoded, 4, 4)
    assert (fitted == 1).all()


def test_fit_recovers_a_colour_shift_and_choose_keeps_it_only_where_it_pays():
    rng = np.random.default_rng(0)
    original = rng.integers(60, 200, (128, 192, 3), dtype=np.uint8)
    shifted = (original.astype(int) + np.array([12, -8, 0])).clip(0, 255).astype(np.uint8)
    values = colour.fit(original, shifted, 6, 4)
    assert values.shape == (3, 2, 3) and (values[0] == -3).all() and (values[1] == 2).all() and (values[2] == 0).all()
    assert np.array_equal(colour.apply(shifted, values, 6, 4), original)
    layer = colour.choose(original, shifted)
    assert layer is not None and np.array_equal(colour.decode(layer.stream, layer.values.shape, layer.decays,
                                                              layer.step), layer.values)
    assert colour.choose(original, original) is None                        # nothing to correct
    noisy = (original.astype(int) + rng.integers(-1, 2, original.shape)).clip(0, 255).astype(np.uint8)
    assert colour.choose(original, noisy) is None                           # no large-area error: not worth a byte


def test_fit_gives_the_least_squares_surface_not_the_block_means():
    """An error that is itself a bilinear surface of values q x step comes back as q: block means would flatten
    the alternating pattern (each block's mean mixes in its neighbours' values)."""
    rng = np.random.default_rng(1)
    decoded = rng.integers(80, 170, (200, 300, 3), dtype=np.uint8)
    q = np.where(np.indices((13, 19)).sum(0) % 2 == 0, 3, -3)[None].repeat(3, 0) * np.array([1, -1, 2])[:, None, None]
    original = colour.apply(decoded, q, 4, 4)                   # no clipping: |q x 4| <= 24 within 80..170
    assert np.array_equal(colour.fit(original, decoded, 4, 4), q)
    means = (original.astype(float) - decoded)[:192, :288].reshape(12, 16, 18, 16, 3).mean((1, 3))
    assert np.abs(np.rint(means / 4).transpose(2, 0, 1) - q[:, :12, :18]).max() >= 2


@pytest.fixture(autouse=True)
def any_rate(monkeypatch):
    """The tiny random model's files take more than colour.MAX_BPP: let the encoder try the layer anyway."""
    monkeypatch.setattr(colour, "MAX_BPP", float("inf"))


@pytest.fixture(scope="module")
def codec():
    torch.manual_seed(0)
    return VQCodec.random(TINY, seed=0)


def _flat_photo(mode="RGB"):
    """Smooth areas the tiny model gets the colour of wrong: what the layer is for."""
    y, x = np.mgrid[0:96, 0:160]
    arr = np.stack([120 + 60 * np.sin(x / 40), 80 + 40 * np.cos(y / 30), 150 + 0 * x], -1).astype(np.uint8)
    return Image.fromarray(arr).convert(mode)


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_files_carry_the_layer_and_it_lowers_the_error(codec, mode):
    image = _flat_photo(mode)
    data = codec.compress(image, 2)
    plain = codec.compress(image, 2, colour_layer=False)
    header = container.unpack(data)
    assert header.colour_block and len(header.colour_decays) == (3 if mode == "RGB" else 1)
    assert not container.unpack(plain).colour_block and len(plain) < len(data)
    ref = np.asarray(image, dtype=float)
    err = lambda d: float(((np.asarray(codec.decompress(d), dtype=float) - ref) ** 2).mean())
    assert err(data) < err(plain)
    out = codec.decompress(data)
    assert out.mode == mode and out.size == image.size
    import io
    assert container.read_bounded(io.BytesIO(data).read) == data          # the header counts the layer's bytes
    with pytest.raises(container.FormatError, match="4 unexpected bytes"):
        container.read_bounded(io.BytesIO(data + b"more").read)


def test_a_lower_quality_skips_the_layer_and_a_cut_layer_is_truncated(codec):
    image = _flat_photo()
    data = codec.compress(image, 3)
    header = container.unpack(data)
    assert header.colour_block
    plain = codec.compress(image, 3, colour_layer=False)
    low = codec.cfg.quality_plan(2)[0]
    assert np.array_equal(np.asarray(codec.decompress(data, quality=2)),
                          np.asarray(codec.decompress(plain, quality=2)))   # the stages alone, as without it
    cut = data[:-4]
    assert container.unpack(cut).colour_complete is False
    with pytest.raises(TruncatedError, match=r"its colour layer is incomplete; decode its stages with quality 2"):
        codec.decompress(cut)
    assert codec.decompress(cut, quality=2).size == image.size and low == 2


def test_above_max_bpp_the_encoder_does_not_try(codec, monkeypatch):
    monkeypatch.setattr(colour, "MAX_BPP", 0.0)
    assert not container.unpack(codec.compress(_flat_photo(), 2)).colour_block
    assert "colour_s" not in codec.last_timings                       # no decode spent on it


def test_detail_sample_keeps_the_layer_unless_it_draws_stages(codec):
    data = codec.compress(_flat_photo(), 3)
    assert container.unpack(data).colour_block and codec.cfg.quality_plan(3)[0] == 3
    coded = np.asarray(codec.decompress(data))
    same = np.asarray(codec.decompress(data, detail="sample", detail_stages=2))   # nothing to draw
    assert np.array_equal(same, coded)


def test_a_refined_quality_never_gets_a_layer():
    from test_refine import REFINED
    refined = VQCodec.random(REFINED)
    top = refined.qualities[-1]
    assert refined.cfg.refine_level(top)
    assert not container.unpack(refined.compress(_flat_photo(), top)).colour_block


def test_a_colour_stream_no_encoder_wrote_is_one_format_error(codec):
    """Regression (fuzzer, colour family): constriction's AssertionError on invalid data became a traceback."""
    from vqcodec.container import FormatError

    data = codec.compress(_flat_photo(), 2)
    header = container.unpack(data)
    parts = container.sections(data, header, header.stages, colour=True)
    outcomes = set()
    for bit in range(8 * len(parts.colour)):
        bad = bytearray(parts.colour)
        bad[bit // 8] ^= 1 << bit % 8
        rebuilt = container.pack(header, parts.metadata, parts.alpha, parts.streams, bytes(bad))  # CRCs made right
        try:
            codec.decompress(rebuilt)
            outcomes.add("decoded")
        except FormatError as e:
            assert "colour layer does not decode" in str(e)
            outcomes.add("refused")
    assert "refused" in outcomes


def test_the_command_line_turns_the_layer_off(tmp_path, tiny_model_dir):
    from click.testing import CliRunner

    from vqcodec.cli import cli

    src = tmp_path / "flat.png"
    _flat_photo().save(src)
    sizes = {}
    for flag in ("--colour-layer", "--no-colour-layer"):
        out = tmp_path / f"{flag}.vq"
        res = CliRunner().invoke(cli, ["compress", str(src), str(out), "-q", "2", "--model", str(tiny_model_dir), flag])
        assert res.exit_code == 0, res.output
        sizes[flag] = bool(container.unpack(out.read_bytes()).colour_block)
    assert sizes == {"--colour-layer": True, "--no-colour-layer": False}
    import json
    res = CliRunner().invoke(cli, ["info", str(tmp_path / "--colour-layer.vq"), "--json"])
    info = json.loads(res.output)
    header = container.unpack((tmp_path / "--colour-layer.vq").read_bytes())
    assert info["colour_layer"] == f"{1 << header.colour_block} px blocks, step {header.colour_step}"
    assert info["colour_layer_complete"] is True


def test_the_pillow_plugin_passes_colour_layer(tmp_path, tiny_model_dir):
    import vqcodec.pillow

    vqcodec.pillow.register(model=tiny_model_dir)
    try:
        for flag in (True, False):
            path = tmp_path / f"{flag}.vq"
            _flat_photo().save(path, quality=2, colour_layer=flag)
            assert bool(container.unpack(path.read_bytes()).colour_block) is flag
    finally:
        vqcodec.pillow.register()
