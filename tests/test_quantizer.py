import torch

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
    cfg = ModelConfig(channels=(8, 16, 16), latent_dim=4, codebook_size=8, num_stages=3)
    model = VQAutoencoder(cfg)
    x = torch.rand(2, 3, 32, 24)
    recon, commit, indices = model(x, torch.tensor([1, 3]))
    assert recon.shape == x.shape and indices.shape == (2, 4, 3, 3) and commit.ndim == 0
    model.eval()
    idx = model.encode_indices(x, 2)
    assert idx.shape == (2, 4, 3, 2)
    assert model.decode_indices(idx).shape == x.shape
