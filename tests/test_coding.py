"""The exact part: indices -> bytes -> indices, identical tables across thread counts, golden bytes."""
import numpy as np
import pytest
import torch

from vqcodec.coding import IndexCoder
from vqcodec.container import FormatError
from vqcodec.entropy import SymbolDecoder, SymbolEncoder
from vqcodec.prior import IntegerPrior, build_context, pass_masks

from conftest import TINY, integer_prior


@pytest.mark.parametrize("h,w,q", [(1, 1, 1), (1, 7, 2), (5, 3, 3), (16, 16, 3)])
def test_indices_round_trip_exactly(h, w, q):
    coder = IndexCoder(integer_prior(TINY))
    indices = torch.from_numpy(np.random.default_rng(h * w * q).integers(0, 16, (h, w, q)))
    streams = coder.encode(indices)
    assert len(streams) == q and all(len(stage) == 1 for stage in streams)
    assert torch.equal(coder.decode(streams, h, w).long(), indices)


def test_tiles_are_coded_on_their_own_and_round_trip():
    coder = IndexCoder(integer_prior(TINY))
    indices = torch.from_numpy(np.random.default_rng(4).integers(0, 16, (13, 10, 2)))
    tiles = [(y, x, min(y + 4, 13), min(x + 4, 10)) for y in range(0, 13, 4) for x in range(0, 10, 4)]
    streams = coder.encode(indices, tiles)
    assert [len(stage) for stage in streams] == [len(tiles)] * 2
    assert torch.equal(coder.decode(streams, 13, 10, tiles).long(), indices)
    # a tile's stream is what coding that tile alone gives: its context stops at the tile's edges
    y0, x0, y1, x1 = tiles[5]
    alone = coder.encode(indices[y0:y1, x0:x1])
    assert [stage[5] for stage in streams] == [stage[0] for stage in alone]


def test_prior_tables_identical_across_thread_counts():
    prior = integer_prior(TINY)
    rng = np.random.default_rng(3)
    ctx = torch.from_numpy(rng.integers(-127, 128, (2 * TINY.latent_dim + 1, 40, 33)))
    mask = pass_masks(40, 33, 4)[2]
    before = torch.get_num_threads()
    try:
        tables = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            tables.append(prior.frequencies(1, ctx, mask))
    finally:
        torch.set_num_threads(before)
    assert (tables[0] >= 1).all() and np.array_equal(tables[0], np.round(tables[0]))  # integer frequencies
    assert np.array_equal(tables[0], tables[1])


@pytest.mark.parametrize("kernel,passes", [(3, 4), (5, 6)])
def test_fast_prior_tables_equal_the_integer_definition(kernel, passes):
    """frequencies (float32 products, float64 requantisation) == frequencies_reference (int64, shifts)."""
    cfg = TINY.__class__(**{**TINY.to_dict(), "prior_kernel": kernel, "prior_passes": passes})
    for seed in (0, 1):
        prior = integer_prior(cfg, seed)
        assert set(prior.fast) == {"conv1", "conv2", "conv3"}
        rng = np.random.default_rng(seed)
        ctx = torch.from_numpy(rng.integers(-127, 128, (2 * cfg.latent_dim + 1, 19, 23)))
        for stage in range(cfg.num_stages):
            for mask in pass_masks(19, 23, passes):
                fast = prior.frequencies(stage, ctx, mask)
                assert fast.flags.c_contiguous and fast.dtype == np.float64
                assert np.array_equal(fast, prior.frequencies_reference(stage, ctx, mask))


def test_stage_count_biases_change_the_tables_and_equal_the_integer_definition():
    """prior_stage_count: the tables depend on how many stages the file codes; fast == reference per count."""
    cfg = TINY.__class__(**{**TINY.to_dict(), "prior_stage_count": True})
    prior = integer_prior(cfg)
    ctx = torch.from_numpy(np.random.default_rng(5).integers(-127, 128, (2 * cfg.latent_dim + 1, 9, 7)))
    mask = pass_masks(9, 7, 4)[1]
    for stage in range(cfg.num_stages):
        tables = [prior.frequencies(stage, ctx, mask, count) for count in range(stage + 1, cfg.num_stages + 1)]
        for count, table in zip(range(stage + 1, cfg.num_stages + 1), tables):
            assert np.array_equal(table, prior.frequencies_reference(stage, ctx, mask, count))
        assert all(not np.array_equal(tables[0], t) for t in tables[1:])
    with pytest.raises(ValueError, match="number of stages coded"):
        prior.frequencies(0, ctx, mask)
    with pytest.raises(ValueError, match="number of stages coded"):
        prior.frequencies(0, ctx, mask, cfg.num_stages + 1)


