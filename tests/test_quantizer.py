import numpy as np
import pytest
import torch

from conftest import PLAIN
from vqcodec.autoencoder import VQAutoencoder
from vqcodec.config import ModelConfig
from vqcodec.quantizer import ResidualVQ, VectorQuantizer


def test_quantized_equals_output_from_indices():
    torch.manual_seed(0)
    rvq = ResidualVQ(num_stages=4, codebook_size=32, dim=8).train()
    z = torch.randn(500, 8)
    quantized, indices = rvq(z)
    assert torch.equal(torch.stack(quantized).sum(0), rvq.decode(indices))
    rvq.eval()
    assert torch.equal(rvq.encode(z, 4), rvq(z)[1])


def test_each_stage_reduces_the_residual():
    torch.manual_seed(0)
    rvq = ResidualVQ(num_stages=4, codebook_size=64, dim=4).train()
    z = torch.randn(2000, 4)
    for _ in range(5):
        rvq(z)
    errors = [float((z - rvq.decode(rvq.encode(z, q))).pow(2).mean()) for q in range(1, 5)]
    assert errors == sorted(errors, reverse=True) and errors[-1] < 0.5 * errors[0]


def test_kmeans_init_and_dead_code_restart():
    torch.manual_seed(0)
    vq = VectorQuantizer(codebook_size=16, dim=2, dead_threshold=0.5).train()
    z = torch.randn(400, 2) + 10
    vq(z)
    assert bool(vq.initialized)
    assert (vq.codebook - 10).abs().max() < 5  # k-means moved the codebook onto the data
    vq.cluster_size[:4] = 0.0
    assert vq.restart_dead_codes(z) == 4
    assert bool((vq.cluster_size >= 0.5).all())


def test_autoencoder_shapes_and_quantizer_dropout():
    cfg = ModelConfig(**{**PLAIN, "channels": (8, 16, 16), "latent_dim": 4, "codebook_size": 8, "num_stages": 3})
    model = VQAutoencoder(cfg)
    x = torch.rand(2, 3, 32, 24)
    recon, commit, indices, _ = model(x, torch.tensor([1, 3]))
    assert recon.shape == x.shape and indices.shape == (2, 4, 3, 3) and commit.ndim == 0
    model.eval()
    idx = model.encode_indices(x, 2)
    assert idx.shape == (2, 4, 3, 2)
    assert model.decode_indices(idx).shape == x.shape


def test_hybrid_transform_starts_as_its_linear_block_transform():
    """klt-hybrid: at init the latent is basis (x - mean) per 8x8 block and the decoder its transpose."""
    import torch.nn.functional as F

    from vqcodec.autoencoder import VQAutoencoder
    from vqcodec.config import ModelConfig

    cfg = ModelConfig(**{**PLAIN, "name": "t", "channels": (8, 16), "latent_dim": 6, "codebook_size": 16, "num_stages": 2, "transform": "klt-hybrid"})
    ae = VQAutoencoder(cfg)
    basis = torch.linalg.qr(torch.randn(48, 48))[0][:6]                          # (6, 48) orthonormal rows
    mean = torch.tensor([0.2, 0.5, 0.7])
    ae.set_linear_transform(basis, mean)
    x = torch.rand(2, 3, 16, 12)
    blocks = F.unfold(x - mean.view(1, 3, 1, 1), 4, stride=4)                    # (2, 48, 12)
    z = ae.encoder(x)
    assert torch.allclose(z.flatten(2), basis @ blocks, atol=1e-5)
    back = F.fold(basis.t() @ (basis @ blocks), (16, 12), 4, stride=4) + mean.view(1, 3, 1, 1)
    assert torch.allclose(ae.decoder(z), back, atol=1e-5)


