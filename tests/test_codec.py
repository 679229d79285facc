"""Images <-> .vq bytes with a tiny random model: qualities, sizes, modes, errors, determinism."""

import numpy as np
import pytest
import torch
from PIL import Image

from vqcodec import container
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
        layer = {"colour_s"} if container.unpack(data).colour_block else set()
        assert set(tiny_codec.last_timings) == {"network_s", "prior_s", "entropy_s"} | layer
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
    ("I;16", "L", "reduced 16-bit samples to 8 bits"),
    ("RGBA", "RGB", "dropped a fully opaque alpha channel"),
    ("LA", "L", "dropped a fully opaque alpha channel"),
])
def test_other_modes_are_converted_with_a_note(tiny_codec, photo_like, mode, expect_mode, note):
    im = photo_like.convert("L").convert(mode) if mode in ("I;16", "LA") else photo_like.convert(mode)
    notes = []
    out = tiny_codec.decompress(tiny_codec.compress(im, 1, notes=notes))
    assert out.mode == expect_mode
    assert any(note in n for n in notes)


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_round_trips_exactly(tiny_codec, photo_like, mode):
    im = (photo_like.convert("L") if mode == "LA" else photo_like).convert(mode)
    alpha = np.zeros((im.height, im.width), np.uint8)
    alpha[:, 10:] = 255
    alpha[5:9, :] = np.arange(im.width) * 7 % 256
    im.putalpha(Image.fromarray(alpha, "L"))
    out = tiny_codec.decompress(tiny_codec.compress(im, 1))
    assert out.mode == mode and np.array_equal(np.asarray(out.getchannel("A")), alpha)


def test_alpha_is_dropped_only_when_asked_and_then_with_a_note(tiny_codec, photo_like):
    im = photo_like.convert("RGBA")
    im.putpixel((0, 0), (1, 2, 3, 0))
    notes = []
    out = tiny_codec.decompress(tiny_codec.compress(im, 1, notes=notes, alpha="drop"))
    assert out.mode == "RGB" and any("dropped the alpha channel" in n for n in notes)
    with pytest.raises(ValueError, match="alpha must be one of keep, drop"):
        tiny_codec.compress(im, 1, alpha="maybe")


def _with_metadata(photo_like, orientation=1):
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "vqcodec-test"
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF/></x:xmpmeta>'
    im = photo_like.copy()
    im.info.update({"icc_profile": icc, "exif": exif.tobytes(), "xmp": xmp})
    return im, icc, xmp


@pytest.mark.parametrize("choice,kept", [("all", {"icc", "exif", "xmp"}), ("none", set()), ("icc", {"icc"}),
                                         ("exif", {"exif"}), ("xmp", {"xmp"})])
def test_metadata_is_kept_as_asked(tiny_codec, photo_like, choice, kept):
    im, icc, xmp = _with_metadata(photo_like)
    out = tiny_codec.decompress(tiny_codec.compress(im, 1, metadata=choice))
    assert ({"icc", "exif", "xmp"} & {k.replace("icc_profile", "icc") for k in out.info}) == kept
    if "icc" in kept:
        assert out.info["icc_profile"] == icc
    if "xmp" in kept:
        assert out.info["xmp"] == xmp
    if "exif" in kept:
        exif = Image.Exif()
        exif.load(out.info["exif"])
        assert exif[0x010F] == "vqcodec-test"


def test_exif_orientation_is_applied_before_coding(tiny_codec, photo_like, tmp_path):
    """Regression (issue 10, item 3): a JPEG with orientation 6 decoded sideways."""
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    photo_like.save(path, exif=exif.tobytes(), quality=95)
    notes = []
    out = tiny_codec.decompress(tiny_codec.compress(path, 1, notes=notes))
    assert out.size == (photo_like.height, photo_like.width)
    assert any("applied EXIF orientation 6" in n for n in notes)
    kept = Image.Exif()
    kept.load(out.info["exif"])
    assert kept.get(0x0112, 1) == 1  # the decoded image is upright, so its EXIF says so