def test_stage_count_prior_decodes_a_prefix_with_the_files_count():
    """A lower quality decoded from a file's first stages uses the file's stage count, not the prefix's."""
    cfg = TINY.__class__(**{**TINY.to_dict(), "prior_stage_count": True})
    coder = IndexCoder(integer_prior(cfg))
    indices = torch.from_numpy(np.random.default_rng(9).integers(0, 16, (8, 6, 3)))
    streams = coder.encode(indices)
    assert torch.equal(coder.decode(streams, 8, 6).long(), indices)
    assert torch.equal(coder.decode(streams[:2], 8, 6, count=3).long(), indices[..., :2])
    assert coder.encode(indices[..., :2])[1] != streams[1]       # coded as a 2-stage file, stage 1 differs
    with pytest.raises(FormatError):
        coder.decode(streams[:2], 8, 6)                           # read as a 2-stage file: wrong tables


def test_prior_weights_must_agree_with_the_stage_count_config():
    cfg = TINY.__class__(**{**TINY.to_dict(), "prior_stage_count": True})
    tensors = integer_prior(cfg).tensors()
    with pytest.raises(ValueError, match="disagree on its stage-count biases"):
        IntegerPrior(TINY, tensors)
    del tensors["conv3.count_bias"]
    with pytest.raises(ValueError, match="disagree on its stage-count biases"):
        IntegerPrior(cfg, tensors)


def test_stage_0_with_its_own_window_and_schedule_round_trips():
    """stage0_prior_kernel / stage0_prior_passes: stage 0 coded in 6 passes with a 5x5 window, the others in
    the 2x2 schedule with 3x3; the tables of stage 0 depend on neighbours two positions away."""
    cfg = TINY.__class__(**{**TINY.to_dict(), "stage0_prior_kernel": 5, "stage0_prior_passes": 6})
    prior = integer_prior(cfg)
    assert cfg.prior_kernels == [5, 3, 3] and [cfg.stage_prior(t)[1] for t in range(3)] == [6, 4, 4]
    coder = IndexCoder(prior)
    indices = torch.from_numpy(np.random.default_rng(8).integers(0, 16, (11, 9, 3)))
    streams = coder.encode(indices)
    assert torch.equal(coder.decode(streams, 11, 9).long(), indices)
    # the (2, 2) lattice pass of stage 0 sees the (0, 0) lattice two positions away
    (masks, known), prev = coder._schedule(8, 8)[0], torch.zeros(cfg.latent_dim, 8, 8, dtype=torch.int64)
    tables = []
    for value in (0, 7):
        cur = prior.input_vectors(0, torch.full((8, 8), value))
        tables.append(coder._tables(0, prev, cur, known[1], masks[1]))
    assert not np.array_equal(*tables)
    # and a 3x3 stage's weights must be zero outside its window
    t = prior.tensors()
    t["conv1.weight"][1, 0, 0, 0, 0] = 1
    with pytest.raises(ValueError, match="outside its 3x3 window"):
        type(prior)(cfg, t)


@pytest.mark.parametrize("field,value", [("stage0_prior_kernel", 4), ("stage0_prior_passes", 3)])
def test_stage_0_prior_settings_are_checked(field, value):
    with pytest.raises(ValueError, match=field):
        TINY.__class__(**{**TINY.to_dict(), field: value})


def test_a_prior_outside_the_fast_paths_bound_uses_the_integer_definition():
    prior = integer_prior(TINY)
    t = prior.tensors()
    t["conv3.mult"] = t["conv3.mult"] << 30  # (acc + bias) * mult could pass 2**53
    big = type(prior)(TINY, t)
    assert big.fast == {}
    ctx = torch.from_numpy(np.random.default_rng(5).integers(-127, 128, (2 * TINY.latent_dim + 1, 8, 8)))
    mask = pass_masks(8, 8, 4)[1]
    assert np.array_equal(big.frequencies(0, ctx, mask), big.frequencies_reference(0, ctx, mask))


