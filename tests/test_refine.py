"""The refinement above the VQ stages: its integer model, its tables and streams, its place in the container, and
a refined model's qualities end to end (a tiny random model)."""
import hashlib
import struct
import zlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from vqcodec import container
from vqcodec.codec import VQCodec
from vqcodec.config import ModelConfig
from vqcodec.container import FormatError, Header, TruncatedError, pack, sections, unpack
from vqcodec.entropy import TableSet
from vqcodec.refine import (REFINE_CAP_BITS, REQUANT_SHIFT, SCALE_HI, SCALE_LO, IntegerRefinement,
                            ScalarRefinement, gaussian_tables)

REFINED = ModelConfig(name="tiny-refined", channels=(8, 16), latent_dim=4, codebook_size=16, num_stages=3,
                      prior_hidden=8, transform="conv", stage_gains=True, postfilter=0, coarse_sizes=(),
                      prior_stage_count=False, stage0_prior_kernel=0, stage0_prior_passes=0, refine_levels=3,
                      refine_dim=4, refine_hidden=8, vq_qualities=2, refine_ladder=((1, 1), (2, 2), (3, 3)))


@pytest.fixture(scope="module")
def codec():
    return VQCodec.random(REFINED)


@pytest.fixture(scope="module")
def photo():
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:70, 0:90]
    smooth = np.stack([y * 3, x * 2, (x + y) * 1.5], -1)
    return Image.fromarray(np.clip(smooth + rng.normal(0, 12, smooth.shape), 0, 255).astype(np.uint8))


def integer_refinement(seed=0, dim=8, hidden=12, cond=4, levels=3, bases=3):
    torch.manual_seed(seed)
    net = ScalarRefinement(levels, dim, hidden, cond_dim=cond, bases=bases)
    with torch.no_grad():
        net.net[-1].weight.normal_(0, 0.1)
        net.base_log_scale.normal_(0, 0.5)
    return IntegerRefinement.from_float(net, 8.0, torch.randn(4, cond, 9, 9) * 2)


# --- the integer model --------------------------------------------------------------------------
def reference_tables(r: IntegerRefinement, x: torch.Tensor, base: int, level: int):
    """The integer definition, with int64 im2col products only (no float anywhere)."""
    def layer(x, name, lo, hi):
        w = r.t[f"{name}.weight"]                                              # (O, C, 3, 3) int64
        cols = F.unfold(F.pad(x.double(), (1, 1, 1, 1)), 3).round().to(torch.int64)   # (B, C*9, h*w), small ints
        acc = torch.einsum("ok,bkn->bon", w.flatten(1), cols).reshape(x.shape[0], -1, *x.shape[2:])
        acc = acc + r.t[f"{name}.bias"][None, :, None, None]
        return torch.clamp((acc * r.t[f"{name}.mult"][None, :, None, None] + (1 << (REQUANT_SHIFT - 1)))
                           >> REQUANT_SHIFT, lo, hi)
    y = layer(layer(layer(x, "conv1", 0, 255), "conv2", 0, 255), "conv3", -(1 << 24), 1 << 24)
    shift = (r.t["base_log_scale"][base - 1] - r.t["log_step"][level - 1])[None, :, None, None]
    return y[:, :r.dim], torch.clamp(y[:, r.dim:] + shift - SCALE_LO, 0, len(r.halves) - 1)


def test_the_integer_tables_are_the_integer_definition_at_any_thread_count():
    r = integer_refinement()
    x = torch.from_numpy(np.random.default_rng(1).integers(-127, 128, (2, 4, 11, 7)))
    want = reference_tables(r, x, 2, 3)
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            got = r.mean_table(x, 2, 3)
            assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    finally:
        torch.set_num_threads(threads)
    assert len(torch.unique(want[1])) > 3   # the test model spreads its values over several tables


