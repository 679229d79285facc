"""`vqcodec train` end to end on a few tiny images and a tiny model: train, resume, export, use."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from conftest import PLAIN
from vqcodec.cli import cli

TINY_MODEL = {"channels": [8, 16], "latent_dim": 4, "codebook_size": 16, "num_stages": 2, "prior_hidden": 8,
              "coarse_sizes": [4], "transform": "conv", "stage_gains": False, "postfilter": 0,
              "prior_stage_count": False, "stage0_prior_kernel": 0, "stage0_prior_passes": 0}


def recipe(tmp_path, data, phases, model=None, name="tiny-trained"):
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"recipe": 1, "name": name, "data": str(data), "model": model or TINY_MODEL,
                                "phases": phases}))
    return str(path)


def test_a_model_started_from_another_takes_its_networks(tmp_path):
    data = photos(tmp_path / "photos")
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (40, 50), dtype=np.uint8), "L").save(data / "gray.jpg")
    runner = CliRunner()
    first = recipe(tmp_path, data, [{"phase": "autoencoder", "steps": 3, "batch_size": 2, "crop": 32},
                                    {"phase": "coarse", "crops": 4, "crop": 32},
                                    {"phase": "prior", "crops": 4, "crop": 64, "float_steps": 3, "qat_steps": 1},
                                    {"phase": "export"}])
    done = runner.invoke(cli, ["train", "--recipe", first, "--out", str(tmp_path / "run"), "--device", "cpu"])
    assert done.exit_code == 0, done.output
    model_dir = tmp_path / "run" / "tiny-trained"
    report = json.loads((model_dir / "training_report.json").read_text())
    assert report["phases"]["prior"]["uniform_bits_per_index"] == 4.0
    # a new model started from this one: a klt-hybrid takes the conv networks as its branches
    second = recipe(tmp_path, data, [{"phase": "autoencoder", "steps": 1, "batch_size": 2, "crop": 32,
                                      "init_from": str(model_dir)}], model={**TINY_MODEL, "transform": "klt-hybrid"},
                    name="tiny-hybrid")
    init = runner.invoke(cli, ["train", "--recipe", second, "--out", str(tmp_path / "run2"), "--device", "cpu"])
    assert init.exit_code == 0 and "started from the trained autoencoder of tiny-trained" in init.output, init.output
    ck = torch.load(tmp_path / "run2" / "autoencoder" / "autoencoder.ckpt", weights_only=True)
    assert ck["config"]["transform"] == "klt-hybrid" and list(ck["config"]["channels"]) == [8, 16]


def test_train_refuses_an_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    path = recipe(tmp_path, tmp_path / "empty", [{"phase": "autoencoder", "steps": 1}])
    result = CliRunner().invoke(cli, ["train", "--recipe", path, "--out", str(tmp_path / "run")])
    assert result.exit_code == 1 and result.output.endswith(f"Error: no images found under {tmp_path / 'empty'}\n")


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
    """The device workflow: a pack, the autoencoder phase without constriction, a time limit, copies."""
    runner = CliRunner()
    pack = tmp_path / "packs" / "shard1"
    made = runner.invoke(cli, ["pack", str(photos(tmp_path / "photos")), str(pack), "--size-mb", "0.05", "--shard",
                               "1", "--crop", "48"])
    assert made.exit_code == 0, made.output
    info = json.loads((pack / "pack.json").read_text())
    crops = sorted(pack.glob("*.jpg"))
    assert info["crops"] == len(crops) > 3 and sum(p.stat().st_size for p in crops) <= 0.05 * 2**20
    assert {Image.open(p).size for p in crops} == {(48, 48)}
    again = runner.invoke(cli, ["pack", str(tmp_path / "photos"), str(pack)])
    assert again.exit_code == 1 and "is not empty" in again.output

    run, out = tmp_path / "run", tmp_path / "OUT"

    def train(steps, *extra, without_constriction=False):
        path = recipe(tmp_path, tmp_path / "packs", [{"phase": "autoencoder", "steps": steps, "batch_size": 2,
                                                       "crop": 32, "checkpoint_minutes": 0}], name=f"p{steps}")
        args = ["train", "--recipe", path, "--out", str(run), "--device", "cpu", "--copy-checkpoints-to", str(out),
                *extra]
        if not without_constriction:
            done = runner.invoke(cli, args, catch_exceptions=False)
            assert done.exit_code == 0, done.output
            return done.output
        # in a fresh interpreter where constriction cannot be imported, as on the device machine
        code = "import sys; sys.modules['constriction'] = None; from vqcodec.cli import main; main()"
        done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout + done.stderr

    first = train(100000, "--time-limit", "3", without_constriction=True)  # stops cleanly, far from the end
    stopped = int(first.split("autoencoder steps 0..")[1].split()[0])
    assert "time limit: phase autoencoder stopped" in first and 1 <= stopped < 100000
    assert (out / "autoencoder.ckpt").read_bytes() == (run / "autoencoder" / "autoencoder.ckpt").read_bytes()
    second = train(100000, "--time-limit", "3")
    assert f"resumed autoencoder from step {stopped}" in second


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
    plain_cfg = ModelConfig(**{**PLAIN, "name": "a", "channels": (8, 16), "latent_dim": 4, "codebook_size": 16, "num_stages": 2})
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
    plain_cfg = ModelConfig(**{**PLAIN, "name": "a", "channels": (8, 16), "latent_dim": 4, "codebook_size": 16, "num_stages": 2})
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
        cfg = ModelConfig(**{**PLAIN, "name": "tiny-count", "channels": (8, 16), "latent_dim": 4, "codebook_size": 16, "num_stages": 3, "prior_hidden": 8, "prior_passes": 1, "prior_stage_count": with_count})
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