def test_prior_uses_context():
    prior = integer_prior(TINY)
    h = w = 6
    masks = pass_masks(h, w, 4)
    prev = torch.zeros(TINY.latent_dim, h, w, dtype=torch.int64)
    cur_a = prior.input_vectors(0, torch.zeros(h, w, dtype=torch.int64))
    cur_b = prior.input_vectors(0, torch.full((h, w), 5, dtype=torch.int64))
    known = masks[0][None].long()
    a = prior.frequencies(0, build_context(prior.to_input(prev), prior.to_input(cur_a), known), masks[1])
    b = prior.frequencies(0, build_context(prior.to_input(prev), prior.to_input(cur_b), known), masks[1])
    assert not np.array_equal(a, b)


def test_pass_masks_partition_the_grid():
    for passes in (1, 2, 4, 6):
        m = pass_masks(5, 7, passes)
        assert torch.equal(m.sum(0), torch.ones(5, 7, dtype=torch.long))
    six = pass_masks(8, 8, 6)  # the 4x4 lattice first: 1/16, 1/16, 1/8 of the positions; then the 2x2 schedule
    assert [int(m.sum()) for m in six] == [4, 4, 8, 16, 16, 16]
    assert six[0][0, 0] and six[1][2, 2] and six[2][0, 2] and six[2][2, 0] and six[3][1, 1] and six[4][0, 1]
    assert torch.equal(six[3:], pass_masks(8, 8, 4)[1:])


@pytest.mark.parametrize("kernel,passes,first", [(3, 4, (0, 0)), (5, 4, (0, 0)), (5, 6, (0, 0)), (3, 4, (5, 6))])
def test_integer_prior_computes_what_the_trained_network_does(kernel, passes, first):
    """IntegerPrior.from_float against the quantisation-aware PriorNet it came from, on every pass: the same
    windows (k x k, zero-padded at the edges; stage 0's own with `first`) and nearly the same probabilities
    (only roundings differ)."""
    import dataclasses

    from vqcodec.prior import IntegerPrior, PriorNet, training_contexts

    cfg = dataclasses.replace(TINY, prior_kernel=kernel, prior_passes=passes, stage0_prior_kernel=first[0],
                              stage0_prior_passes=first[1])
    torch.manual_seed(0)
    codebooks = [torch.randn(cfg.codebook_size, cfg.latent_dim) for _ in range(cfg.num_stages)]
    net = PriorNet(cfg, input_scale=16.0)
    indices = torch.randint(0, cfg.codebook_size, (1, 9, 11, cfg.num_stages))
    ctx, _, sel = training_contexts(net, codebooks, indices)                  # (P, S, 2D+1, h, w)
    net.calibrate(ctx)
    with torch.no_grad():
        probs = torch.softmax(net(ctx), dim=2)                                 # (P, S, K, h, w)
    int_prior = IntegerPrior.from_float(net, codebooks)
    coder = IndexCoder(int_prior)
    schedule = coder._schedule(9, 11)
    assert [len(m) for m, _ in schedule] == [cfg.stage_prior(t)[1] for t in range(cfg.num_stages)]
    prev = torch.zeros(cfg.latent_dim, 9, 11, dtype=torch.int64)
    for s in range(cfg.num_stages):
        cur = int_prior.input_vectors(s, indices[0, ..., s])
        masks, known = schedule[s]
        for p in range(len(masks)):
            freqs = coder._tables(s, prev, cur, known[p], masks[p])             # (N, K)
            got = torch.from_numpy(freqs / freqs.sum(1, keepdims=True))
            want = probs[p, s][:, masks[p]].t().double()                       # (N, K), row-major positions
            diff = (got - want).abs()  # a wrong window would be far off everywhere; a rounding, here and there
            assert got.shape == want.shape and diff.max() < 0.05 and diff.mean() < 0.002
        prev = prev + cur