def test_fit_klt_gives_orthonormal_components_strongest_first():

    from vqcodec.train import fit_klt

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:64, 0:64]
    images = [np.clip(np.stack([x * 3, y * 2, x + y], -1) + rng.normal(0, 20, (64, 64, 3)), 0, 255)
                  .astype(np.uint8) for _ in range(4)]  # (H, W, 3) uint8, as load_training_image gives
    basis, mean = fit_klt(images, 4, 10, crops=64, crop=32)
    assert basis.shape == (10, 48) and mean.shape == (3,)
    assert torch.allclose(basis @ basis.t(), torch.eye(10), atol=1e-4)
    assert (basis[0] > 0).all()  # the strongest component of smooth images: the block's mean brightness


def test_a_hybrid_started_from_a_conv_model_computes_what_it_does_and_its_linear_paths_learn():
    """start_from: conv -> klt-hybrid branches, linear paths at zero: same latents, same pixels at step 0."""
    import dataclasses

    from vqcodec.autoencoder import VQAutoencoder
    from vqcodec.config import ModelConfig
    from vqcodec.train import start_from

    torch.manual_seed(0)
    conv = VQAutoencoder(ModelConfig(**{**PLAIN, "name": "t", "channels": (8, 16), "latent_dim": 6, "codebook_size": 16, "num_stages": 2})).train()
    conv.rvq(torch.randn(256, 6))  # k-means init of the codebooks
    conv.eval()
    hybrid = VQAutoencoder(dataclasses.replace(conv.cfg, transform="klt-hybrid"))
    start_from(hybrid, conv)
    hybrid.eval()
    x = torch.rand(2, 3, 16, 12)
    assert torch.equal(hybrid.encoder(x), conv.encoder(x))
    idx = conv.encode_indices(x, 2)
    assert torch.equal(hybrid.encode_indices(x, 2), idx)
    assert torch.allclose(hybrid.decode_indices(idx), conv.decode_indices(idx), atol=1e-6)
    recon, _, _, _ = hybrid.train()(x, torch.tensor([2, 1]))
    (recon - x).pow(2).mean().backward()
    assert hybrid.decoder.linear.weight.grad.abs().sum() > 0 and hybrid.encoder.linear.weight.grad.abs().sum() > 0

    other = VQAutoencoder(dataclasses.replace(conv.cfg, latent_dim=8))
    with pytest.raises(ValueError, match="cannot start from t: its channels, latent, codebook or stages differ"):
        start_from(other, conv)
    with pytest.raises(ValueError, match="cannot start a conv model from a klt-hybrid one"):
        start_from(conv, hybrid)


def _random_rvq(stages=3, k=16, d=3, seed=0):
    torch.manual_seed(seed)
    rvq = ResidualVQ(stages, k, d)
    for s, vq in enumerate(rvq.stages):
        vq.codebook.copy_(torch.randn(k, d) * 0.6 ** s)
    return rvq


def test_beam_1_is_greedy_and_a_wider_beam_lowers_the_error():
    rvq = _random_rvq()
    z = torch.randn(300, 3)
    greedy = rvq.encode(z, 3)
    assert torch.equal(rvq.encode(z, 3, beam=1), greedy)
    err = lambda idx: (z - rvq.decode(idx)).pow(2).sum(1)                       # noqa: E731
    wide = rvq.encode(z, 3, beam=8)
    assert wide.shape == greedy.shape and wide.dtype == torch.int64
    assert float(err(wide).mean()) < 0.9 * float(err(greedy).mean())


def test_a_beam_as_wide_as_all_paths_finds_the_best_pair_of_codes():
    rvq = _random_rvq(stages=2, k=6)
    z = torch.randn(40, 3)
    pairs = torch.cartesian_prod(torch.arange(6), torch.arange(6))                  # (36, 2)
    sums = rvq.decode(pairs)                                                        # (36, D)
    best = pairs[torch.cdist(z, sums).argmin(1)]
    assert torch.equal(rvq.encode(z, 2, beam=36), best)


def test_beam_search_keeps_stage_0_to_the_coarse_codes_and_works_in_chunks():
    rvq = _random_rvq()
    z = torch.randn(50, 3)
    allowed = torch.tensor([1, 4, 9])
    idx = rvq.encode(z, 3, allowed, beam=4)
    assert set(idx[:, 0].tolist()) <= {1, 4, 9}
    assert torch.equal(rvq.beam_search(z, 3, 4, allowed, chunk=7), idx)