def test_the_integer_model_follows_the_float_one():
    torch.manual_seed(0)
    net = ScalarRefinement(2, 6, 16, cond_dim=4, bases=2)
    with torch.no_grad():
        net.net[-1].weight.normal_(0, 0.1)
    zq = torch.randn(8, 4, 10, 10) * 2
    r = IntegerRefinement.from_float(net, 8.0, zq)
    mean_f, log_scale_f = net.mean_scale(torch.round(zq * 8) / 8, torch.ones(8, dtype=torch.long))
    mean_i, table = r.mean_table(torch.clamp(torch.round(zq * 8), -127, 127).long(), 1, 1)
    log_scale_i = (table + SCALE_LO).double() / 16 + r.step(1).log()[None, :, None, None]
    assert (mean_i.double() / 256 - mean_f).abs().mean() < 0.02 * mean_f.abs().mean() + 1e-3
    assert (log_scale_i - log_scale_f).abs().mean() < 0.1


def test_the_tables_are_pinned_and_capped():
    freqs, halves = gaussian_tables()
    assert len(halves) == SCALE_HI - SCALE_LO + 1 and len(freqs) == int((2 * halves + 1).sum())
    assert hashlib.sha256(freqs.astype("<i8").tobytes() + halves.astype("<i8").tobytes()).hexdigest() == TABLES_SHA256
    start = 0
    for h in halves:
        f = freqs[start:start + 2 * h + 1]
        start += 2 * h + 1
        assert f.min() >= 1 and f.max() <= (f.sum() - f.max()) * ((1 << REFINE_CAP_BITS) - 1)
        assert np.array_equal(f, f[::-1]) or abs(int(f.argmax()) - h) <= 1   # centred on 0


TABLES_SHA256 = "367a56071a0c806f8229a5871a66a1630e11fafd13e942f6ba8a35e4cd1a7ea1"


# --- streams --------------------------------------------------------------------------------------
def test_table_streams_round_trip_and_refuse_damage():
    r = integer_refinement()
    rng = np.random.default_rng(2)
    table = rng.integers(0, len(r.halves), 500)
    sym = np.array([rng.integers(-h, h + 1) for h in r.halves[table]])
    stream = r.table_set.encode(sym, table)
    assert np.array_equal(r.table_set.decode(stream, table), sym)
    ideal = r.table_set.bits(sym, table)
    assert ideal <= 8 * len(stream) <= ideal + 32 + 64 + 16
    with pytest.raises(ValueError):
        r.table_set.decode(stream[:-4], table)
    # (bytes after a stream's end are the container's to refuse: it knows each stream's length and CRC)


def test_golden_refinement_stream():
    """Pins the grouping order, the tables and the coder. Regenerate only with a format version bump."""
    tables = TableSet([np.array([1, 6, 1]), np.array([1, 3, 8, 3, 1])])
    sym, table = np.array([0, 1, -2, 0, -1, 2, 0]), np.array([0, 1, 1, 0, 0, 1, 1])
    assert tables.encode(sym, table).hex() == GOLDEN_STREAM_HEX
    assert np.array_equal(tables.decode(bytes.fromhex(GOLDEN_STREAM_HEX), table), sym)


GOLDEN_STREAM_HEX = "b28eb44500000000"


def test_refinement_coder_rebuilds_the_encoders_values_tile_by_tile(codec):
    rng = np.random.default_rng(3)
    indices = torch.from_numpy(rng.integers(0, 16, (13, 10, 2)))
    r = torch.from_numpy(rng.normal(0, 1, (REFINED.total_dim, 13, 10))).float()
    tiles = [(y, x, min(y + 8, 13), min(x + 8, 10)) for y in range(0, 13, 8) for x in range(0, 10, 8)]
    coder = codec.refiner
    streams, r_hat = coder.encode(r, indices, 2, tiles)
    assert len(streams) == len(tiles)
    assert torch.equal(coder.decode(streams, indices, 2, tiles), r_hat)
    assert (r_hat - r).abs().max() <= codec.refiner.refine.step(2).max() / 2 + 1e-4   # no value at a table's end
    with pytest.raises(FormatError, match="refinement stream"):
        coder.decode([streams[1], streams[0]] + streams[2:], indices, 2, tiles)


# --- the container ---------------------------------------------------------------------------------
REFINED_HEADER = Header("tiny-refined", bytes(range(8)), width=20, height=12, mode="RGB", quality=4, stages=2,
                        downsampling=8, tile=32, refine_level=2, refine_values=3)
