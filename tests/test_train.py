"""`vqcodec train` end to end on a few tiny images and a tiny model: train, resume, export, use."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
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
    assert "another autoencoder step" not in again.output  # same step: its indices and prior are reused
    more = runner.invoke(cli, [a if a != "3" else "4" for a in args[:8]] + args[8:], catch_exceptions=False)
    assert more.exit_code == 0 and "resumed autoencoder from step 3" in more.output
    assert "indices.pt is from another autoencoder step: collecting the indices again" in more.output
    assert "prior.ckpt is from another autoencoder step: training the prior afresh" in more.output
    assert json.loads((model_dir / "training_report.json").read_text())["autoencoder_steps"] == 4
    # the same autoencoder with stage 0's own prior window and schedule: a new prior, the indices reused
    stage0 = json.dumps({**json.loads(TINY_CONFIG), "stage0_prior_kernel": 5, "stage0_prior_passes": 6})
    other = runner.invoke(cli, [a if a != "3" else "4" for a in args[:-1]] + [stage0], catch_exceptions=False)
    assert other.exit_code == 0 and "prior.ckpt has another prior config: training the prior afresh" in other.output
    assert "collecting the indices again" not in other.output
    assert json.loads((model_dir / "config.json").read_text())["stage0_prior_passes"] == 6

    vq = tmp_path / "x.vq"
    for quality in (1, 3):  # quality 1: the coarse level (stage 0 limited to 4 codes)
        ok = runner.invoke(cli, ["compress", str(data / "0.png"), str(vq), "-q", str(quality), "-f",
                                 "--model", str(model_dir)])
        assert ok.exit_code == 0, ok.output
        out = tmp_path / "x.png"
        ok = runner.invoke(cli, ["decompress", str(vq), str(out), "-f", "--model", str(model_dir)])
        assert ok.exit_code == 0 and Image.open(out).size == (90, 72)

    # a new model started from this one: its config is the base, --config changes the transform
    init = runner.invoke(cli, ["train", str(data), "--out", str(tmp_path / "run2"), "--steps", "1", "--batch-size",
                               "2", "--crop", "32", "--device", "cpu", "--autoencoder-only", "--init-from",
                               str(model_dir), "--config", '{"transform": "klt-hybrid"}'], catch_exceptions=False)
    assert init.exit_code == 0 and "started from the trained autoencoder of tiny-trained" in init.output
    ck = torch.load(tmp_path / "run2" / "autoencoder.ckpt", weights_only=True)
    assert ck["config"]["transform"] == "klt-hybrid" and list(ck["config"]["channels"]) == [8, 16]


def test_train_refuses_an_empty_folder(tmp_path):
    result = CliRunner().invoke(cli, ["train", str(tmp_path), "--out", str(tmp_path / "run")])
    assert result.exit_code == 1 and result.output == f"Error: no images found under {tmp_path}\n"


def test_no_dead_code_restart_in_the_last_steps():
    """A code restarted just before the export would ship untrained (vqf8-v4 continued to 12,000 steps restarted
    358 codes at its very last step and came out 1.25 dB worse at one stage)."""
    from vqcodec.train import restart_due

    due = [s for s in range(12000) if restart_due(s, 12000)]
    assert due[0] == 99 and due[1] == 199 and due[-1] == 11499
    assert not any(restart_due(s, 400) for s in range(400))


def test_learning_rate_warms_up_from_zero_and_again_after_a_resume():
    from vqcodec.train import cosine_lr
    fresh = [cosine_lr(s, 1000, 1e-3) for s in (0, 199, 200, 999)]
    assert fresh[0] < 1e-5 and fresh[1] == fresh[2] == 1e-3 and abs(fresh[3] - 1e-4) < 1e-8
    # a warm restart (resume with more steps) ramps up over 200 steps instead of jumping to the schedule
    assert cosine_lr(500, 2000, 1e-3, resumed_at=500) < 1e-5
    assert cosine_lr(699, 2000, 1e-3, resumed_at=500) == cosine_lr(699, 2000, 1e-3)


def photos(folder, count=3, size=(72, 90)):
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, size + (3,), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def test_a_pack_of_crops_trains_and_a_time_limit_stops_and_resumes(tmp_path):
    """The device workflow: a pack, autoencoder-only training without constriction, time limit, copies."""
    runner = CliRunner()
    pack = tmp_path / "packs" / "shard1"
    made = runner.invoke(cli, ["train", str(photos(tmp_path / "photos")), "--make-pack", str(pack),
                               "--pack-size-mb", "0.05", "--shard", "1", "--prior-crop", "48"])
    assert made.exit_code == 0, made.output
    info = json.loads((pack / "pack.json").read_text())
    crops = sorted(pack.glob("*.jpg"))
    assert info["crops"] == len(crops) > 3 and sum(p.stat().st_size for p in crops) <= 0.05 * 2**20
    assert {Image.open(p).size for p in crops} == {(48, 48)}
    again = runner.invoke(cli, ["train", str(tmp_path / "photos"), "--make-pack", str(pack)])
    assert again.exit_code == 1 and "is not empty" in again.output

    run, out = tmp_path / "run", tmp_path / "OUT"

    def train(steps, *extra, without_constriction=False):
        args = ["train", str(tmp_path / "packs"), "--out", str(run), "--steps", str(steps), "--batch-size", "2",
                "--crop", "32", "--device", "cpu", "--config", TINY_CONFIG, "--slim-checkpoints",
                "--copy-checkpoints-to", str(out), *extra]
        if not without_constriction:
            done = runner.invoke(cli, args, catch_exceptions=False)
            assert done.exit_code == 0, done.output
            return done.output
        # in a fresh interpreter where constriction cannot be imported, as on the device machine
        code = "import sys; sys.modules['constriction'] = None; from vqcodec.cli import main; main()"
        done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout + done.stderr

    first = train(2, "--autoencoder-only", without_constriction=True)
    assert "no prior and no export" in first and not (run / "vqf8-custom").exists()
    second = train(100000, "--time-limit", "1")  # stops cleanly, far from the end
    stopped = int(second.split("stopped at autoencoder step ")[1].split()[0])
    assert "resumed autoencoder from step 2 (no optimizer state" in second and 2 <= stopped < 100000
    assert (out / "autoencoder.ckpt").read_bytes() == (run / "autoencoder.ckpt").read_bytes()
    assert "optimizer" not in torch.load(out / "autoencoder.ckpt", weights_only=True)
    third = train(stopped + 2, "--autoencoder-only")
    assert f"resumed autoencoder from step {stopped}" in third and f"step {stopped + 2} " in third
    # the pack's crops (--prior-crop sized) serve the prior too
    train(stopped + 2, "--prior-crop", "48", "--prior-crops", "4", "--prior-steps", "3")
    assert (run / "vqf8-custom" / "model.safetensors").exists() and (out / "prior.ckpt").exists()


def test_large_checkpoints_are_split_and_joined_exactly(tmp_path):
    from vqcodec.train import load_checkpoint, save_checkpoint

    path = tmp_path / "run" / "x.ckpt"
    big = {"step": 7, "w": torch.randn(40_000), "n": torch.arange(5000)}
    save_checkpoint(path, big, copy_to=tmp_path / "copy", part_bytes=50_000)
    for folder in (tmp_path / "run", tmp_path / "copy"):
        parts = sorted(folder.iterdir())
        n = len(parts)
        assert n > 2 and [p.name for p in parts] == [f"x.ckpt.part{i + 1}of{n}" for i in range(n)]
        assert all(p.stat().st_size <= 50_000 for p in parts)
        back = load_checkpoint(folder / "x.ckpt", "cpu")
        assert back["step"] == 7 and torch.equal(back["w"], big["w"]) and torch.equal(back["n"], big["n"])
    # the parts are pieces of the bytes torch.save writes: joined in order, they are a plain checkpoint
    (tmp_path / "joined.ckpt").write_bytes(b"".join(p.read_bytes() for p in sorted((tmp_path / "run").iterdir())))
    assert torch.equal(torch.load(tmp_path / "joined.ckpt", weights_only=True)["w"], big["w"])

    # an older set copied beside a newer one (and an incomplete one) is ignored: the highest step wins
    save_checkpoint(tmp_path / "old" / "x.ckpt", {"step": 3, "w": torch.zeros(1)}, part_bytes=50_000)
    (tmp_path / "old" / "x.ckpt").replace(path)
    (tmp_path / "run" / "x.ckpt.part2of9").write_bytes(b"junk")
    assert load_checkpoint(path, "cpu")["step"] == 7
    # a smaller checkpoint replaces the parts with one file
    save_checkpoint(path, {"step": 8, "w": torch.zeros(1)}, part_bytes=50_000)
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["x.ckpt"] and load_checkpoint(path, "cpu")["step"] == 8
    assert load_checkpoint(tmp_path / "none.ckpt", "cpu") is None


def test_starting_from_a_model_may_add_stage_gains_but_not_drop_them():
    """start_from: a model without stage gains starts one with them (the identity at first); the reverse is refused."""
    import pytest

    from vqcodec.autoencoder import VQAutoencoder
    from vqcodec.config import ModelConfig
    from vqcodec.train import start_from

    torch.manual_seed(0)
    plain_cfg = ModelConfig(name="a", channels=(8, 16), latent_dim=4, codebook_size=16, num_stages=2)
    gains_cfg = ModelConfig.from_dict(plain_cfg.to_dict() | {"name": "b", "stage_gains": True})
    plain, gained = VQAutoencoder(plain_cfg).eval(), VQAutoencoder(gains_cfg).eval()
    start_from(gained, plain)
    z = torch.randn(1, 4, 3, 3)
    assert torch.equal(gained.decode(z, 1), plain.decode(z))
    with pytest.raises(ValueError, match="it has stage gains"):
        start_from(VQAutoencoder(plain_cfg), gained)


def test_starting_from_a_model_may_add_a_postfilter_but_not_drop_or_resize_it():
    """start_from: a post-filter (config postfilter) starts as the identity; a source's filter must fit."""
    import pytest

    from vqcodec.autoencoder import VQAutoencoder
    from vqcodec.config import ModelConfig
    from vqcodec.train import start_from

    torch.manual_seed(0)
    plain_cfg = ModelConfig(name="a", channels=(8, 16), latent_dim=4, codebook_size=16, num_stages=2)
    pf_cfg = ModelConfig.from_dict(plain_cfg.to_dict() | {"name": "b", "postfilter": 4})
    plain, filtered = VQAutoencoder(plain_cfg).eval(), VQAutoencoder(pf_cfg).eval()
    start_from(filtered, plain)
    z = torch.randn(1, 4, 3, 3)
    assert torch.equal(filtered.decode(z, 2), plain.decode(z))
    with pytest.raises(ValueError, match=r"its post-filter \(config postfilter 4\) differs from this model's \(0\)"):
        start_from(VQAutoencoder(plain_cfg), filtered)
    wider = ModelConfig.from_dict(pf_cfg.to_dict() | {"postfilter": 8})
    with pytest.raises(ValueError, match=r"\(config postfilter 4\) differs from this model's \(8\)"):
        start_from(VQAutoencoder(wider), filtered)


