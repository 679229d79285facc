"""Coarse quality levels: stage 0 limited to a subset of its codes, coded with the prior's merged tables."""
import numpy as np
import pytest
import torch

from conftest import TINY, compress_at_thread_counts, integer_prior
from vqcodec.codec import VQCodec
from vqcodec.coding import CoarseAlphabet, IndexCoder
from vqcodec.config import ModelConfig

TINY_COARSE = ModelConfig(**{**TINY.to_dict(), "name": "tiny-coarse", "coarse_sizes": (3, 6)})


@pytest.fixture(scope="module")
def coarse_codec() -> VQCodec:
    return VQCodec.random(TINY_COARSE, seed=0)


def test_quality_plan_puts_the_coarse_levels_first():
    assert TINY_COARSE.num_qualities == 5
    assert [TINY_COARSE.quality_plan(q) for q in range(1, 6)] == [(1, 3), (1, 6), (1, None), (2, None), (3, None)]
    with pytest.raises(ValueError, match="quality must be from 1 to 5, not 6"):
        TINY_COARSE.quality_plan(6)


@pytest.mark.parametrize("sizes", [(6, 3), (3, 3), (1,), (16,)])
def test_coarse_sizes_must_rise_inside_the_codebook(sizes):
    with pytest.raises(ValueError, match="coarse_sizes must rise strictly"):
        ModelConfig(**{**TINY.to_dict(), "coarse_sizes": sizes})


def test_cells_are_nearest_allowed_codes_in_integers():
    cb = integer_prior(TINY).t["codebooks"][0]                   # (K, D) int64
    codes = torch.tensor([5, 0, 11, 7])
    alphabet = CoarseAlphabet.build(cb, codes)
    assert torch.equal(alphabet.cells[codes], torch.arange(4))   # an allowed code is its own cell
    dist = ((cb[:, None] - cb[codes][None]) ** 2).sum(2)         # (K, 4)
    assert torch.equal(dist.gather(1, alphabet.cells[:, None])[:, 0], dist.min(1).values)
    freqs = np.random.default_rng(0).integers(1, 1 << 16, (7, len(cb))).astype(np.float64)
    brute = np.stack([freqs[:, (alphabet.cells == j).numpy()].sum(1) for j in range(4)], 1)
    assert np.array_equal(alphabet.merge(freqs), brute)
    with pytest.raises(ValueError, match="distinct"):
        CoarseAlphabet.build(cb, torch.tensor([1, 1, 2]))


def coarse_indices(codes: torch.Tensor, h: int, w: int, q: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    indices = torch.randint(0, TINY.codebook_size, (h, w, q), generator=gen)
    indices[..., 0] = codes[torch.randint(0, len(codes), (h, w), generator=gen)]
    return indices


def test_coarse_stage_round_trips_and_never_costs_more_than_the_full_alphabet():
    prior = integer_prior(TINY)
    coder = IndexCoder(prior)
    alphabet = CoarseAlphabet.build(prior.t["codebooks"][0], torch.tensor([2, 9, 4, 13, 0]))
    indices = coarse_indices(alphabet.codes, 11, 14, 1)
    coarse_stats, full_stats = {}, {}
    payload = coder.encode(indices, stats=coarse_stats, coarse=alphabet)
    assert torch.equal(coder.decode(payload, 11, 14, coarse=alphabet).long(), indices)
    coder.encode(indices, stats=full_stats)
    # a cell's probability is at least that of each member, so each symbol costs at most as much
    assert coarse_stats["ideal_bits"] < full_stats["ideal_bits"]
    assert 8 * len(payload[0][0]) <= coarse_stats["ideal_bits"] + 64 + 16


def test_codes_outside_the_coarse_alphabet_are_refused():
    prior = integer_prior(TINY)
    alphabet = CoarseAlphabet.build(prior.t["codebooks"][0], torch.tensor([2, 9, 4]))
    indices = torch.full((3, 3, 1), 5)
    with pytest.raises(ValueError, match="outside the coarse alphabet"):
        IndexCoder(prior).encode(indices, coarse=alphabet)


def test_coarse_levels_use_only_their_codes_and_decode_what_was_encoded(coarse_codec, photo_like):
    x = torch.from_numpy(np.array(photo_like.crop((0, 0, 32, 24)))).permute(2, 0, 1)[None].float() / 255
    for quality, size in ((1, 3), (2, 6)):
        stages, alphabet = coarse_codec.quality_plan(quality)
        assert stages == 1 and torch.equal(alphabet.codes, coarse_codec.coarse_codes[:size])
        indices = coarse_codec.autoencoder.encode_indices(x, 1, alphabet.codes)
        assert set(indices.unique().tolist()) <= set(alphabet.codes.tolist())
        out = coarse_codec.decompress(coarse_codec.compress(photo_like.crop((0, 0, 32, 24)), quality))
        expected = (coarse_codec.autoencoder.decode_indices(indices)[0] * 255).round().to(torch.uint8)
        assert np.array_equal(np.asarray(out), expected.permute(1, 2, 0).numpy())


def test_coarse_files_are_the_same_bytes_whatever_the_thread_count(coarse_codec, photo_like):
    files = compress_at_thread_counts(coarse_codec, photo_like, 1)
    assert files[0] == files[1]


def test_a_model_whose_levels_need_coarse_codes_it_lacks_is_refused(coarse_codec):
    weights = VQCodec.serialize(coarse_codec.autoencoder, coarse_codec.prior)  # no coarse codes
    with pytest.raises(ValueError, match="coarse levels need 6 coarse codes"):
        VQCodec.from_bytes(weights, TINY_COARSE)