ROWS = [[bytes(range(4))], [bytes(range(4, 12))], [bytes(range(12, 16))]]


def test_a_refined_header_round_trips_with_its_layout():
    data = pack(REFINED_HEADER, b"", b"", ROWS)
    fixed = struct.pack("<IIBBBBBH", 20, 12, 0, 8, 4, 2, 3, 32)
    head = b"VQIM" + bytes([3, 0x04, 12]) + b"tiny-refined" + bytes(range(8)) + fixed + bytes([2, 3])
    head += bytes([1, 2, 1]) + struct.pack("<III", *(zlib.crc32(row[0]) for row in ROWS))
    assert data == head + struct.pack("<I", zlib.crc32(head)) + bytes(range(16))
    h = unpack(data)
    assert (h.stages, h.refine_level, h.refine_values, h.complete_stages, h.refine_complete) == (2, 2, 3, 2, True)
    parts = sections(data, h, 2, refinement=True)
    assert parts.streams == ROWS[:2] and parts.refinement == ROWS[2]


def test_a_refined_file_cut_in_its_refinement_keeps_its_stages():
    data = pack(REFINED_HEADER, b"", b"", ROWS)
    h = unpack(data[:-4])
    assert (h.complete_stages, h.refine_complete) == (2, False)
    assert sections(data[:-4], h, 2).streams == ROWS[:2]
    with pytest.raises(TruncatedError, match="refinement of its 2 stages is incomplete"):
        sections(data[:-4], h, 2, refinement=True)


@pytest.mark.parametrize("level,values", [(0, 3), (2, 0)])
def test_a_refinement_needs_both_its_level_and_its_values(level, values):
    data = bytearray(pack(REFINED_HEADER, b"", b"", ROWS))
    pos = 7 + 12 + 8 + 15
    data[pos:pos + 2] = bytes([level, values])
    with pytest.raises(FormatError, match="refinement level or values"):
        unpack(bytes(data))


def test_every_single_bit_flip_of_a_refined_file_is_refused():
    data = pack(REFINED_HEADER, b"", b"", ROWS)
    for byte in range(len(data)):
        for bit in range(8):
            bad = bytearray(data)
            bad[byte] ^= 1 << bit
            with pytest.raises(FormatError):
                h = unpack(bytes(bad))
                sections(bytes(bad), h, h.stages, refinement=bool(h.refine_level))


# --- a refined model end to end ------------------------------------------------------------------------
def psnr(a, b):
    mse = ((np.asarray(a, float) - np.asarray(b, float)) ** 2).mean()
    return 10 * np.log10(255 ** 2 / mse)


def test_every_quality_round_trips_and_the_refined_ones_say_so(codec, photo):
    assert codec.qualities == [1, 2, 3, 4, 5]
    for q in codec.qualities:
        data = codec.compress(photo, q)
        h = unpack(data)
        k, b = (0, q) if q <= 2 else REFINED.refine_ladder[q - 3]
        assert (h.stages, h.refine_level, h.refine_values) == (b, k, REFINED.total_dim if k else 0)
        out = codec.decompress(data)
        assert out.size == photo.size
        assert np.array_equal(np.asarray(out), np.asarray(codec.decompress(data)))


def test_a_refined_image_runs_the_encoder_once_alone_or_in_tiles(codec, photo, monkeypatch):
    import vqcodec.codec as codec_module

    calls = []
    hook = codec.autoencoder.encoder.register_forward_hook(lambda *a: calls.append(1))
    try:
        codec.compress(photo, 5)
        assert len(calls) == 1
        monkeypatch.setattr(codec_module, "TILE", 32)      # 32 positions x 4 pixels: 3 x 2 tiles here
        calls.clear()
        big = Image.fromarray(np.random.default_rng(5).integers(0, 255, (200, 300, 3), dtype=np.uint8))
        assert unpack(codec.compress(big, 5)).num_tiles == 6 and len(calls) == 6
    finally:
        hook.remove()