def test_a_stage_count_prior_learns_where_the_file_stops(tmp_path):
    """Grids per stage count (N, S, h, w, S): stage 0's index is 3 in files that code one stage and 12 in
    files that code more, so only the count tells them apart (one pass: no neighbour of stage 0 is known); the
    trained integer prior codes each count's grids in fewer bits than a prior without count biases can."""
    from vqcodec.autoencoder import VQAutoencoder
    from vqcodec.config import ModelConfig
    from vqcodec.train import integer_bits_per_index, train_prior

    torch.manual_seed(0)
    results = {}
    for with_count in (False, True):
        cfg = ModelConfig(name="tiny-count", channels=(8, 16), latent_dim=4, codebook_size=16, num_stages=3,
                          prior_hidden=8, prior_passes=1, prior_stage_count=with_count)
        ae = VQAutoencoder(cfg).eval()
        with torch.no_grad():
            ae.rvq.train()(torch.randn(512, 4))
        grids = torch.randint(0, 16, (60, 3, 8, 8, 3))   # 3 held out: crop i scored at count i + 1
        grids[:, 0, ..., 0], grids[:, 1:, ..., 0] = 3, 12
        out = tmp_path / str(with_count)
        out.mkdir()
        _, int_prior, report = train_prior(ae.eval(), grids, out, float_steps=150, qat_steps=30, lr=1e-2,
                                           log=lambda *a: None)
        results[with_count] = integer_bits_per_index(int_prior, grids[:3])[0]   # the held-out grids
        assert report["integer_bits_per_index"] == pytest.approx(results[with_count], rel=1e-9)
    # per position: 6 indices (1 + 2 + 3 stages); stages 1-2 uniform (3 x 4 bits) either way; stage 0 (3 of
    # them) costs 0.92 bits without the count (a 1:2 mixture), ~0 with it: 2.46 against 2.0 bits per index
    assert results[False] > 2.3 and results[True] < 2.15