def test_an_animated_input_codes_its_first_frame_with_a_note(tiny_codec, photo_like, tmp_path):
    path = tmp_path / "anim.gif"
    frames = [photo_like.convert("P"), photo_like.transpose(Image.Transpose.FLIP_LEFT_RIGHT).convert("P")]
    frames[0].save(path, save_all=True, append_images=frames[1:])
    notes = []
    tiny_codec.compress(path, 1, notes=notes)
    assert any("2 frames; coded the first only" in n for n in notes)


def test_16_bit_rgb_is_reduced_with_a_note_and_its_depth_recorded(tiny_codec, tmp_path):
    import struct
    import zlib

    import vqcodec

    arr = (np.arange(12 * 10 * 3).reshape(12, 10, 3) * 541 % 65536).astype(">u2")
    raw = b"".join(b"\0" + arr[i].tobytes() for i in range(12))
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 10, 12, 16, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    (tmp_path / "deep.png").write_bytes(png)
    notes = []
    data = tiny_codec.compress(tmp_path / "deep.png", 1, notes=notes)
    assert vqcodec.read_info(data).depth == 16
    assert any("reduced 16-bit samples to 8 bits" in n for n in notes)


def test_a_lower_quality_decodes_from_the_same_file_as_its_own_file_would(tiny_codec, photo_like):
    """Progressive decode: at effort 0 (greedy stages) the first stages of a quality-3 file are a quality-1 and a
    quality-2 file's stages; at effort 1 (a beam search over all the file's stages) they decode too."""
    top = tiny_codec.compress(photo_like, 3, effort=0)
    for q in (1, 2):
        low = np.asarray(tiny_codec.decompress(top, quality=q))
        assert np.array_equal(low, np.asarray(tiny_codec.decompress(tiny_codec.compress(photo_like, q, effort=0))))
        beam = tiny_codec.decompress(tiny_codec.compress(photo_like, 3), quality=q)
        assert beam.size == photo_like.size
    with pytest.raises(ValueError, match="above this file's quality"):
        tiny_codec.decompress(tiny_codec.compress(photo_like, 1), quality=2)


def test_a_file_cut_at_a_stage_boundary_decodes_its_whole_stages(tiny_codec, photo_like):
    import vqcodec
    from vqcodec.container import TruncatedError

    data = tiny_codec.compress(photo_like, 3)
    h = vqcodec.read_info(data)
    cut = data[:len(data) - 4 * sum(h.stream_words[2])]
    with pytest.raises(TruncatedError, match=r"2 of 3 stages complete; decode them with quality 2 or lower"):
        tiny_codec.decompress(cut)
    assert np.array_equal(np.asarray(tiny_codec.decompress(cut, quality=2)),
                          np.asarray(tiny_codec.decompress(data, quality=2)))
    with pytest.raises(TruncatedError, match="quality 3 needs 3"):
        tiny_codec.decompress(cut, quality=3)


def test_tiled_coding_gives_the_pixels_of_whole_image_coding(tiny_codec, photo_like, monkeypatch):
    """Tiles bound memory; the networks see a margin around each tile, so there are no seams."""
    import vqcodec
    import vqcodec.codec as codec_module

    im = photo_like.resize((300, 180))
    whole = tiny_codec.compress(im, 3)
    monkeypatch.setattr(codec_module, "TILE", 32)      # 32 x 32 positions = 128 x 128 pixels with f = 4
    tiled = tiny_codec.compress(im, 3)
    assert vqcodec.read_info(tiled).num_tiles == 2 * 3 and vqcodec.read_info(whole).num_tiles == 1
    a, b = np.asarray(tiny_codec.decompress(whole), int), np.asarray(tiny_codec.decompress(tiled), int)
    assert np.abs(a - b).max() <= 1