def test_a_code_cost_moves_the_encoders_choice_to_a_cheaper_code_that_is_nearly_as_close():
    vq = VectorQuantizer(2, 2)
    vq.codebook.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0]]))
    z = torch.tensor([[0.6, 0.0], [0.9, 0.0]])                     # squared distances: (0.36, 0.16), (0.81, 0.01)
    assert vq.nearest(z).tolist() == [1, 1]
    vq.code_cost.copy_(torch.tensor([0.0, 0.5]))                 # code 1 now costs 0.5 more
    assert vq.nearest(z).tolist() == [0, 1]                      # 0.36 < 0.66, but 0.81 > 0.51
    assert vq.nearest(z, allowed=torch.tensor([1])).tolist() == [1, 1]


def test_with_code_costs_beam_1_is_greedy_and_a_full_beam_minimises_error_plus_all_costs():
    rvq = _random_rvq(stages=2, k=6)
    for vq in rvq.stages:
        vq.code_cost.copy_(torch.rand(6) * 0.5)
    z = torch.randn(40, 3)
    assert torch.equal(rvq.encode(z, 2, beam=1), rvq.encode(z, 2))
    pairs = torch.cartesian_prod(torch.arange(6), torch.arange(6))                  # (36, 2)
    costs = rvq.stages[0].code_cost[pairs[:, 0]] + rvq.stages[1].code_cost[pairs[:, 1]]
    score = torch.cdist(z, rvq.decode(pairs)).pow(2) + costs[None]                 # (40, 36)
    assert torch.equal(rvq.encode(z, 2, beam=36), pairs[score.argmin(1)])
    assert not torch.equal(pairs[score.argmin(1)], pairs[torch.cdist(z, rvq.decode(pairs)).argmin(1)])


def test_stage_gains_start_as_the_identity_and_condition_on_each_samples_stage_count():
    """StageGains at init decodes exactly as a model without them; trained, each sample uses its own stage count."""
    from vqcodec.autoencoder import VQAutoencoder
    from vqcodec.config import ModelConfig

    torch.manual_seed(0)
    base = ModelConfig(**{**PLAIN, "name": "t", "channels": (8, 16), "latent_dim": 6, "codebook_size": 16, "num_stages": 3})
    plain = VQAutoencoder(base).eval()
    gained = VQAutoencoder(ModelConfig.from_dict(base.to_dict() | {"stage_gains": True})).eval()
    gained.load_state_dict(plain.state_dict(), strict=False)
    z = torch.randn(2, 6, 3, 4)
    assert torch.equal(gained.decode(z, torch.tensor([1, 3])), plain.decode(z))
    with torch.no_grad():
        gained.gains.latent_gain[0].fill_(0.5)                    # one stage decoded: latents halved
        gained.gains.film_offset[2].fill_(0.1)                    # three stages: an offset after the first layer
    out = gained.decode(z, torch.tensor([1, 3]))
    assert torch.allclose(out[0], plain.decode(z[:1] * 0.5)[0], atol=1e-6)
    assert not torch.allclose(out[1], plain.decode(z[1:])[0], atol=1e-4)
    assert torch.allclose(gained.decode(z[1:], 3), out[1:], atol=1e-6)  # an int applies to the whole batch
    assert torch.equal(gained.decode(z[1:]), gained.decode(z[1:], 3))  # unquantized: as all stages