def test_a_refined_file_decodes_its_stages_alone_and_refuses_other_levels(codec, photo):
    data = codec.compress(photo, 5)                       # refinement level 3 on 3 stages
    assert codec.decompress(data, quality=2).size == photo.size
    for q in (3, 4):
        with pytest.raises(ValueError, match=f"quality {q} cannot be decoded from a quality-5 file"):
            codec.decompress(data, quality=q)
    with pytest.raises(TruncatedError, match=r"refinement is incomplete; decode its stages with quality 2"):
        codec.decompress(data[:-4])
    with pytest.raises(ValueError, match="detail sample"):
        codec.decompress(data, detail="sample")


def test_a_refined_file_with_a_wrong_level_for_its_quality_is_refused(codec, photo):
    data = codec.compress(photo, 4)
    h = unpack(data)
    forged = Header(**{**{f: getattr(h, f) for f in ("model_name", "model_hash", "width", "height", "mode",
                                                     "quality", "stages", "downsampling", "tile", "depth")},
                       "refine_level": 1, "refine_values": h.refine_values})
    parts = sections(data, h, h.stages, refinement=True)
    bad = pack(forged, parts.metadata, parts.alpha, parts.streams + [parts.refinement])
    with pytest.raises(FormatError, match="refinement does not match the model"):
        codec.decompress(bad)


def test_a_tiled_refined_image_round_trips(codec, monkeypatch):
    import vqcodec.codec as codec_module

    monkeypatch.setattr(codec_module, "TILE", 32)        # 32 positions x 4 pixels: 3 x 2 tiles here
    rng = np.random.default_rng(5)
    big = Image.fromarray(rng.integers(0, 255, (200, 300, 3), dtype=np.uint8))
    data = codec.compress(big, 4)
    h = unpack(data)
    assert h.num_tiles == 6 and len(h.stream_words[-1]) == 6
    assert codec.decompress(data).size == big.size


def test_a_version_2_file_names_the_release_that_reads_it():
    from pathlib import Path

    data = (Path(__file__).parent / "golden" / "vqf8-v13_kodim23_crop_q3_format2.vq").read_bytes()
    with pytest.raises(FormatError, match=r"format version 2, which vqcodec 0\.13 reads .*pip install 'vqcodec<0\.14'"):
        container.unpack(data)


def test_a_16_bit_refined_model_folder_works_through_the_cli(codec, photo, tmp_path):
    """The export users get: float16 networks, no training buffers; compress, info and decompress."""
    import json

    from click.testing import CliRunner

    from vqcodec.cli import cli
    from vqcodec.training_cli import export_model

    folder = tmp_path / REFINED.name
    weights = VQCodec.serialize(codec.autoencoder, codec.prior, None, codec.refiner.refine, half=True)
    export_model(weights, REFINED, {}, folder)
    names = set(__import__("safetensors.torch", fromlist=["load"]).load(weights))
    assert not any(n.endswith(("embed_sum", "cluster_size")) or n.startswith("ae.refine.") for n in names)
    src, vq, out = tmp_path / "in.png", tmp_path / "out.vq", tmp_path / "out.png"
    photo.save(src)
    runner = CliRunner()
    assert runner.invoke(cli, ["compress", str(src), str(vq), "-q", "4", "--model", str(folder)]).exit_code == 0
    info = json.loads(runner.invoke(cli, ["info", str(vq), "--json"]).output)
    assert (info["format_version"], info["stages"], info["refinement_level"], info["refinement_complete"]) == (3, 2, 2, True)
    assert runner.invoke(cli, ["decompress", str(vq), str(out), "--model", str(folder)]).exit_code == 0
    assert Image.open(out).size == photo.size
    vq.write_bytes(vq.read_bytes()[:-4])
    result = runner.invoke(cli, ["decompress", str(vq), str(tmp_path / "cut.png"), "--model", str(folder)])
    assert result.exit_code == 1 and result.output.startswith("Error: truncated .vq file (its refinement is incomplete")