def test_effort_picks_the_quantizers_search_and_one_decoder_reads_both(photo_like, tmp_path, run, tiny_model_dir):
    """--effort 0: the nearest code at each stage; 1 (the default): a beam search over the stages."""
    import vqcodec
    from vqcodec import DEFAULT_EFFORT, EFFORT_BEAMS
    from vqcodec.codec import VQCodec, _to_input, _to_pixels

    assert EFFORT_BEAMS == (1, 4) and DEFAULT_EFFORT == 1
    codec = VQCodec.random(TINY, seed=0)
    ae = codec.autoencoder
    image = photo_like.resize((64, 48))                                   # a multiple of 8: no padding
    x = _to_input(np.asarray(image)[None], "cpu")
    stages = codec.quality_plan(3)[0]
    with torch.no_grad():
        z = ae._flatten(ae.encoder(x))
        gen = torch.Generator().manual_seed(0)  # codebooks at the latents' scale, as training makes them
        for s, vq in enumerate(ae.rvq.stages):
            vq.codebook.copy_(z.mean(0) * (s == 0) + 2 * z.std(0) * 0.6 ** s * torch.randn(vq.codebook.shape, generator=gen))
    latent_error = {}
    for effort, beam in enumerate(EFFORT_BEAMS):
        idx = ae.encode_indices(x, stages, beam=beam)
        latent_error[effort] = float((z - ae.rvq.decode(idx.reshape(-1, stages))).pow(2).sum())
        data = codec.compress(image, 3, effort=effort, colour_layer=False)   # the file carries exactly those indices
        assert np.array_equal(np.asarray(codec.decompress(data)), _to_pixels(ae.decode_indices(idx))[0])
    assert latent_error[1] < latent_error[0]
    assert codec.compress(image, 3) == codec.compress(image, 3, effort=DEFAULT_EFFORT)
    with pytest.raises(ValueError, match="effort must be from 0 to 1, not 2"):
        codec.compress(photo_like, 3, effort=2)
    png = tmp_path / "in.png"
    photo_like.save(png)
    ok = run("compress", png, tmp_path / "e.vq", "-q", 2, "--effort", 0, "--model", tiny_model_dir)
    assert ok.exit_code == 0, ok.output
    assert vqcodec.read_info((tmp_path / "e.vq").read_bytes()).quality == 2
    bad = run("compress", png, tmp_path / "f.vq", "-q", 2, "--effort", 5, "--model", tiny_model_dir)
    assert bad.exit_code == 2 and "Invalid value for '--effort': 5 is not in the range 0<=x<=1." in bad.output
    assert not (tmp_path / "f.vq").exists()


def test_images_over_max_pixels_are_refused_before_decoding(tiny_codec, photo_like):
    data = tiny_codec.compress(photo_like, 1)
    with pytest.raises(ValueError, match="over the limit of 1000"):
        tiny_codec.decompress(data, max_pixels=1000)
    with pytest.raises(ValueError, match="over the limit of 1000"):
        tiny_codec.compress(photo_like, 1, max_pixels=1000)


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
    timed = {"network_s", "prior_s", "entropy_s"}
    assert timed <= set(tiny_codec.last_timings) <= timed | {"colour_s"}    # colour_s: deciding the layer
    singles = [tiny_codec.compress(im, 2) for im in images]
    decoded = tiny_codec.decompress_batch(files)
    for im, data, single, out in zip(images, files, singles, decoded):
        assert out.size == im.size and out.mode == im.mode
        one = np.asarray(tiny_codec.decompress(data), dtype=int)
        assert np.abs(np.asarray(out, dtype=int) - one).max() <= 1  # float decoder, batched or not
        assert tiny_codec.read_header(data) == tiny_codec.read_header(single)


def test_a_huge_png_is_refused_from_its_header_before_any_pixel_is_decoded(tiny_codec, tmp_path):
    """Regression (issue 9, item 6): a 12000 x 12000 PNG ended in Pillow's bomb warning and a 9 GB allocation."""
    import struct
    import zlib

    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 12000, 12000, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b""))
    (tmp_path / "huge.png").write_bytes(png)
    with pytest.raises(ImageError, match="12000x12000 = 144000000 pixels, over the limit of 134217728"):
        tiny_codec.compress(tmp_path / "huge.png", 1)


