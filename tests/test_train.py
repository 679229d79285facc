"""`vqcodec train` end to end on a few tiny images and a tiny model: train, resume, export, use."""
import json

import numpy as np
from click.testing import CliRunner
from PIL import Image

from vqcodec.cli import cli

TINY_CONFIG = json.dumps({"channels": [8, 16], "latent_dim": 4, "codebook_size": 16, "num_stages": 2,
                          "prior_hidden": 8, "coarse_sizes": [4]})


def test_train_resume_export_and_use(tmp_path):
    data = tmp_path / "photos"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (72, 90, 3), dtype=np.uint8)).save(data / f"{i}.png")
    Image.fromarray(rng.integers(0, 255, (40, 50), dtype=np.uint8), "L").save(data / "gray.jpg")
    args = ["train", str(data), "--out", str(tmp_path / "run"), "--name", "tiny-trained", "--steps", "3",
            "--prior-steps", "3", "--batch-size", "2", "--crop", "32", "--prior-crop", "64", "--prior-crops", "4",
            "--device", "cpu", "--config", TINY_CONFIG]
    runner = CliRunner()
    first = runner.invoke(cli, args, catch_exceptions=False)
    assert first.exit_code == 0, first.output
    model_dir = tmp_path / "run" / "tiny-trained"
    report = json.loads((model_dir / "training_report.json").read_text())
    assert report["uniform_bits_per_index"] == 4.0 and report["coded_bits_per_index"] > 0
    again = runner.invoke(cli, args, catch_exceptions=False)  # everything is done: resumes and re-exports
    assert again.exit_code == 0 and "resumed autoencoder from step 3" in again.output

    vq = tmp_path / "x.vq"
    for quality in (1, 3):  # quality 1: the coarse level (stage 0 limited to 4 codes)
        ok = runner.invoke(cli, ["compress", str(data / "0.png"), str(vq), "-q", str(quality), "-f",
                                 "--model", str(model_dir)])
        assert ok.exit_code == 0, ok.output
        out = tmp_path / "x.png"
        ok = runner.invoke(cli, ["decompress", str(vq), str(out), "-f", "--model", str(model_dir)])
        assert ok.exit_code == 0 and Image.open(out).size == (90, 72)


def test_train_refuses_an_empty_folder(tmp_path):
    result = CliRunner().invoke(cli, ["train", str(tmp_path), "--out", str(tmp_path / "run")])
    assert result.exit_code == 1 and result.output == f"Error: no images found under {tmp_path}\n"


def test_learning_rate_warms_up_from_zero_and_again_after_a_resume():
    from vqcodec.train import cosine_lr
    fresh = [cosine_lr(s, 1000, 1e-3) for s in (0, 199, 200, 999)]
    assert fresh[0] < 1e-5 and fresh[1] == fresh[2] == 1e-3 and abs(fresh[3] - 1e-4) < 1e-8
    # a warm restart (resume with more steps) ramps up over 200 steps instead of jumping to the schedule
    assert cosine_lr(500, 2000, 1e-3, resumed_at=500) < 1e-5
    assert cosine_lr(699, 2000, 1e-3, resumed_at=500) == cosine_lr(699, 2000, 1e-3)
