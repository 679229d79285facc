"""Shared fixtures: tiny randomly initialised models (fast), and test images."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vqcodec.codec import VQCodec
from vqcodec.config import ModelConfig
from vqcodec.prior import IntegerPrior, exp_table
from vqcodec.training_cli import export_model

# The plain design (conv transform, no gains, post-filter, coarse levels or stage-count prior): what the
# tiny test models build on; ModelConfig's defaults are the shipped architecture.
PLAIN = dict(transform="conv", stage_gains=False, postfilter=0, coarse_sizes=(), prior_stage_count=False,
             stage0_prior_kernel=0, stage0_prior_passes=0)
TINY = ModelConfig(name="tiny-test", channels=(8, 16), latent_dim=4, codebook_size=16, num_stages=3,
                   prior_hidden=8, prior_passes=4, **PLAIN)


def integer_prior(cfg: ModelConfig, seed: int = 0) -> IntegerPrior:
    """An IntegerPrior made from integers alone (no float maths), so its tables are the same everywhere."""
    rng = np.random.default_rng(seed)
    s, k, d, hdn = cfg.num_stages, cfg.codebook_size, cfg.latent_dim, cfg.prior_hidden
    c_in = 2 * d + 1
    ints = lambda lo, hi, shape: torch.from_numpy(rng.integers(lo, hi, shape)).to(torch.int64)
    t = {"codebooks": ints(-400, 400, (s, k, d))}
    kk = max(cfg.prior_kernels)
    for name, shape in (("conv1", (hdn, c_in, kk, kk)), ("conv2", (hdn, hdn, 1, 1)), ("conv3", (k, hdn, 1, 1))):
        t[f"{name}.weight"] = ints(-127, 128, (s,) + shape)
        t[f"{name}.bias"] = ints(-2000, 2000, (s, shape[0]))
        t[f"{name}.mult"] = ints(1 << 14, 1 << 17, (s, shape[0]))
    for stage, kt in enumerate(cfg.prior_kernels):  # a stage with a smaller window: zeros around it
        o = (kk - kt) // 2
        window = t["conv1.weight"][stage, :, :, o:o + kt, o:o + kt].clone()
        t["conv1.weight"][stage] = 0
        t["conv1.weight"][stage, :, :, o:o + kt, o:o + kt] = window
    if cfg.prior_stage_count:  # a bias per (stage, stages coded), large enough to change the tables
        t["conv1.count_bias"] = ints(-3000, 3000, (s, s, hdn))
        t["conv3.count_bias"] = ints(-3000, 3000, (s, s, k))
    t["exp_table"] = torch.from_numpy(exp_table())
    return IntegerPrior(cfg, t)


def compress_at_thread_counts(codec: VQCodec, image, quality: int, counts=(1, 2)) -> list[bytes]:
    """The same compression under each torch thread count (restored afterwards)."""
    before = torch.get_num_threads()
    try:
        files = []
        for threads in counts:
            torch.set_num_threads(threads)
            files.append(codec.compress(image, quality))
    finally:
        torch.set_num_threads(before)
    return files


@pytest.fixture(scope="session")
def tiny_codec() -> VQCodec:
    torch.set_num_threads(1)
    return VQCodec.random(TINY, seed=0)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_codec):
    path = tmp_path_factory.mktemp("models") / TINY.name
    weights = VQCodec.serialize(tiny_codec.autoencoder, tiny_codec.prior)
    export_model(weights, TINY, {}, path)
    return path


@pytest.fixture
def photo_like() -> Image.Image:
    """A small RGB image with smooth gradients, edges and noise (37 x 29: not a multiple of anything)."""
    rng = np.random.default_rng(1)
    y, x = np.mgrid[0:29, 0:37]
    arr = np.stack([x * 6, y * 8, (x + y) * 3], -1) + rng.normal(0, 8, (29, 37, 3))
    arr[10:20, 5:15] = [250, 30, 30]
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


@pytest.fixture
def run():
    """The vqcodec command in-process (click's CliRunner): run("compress", a, b, "-q", 1) -> Result."""
    from click.testing import CliRunner

    from vqcodec.cli import cli

    runner = CliRunner()

    def invoke(*args, input=None):
        return runner.invoke(cli, [str(a) for a in args], input=input, catch_exceptions=False)
    return invoke


@pytest.fixture
def files(tmp_path, photo_like, tiny_model_dir, run):
    """A photo-like PNG and its quality-2 .vq file under the tiny model -> (png, vq, model folder)."""
    png = tmp_path / "in.png"
    photo_like.save(png)
    vq = tmp_path / "in.vq"
    result = run("compress", png, vq, "-q", 2, "--model", tiny_model_dir)
    assert result.exit_code == 0, result.output
    return png, vq, tiny_model_dir