def test_the_decoder_phase_sees_refined_values_only_at_refined_levels():
    from vqcodec.autoencoder import VQAutoencoder
    from vqcodec.finetune import refined_input, refined_plans

    torch.manual_seed(0)
    model = VQAutoencoder(REFINED).eval()
    with torch.no_grad():
        model.refine.net[-1].weight.normal_(0, 0.05)
        model.rvq(torch.randn(512, REFINED.latent_dim))          # k-means init of the codebooks
    x = torch.rand(2, 3, 16, 16)
    zq = torch.randn(2, REFINED.latent_dim, 4, 4)
    stages, levels = torch.tensor([2, 3]), torch.tensor([0, 2])
    z, codes = refined_input(model, x, zq, stages, levels)
    d = REFINED.latent_dim
    assert torch.equal(z[0, :d], zq[0]) and not z[0, d:].any() and int(codes[0]) == 2
    assert int(codes[1]) == REFINED.decoder_level(2, 3) and z[1, d:].abs().sum() > 0
    assert len(refined_plans(REFINED)) == REFINED.num_stages * REFINED.refine_levels
    model.train()   # as in the decoder phase: no graph (and no backward) through the frozen encoder and refinement
    assert not refined_input(model, x, zq, stages, levels)[0].requires_grad


def test_a_refined_file_opens_in_pillow_and_gives_its_indices(codec, photo, tmp_path):
    import io

    from vqcodec import pillow
    from vqcodec.training_cli import export_model

    data = codec.compress(photo, 5)
    h = unpack(data)
    assert tuple(codec.read_indices(data).shape) == (*h.grid, h.stages)
    folder = tmp_path / REFINED.name
    export_model(codec.to_bytes(), REFINED, {}, folder)
    assert VQCodec.load(folder).model_hash == codec.model_hash
    pillow.register(model=folder)
    try:
        with Image.open(io.BytesIO(data)) as im:
            assert np.array_equal(np.asarray(im.convert("RGB")), np.asarray(codec.decompress(data).convert("RGB")))
    finally:
        pillow.register()


def test_a_layer_whose_sums_could_pass_2_to_the_24_runs_in_float64_and_stays_exact():
    t = integer_refinement(hidden=64).tensors()
    t["conv2.weight"] = torch.full_like(t["conv2.weight"], 127)       # 64 x 9 x 127 x 255 > 2**24
    t["conv2.mult"] = torch.ones_like(t["conv2.mult"])
    r = IntegerRefinement(t)
    assert r.w["conv1"].dtype == torch.float32 and r.w["conv2"].dtype == torch.float64
    x = torch.from_numpy(np.random.default_rng(4).integers(-127, 128, (1, 4, 6, 5)))
    want, got = reference_tables(r, x, 1, 1), r.mean_table(x, 1, 1)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_the_ladder_keeps_the_vq_prefix_then_the_refined_hull():
    from vqcodec.ladder import choose, upper_hull

    pts = [dict(k=0, b=1, bpp=0.1, psnr=25.0), dict(k=0, b=2, bpp=0.2, psnr=27.5), dict(k=0, b=3, bpp=0.3, psnr=28.4),
           dict(k=1, b=1, bpp=0.35, psnr=29.5), dict(k=1, b=2, bpp=0.40, psnr=29.4),     # dominated
           dict(k=2, b=1, bpp=0.6, psnr=31.5), dict(k=2, b=2, bpp=0.7, psnr=31.6),       # under the chord
           dict(k=3, b=2, bpp=1.0, psnr=33.5)]
    assert [(p["k"], p["b"]) for p in upper_hull(pts)] == [(0, 1), (0, 2), (1, 1), (2, 1), (3, 2)]
    assert choose(pts) == (2, ((1, 1), (2, 1), (3, 2)))


def test_the_ladder_skips_near_duplicate_rates_and_takes_points_just_under_the_hull():
    from vqcodec.ladder import choose

    pts = [dict(k=0, b=1, bpp=0.1, psnr=25.0), dict(k=0, b=2, bpp=0.2, psnr=27.0), dict(k=0, b=3, bpp=0.3, psnr=28.97),
           dict(k=1, b=1, bpp=0.4, psnr=31.0), dict(k=1, b=2, bpp=0.41, psnr=31.05), dict(k=2, b=1, bpp=0.6, psnr=33.0)]
    # VQ 3 is 0.03 dB under the hull: kept; (1, 2) is 2.5 % above (1, 1): skipped
    assert choose(pts) == (3, ((1, 1), (2, 1)))