def test_a_model_with_stage_gains_saves_them_and_decodes_each_quality_with_its_own(photo_like):
    """The gains travel in the weights and leave the indices alone; each quality decodes with its own."""
    from vqcodec.config import ModelConfig

    cfg = ModelConfig.from_dict(TINY.to_dict() | {"name": "tiny-gains", "stage_gains": True})
    identity = VQCodec.random(cfg, seed=0)
    with torch.no_grad():
        identity.autoencoder.gains.latent_gain[0].fill_(0.25)       # only quality 1 (one stage) changes
    weights = VQCodec.serialize(identity.autoencoder, identity.prior)
    gained = VQCodec.from_bytes(weights, cfg)
    assert torch.equal(gained.autoencoder.gains.latent_gain, identity.autoencoder.gains.latent_gain)
    plain = VQCodec.random(cfg, seed=0)
    for quality, same in ((1, False), (3, True)):
        a, b = plain.compress(photo_like, quality), gained.compress(photo_like, quality)
        assert a[-40:] == b[-40:]                                   # the same indices (the header names the model)
        pixels_a, pixels_b = np.asarray(plain.decompress(a)), np.asarray(gained.decompress(b))
        assert np.array_equal(pixels_a, pixels_b) == same


def test_a_model_with_a_postfilter_saves_it_and_changes_only_the_pixels(photo_like):
    """The post-filter's weights travel in model.safetensors; the indices (and so the file's payload) stay."""
    from vqcodec.config import ModelConfig

    cfg = ModelConfig.from_dict(TINY.to_dict() | {"name": "tiny-pf", "postfilter": 4})
    made = VQCodec.random(cfg, seed=0)
    with torch.no_grad():
        made.autoencoder.postfilter.out.bias.fill_(0.1)             # +0.1: every pixel brighter
    loaded = VQCodec.from_bytes(VQCodec.serialize(made.autoencoder, made.prior), cfg)
    assert torch.equal(loaded.autoencoder.postfilter.out.bias, made.autoencoder.postfilter.out.bias)
    plain = VQCodec.random(cfg, seed=0)
    a, b = plain.compress(photo_like, 3), loaded.compress(photo_like, 3)
    assert a[-40:] == b[-40:]
    pixels_a = np.asarray(plain.decompress(a), np.int64)
    pixels_b = np.asarray(loaded.decompress(b), np.int64)
    assert (pixels_b >= pixels_a).all() and (pixels_b - pixels_a).max() >= 25


def test_a_stage_count_prior_decodes_lower_qualities_and_cut_files_with_the_files_count(photo_like):
    """prior_stage_count: the tables depend on the header's stages, so a quality-2 decode of a quality-3 file,
    whole or cut after stage 2, reads its two streams with the 3-stage tables, and gives the pixels of its
    first two stages."""
    import vqcodec
    from vqcodec.config import ModelConfig
    from vqcodec.container import sections

    from conftest import integer_prior

    cfg = ModelConfig.from_dict(TINY.to_dict() | {"name": "tiny-count", "prior_stage_count": True})
    base = VQCodec.random(cfg, seed=0)
    codec = VQCodec.from_bytes(VQCodec.serialize(base.autoencoder, integer_prior(cfg)), cfg)
    assert "conv1.count_bias" in codec.prior.t
    data = codec.compress(photo_like, 3, effort=0)
    info = vqcodec.read_info(data)
    cut = data[:len(data) - 4 * sum(info.stream_words[2])]
    low = np.asarray(codec.decompress(codec.compress(photo_like, 2, effort=0)))   # greedy: the same two stages
    assert np.array_equal(np.asarray(codec.decompress(data, quality=2)), low)
    assert np.array_equal(np.asarray(codec.decompress(cut, quality=2)), low)
    two = codec.compress(photo_like, 2, effort=0)
    streams = [sections(d, codec.read_header(d), 2).streams for d in (two, data)]
    assert streams[0][0] != streams[1][0]          # the same stage-0 indices, coded with other tables