def test_golden_payload_bytes():
    """Pins the coding order, the prior's arithmetic and the entropy coder. Regenerate only on purpose
    (and bump FORMAT_VERSION): print(payload.hex())."""
    coder = IndexCoder(integer_prior(TINY, seed=7))
    indices = torch.from_numpy(np.random.default_rng(11).integers(0, 16, (6, 5, 3)))
    streams = coder.encode(indices)
    assert [s[0].hex() for s in streams] == GOLDEN_STREAMS_HEX
    golden = [[bytes.fromhex(h)] for h in GOLDEN_STREAMS_HEX]
    assert torch.equal(coder.decode(golden, 6, 5).long(), indices)


GOLDEN_STREAMS_HEX = [
    "4ff4a6290a2131eccd8c9c4699a3b3db76020522",
    "dd9df92234b7a00b108d87e28324a022f10ad233",
    "e22453dec310a01e649f9354a8b62a5030922321779020bc0020c16d",
]


def test_truncated_missing_or_garbage_streams_are_refused():
    """Regression (issue 9, item 2): the decoder checks that each stream ends where its encoder ended."""
    coder = IndexCoder(integer_prior(TINY))
    indices = torch.from_numpy(np.random.default_rng(0).integers(0, 16, (8, 8, 3)))
    streams = coder.encode(indices)
    for bad in (streams[1][0][:-4], b"", b"\x00" * 4, b"\xff" * 8, streams[1][0] + bytes(8), streams[0][0]):
        broken = [streams[0], [bad], streams[2]]
        with pytest.raises(FormatError, match="corrupt .vq payload"):
            coder.decode(broken, 8, 8)


def test_entropy_coder_round_trip_and_overhead():
    rng = np.random.default_rng(0)
    freqs = rng.integers(1, 5000, (3000, 64))
    symbols = rng.integers(0, 64, 3000)
    enc = SymbolEncoder()
    enc.encode(symbols[:1000], freqs[:1000])
    enc.encode(symbols[1000:], freqs[1000:])
    data = enc.finish()
    dec = SymbolDecoder(data)
    out = np.concatenate([dec.decode(freqs[:1000]), dec.decode(freqs[1000:])])
    dec.finish()
    assert np.array_equal(out, symbols)
    p = freqs / freqs.sum(1, keepdims=True)
    ideal = -np.log2(p[np.arange(3000), symbols]).sum()
    assert 8 * len(data) < ideal * 1.005 + 64 + 16


def test_probability_cap_bounds_the_indices_per_word():
    """The most confident table still costs MIN_BITS_PER_INDEX per index: min_stream_words holds."""
    from vqcodec.container import min_stream_words
    from vqcodec.entropy import cap_probabilities

    freqs = np.ones((20000, 512))
    freqs[:, 3] = 1e12
    capped = cap_probabilities(freqs)
    assert capped[0, 3] == 511 * 31 and np.array_equal(capped[:, 4:], freqs[:, 4:])
    enc = SymbolEncoder()
    enc.encode(np.full(20000, 3), freqs)
    data = enc.finish()
    assert len(data) // 4 >= min_stream_words(20000)
    dec = SymbolDecoder(data)
    assert (dec.decode(freqs) == 3).all()
    dec.finish()


def test_table_memory_order_does_not_change_the_bytes():
    """constriction 0.5 reads a Fortran-ordered probability array as if it were C-ordered."""
    rng = np.random.default_rng(5)
    freqs = rng.integers(1, 1000, (50, 16)).astype(np.float64)
    symbols = rng.integers(0, 16, 50)
    out = []
    for table in (freqs, np.asfortranarray(freqs)):
        enc = SymbolEncoder()
        enc.encode(symbols, table)
        out.append(enc.finish())
    assert out[0] == out[1]


def test_constriction_normalises_integer_frequencies_itself():
    """The coder is handed integer frequencies; the bytes must equal those of normalised probabilities."""
    import constriction

    rng = np.random.default_rng(9)
    freqs = rng.integers(1, 1 << 16, (300, 64)).astype(np.float64)
    symbols = rng.integers(0, 64, 300).astype(np.int32)
    model = constriction.stream.model.Categorical(perfect=False)
    out = []
    for table in (freqs, freqs / freqs.sum(1, keepdims=True)):
        enc = constriction.stream.queue.RangeEncoder()
        enc.encode(symbols, model, table)
        out.append(enc.get_compressed().tobytes())
    assert out[0] == out[1]