def test_a_postfilter_starts_as_the_identity_and_conditions_on_each_samples_stage_count():
    """PostFilter's last layer is zero at init, so a model with it decodes as the model without; once its weights
    move, each sample's stage count picks its own hidden gains."""
    import pytest

    from vqcodec.autoencoder import VQAutoencoder
    from vqcodec.config import ModelConfig

    torch.manual_seed(0)
    base = ModelConfig(**{**PLAIN, "name": "t", "channels": (8, 16), "latent_dim": 6, "codebook_size": 16, "num_stages": 3, "stage_gains": True})
    plain = VQAutoencoder(base).eval()
    filtered = VQAutoencoder(ModelConfig.from_dict(base.to_dict() | {"postfilter": 4})).eval()
    filtered.load_state_dict(plain.state_dict(), strict=False)
    z = torch.randn(2, 6, 3, 4)
    assert torch.equal(filtered.decode(z, torch.tensor([1, 3])), plain.decode(z, torch.tensor([1, 3])))
    with torch.no_grad():
        filtered.postfilter.out.weight.normal_(0, 0.1)
        filtered.postfilter.gain[0].zero_()                      # one stage decoded: the hidden layer is off
        filtered.postfilter.offset[0].zero_()
    out = filtered.decode(z, torch.tensor([1, 3]))
    bias = filtered.postfilter.out.bias.view(3, 1, 1)
    assert torch.allclose(out[0], plain.decode(z[:1], 1)[0] + bias, atol=1e-6)
    assert not torch.allclose(out[1], plain.decode(z[1:], 3)[0], atol=1e-4)
    assert torch.equal(filtered.decode(z, torch.tensor([1, 3]), postfilter=False), plain.decode(z, torch.tensor([1, 3])))
    with pytest.raises(ValueError, match="postfilter must be from 0 to 64, not 65"):
        ModelConfig(**{**PLAIN, "postfilter": 65})


def test_refinement_grows_out_of_a_trained_model_exactly():
    """A klt-hybrid model with refinement started from one without decodes every VQ quality as it did."""
    from vqcodec.autoencoder import VQAutoencoder
    from vqcodec.config import ModelConfig
    from vqcodec.train import start_from

    base = ModelConfig(**{**PLAIN, "name": "t", "channels": (8, 16), "latent_dim": 6, "codebook_size": 16, "num_stages": 3, "transform": "klt-hybrid", "stage_gains": True, "postfilter": 4})
    torch.manual_seed(0)
    src = VQAutoencoder(base).train()
    with torch.no_grad():
        src.rvq(torch.randn(512, 6))
        for p in src.parameters():
            p.add_(0.01 * torch.randn_like(p))
    src.eval()
    grown_cfg = ModelConfig.from_dict({**base.to_dict(), "refine_levels": 2, "refine_dim": 5, "refine_hidden": 8})
    grown = VQAutoencoder(grown_cfg)
    basis = torch.linalg.qr(torch.randn(48, 11))[0].t()                       # (11, 3*4*4) orthonormal rows
    start_from(grown, src, (basis, torch.full((3,), 0.5)))
    grown.eval()
    x = torch.rand(2, 3, 16, 16)
    idx = src.encode_indices(x, 3)
    assert torch.equal(grown.encode_indices(x, 3), idx)
    for q in (1, 3):
        assert torch.allclose(grown.decode_indices(idx[..., :q]), src.decode_indices(idx[..., :q]), atol=1e-5)
    assert torch.equal(grown.encoder.linear.weight[6:], basis[6:].reshape(5, 3, 4, 4))
    with torch.no_grad():
        out, _, _, bits = grown(x, torch.tensor([4, 5]), torch.tensor([1, 3]), noise=False)
    assert out.shape == x.shape and bool((bits > 0).all())


def test_config_defaults_are_the_shipped_architecture_and_files_must_name_every_field():
    import json
    from pathlib import Path

    shipped = json.loads((Path(__file__).resolve().parents[1] / "models" / "vqf8-v13" / "config.json").read_text())
    assert ModelConfig.from_dict(shipped) == ModelConfig.from_dict({**ModelConfig().to_dict(), "name": "vqf8-v13"})
    partial = {k: v for k, v in shipped.items() if k != "postfilter"}
    with pytest.raises(ValueError, match=r"model config lacks \['postfilter'\]"):
        ModelConfig.from_dict(partial)
    assert ModelConfig.from_dict(partial, partial=True).postfilter == 16     # a recipe's "model": the defaults
