"""`vqcodec train --recipe`: a tiny recipe through every phase, resumes, skips, refusals."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from vqcodec import decompress
from vqcodec.cli import cli
from vqcodec.recipe import Recipe

TINY_MODEL = {"channels": [8, 16], "latent_dim": 8, "codebook_size": 32, "num_stages": 3, "prior_hidden": 8,
              "coarse_sizes": [8], "transform": "klt-hybrid", "stage_gains": True, "postfilter": 4,
              "refine_levels": 2, "refine_dim": 4, "refine_hidden": 8, "prior_stage_count": True}
TINY_PHASES = [{"phase": "autoencoder", "steps": 40, "crop": 32, "batch_size": 4, "eval_every": 20},
               {"phase": "ecvq", "fit_crops": 8, "crop": 32, "iters": 2, "cost_scale": 0.7},
               {"phase": "coarse", "crops": 16, "crop": 32},
               {"phase": "decoder", "steps": 6, "crops": 8, "crop": 32, "batch_size": 4},
               {"phase": "prior", "crops": 16, "crop": 32, "float_steps": 20, "qat_steps": 10},
               {"phase": "prior", "name": "prior-own", "indices": "own", "continue_from": "prior", "crops": 8,
                "crop": 32, "float_steps": 6, "qat_steps": 3},
               {"phase": "realistic", "steps": 8, "crops": 8, "crop": 32, "batch_size": 4, "disc_warmup": 3,
                "max_quality": 2, "eval_every": 4, "channels": 8, "blocks": 1, "disc_channels": 8},
               {"phase": "export"}]


def photos(folder, n=6, size=80):
    rng = np.random.default_rng(0)
    folder.mkdir()
    for i in range(n):
        ramp = np.linspace(0, 200, size)[None, :, None] + rng.random((size, size, 3)) * 40
        Image.fromarray(ramp.astype(np.uint8)).save(folder / f"img{i}.png")
    return folder


@pytest.fixture
def tiny(tmp_path):
    data = photos(tmp_path / "data")
    recipe = dict(recipe=1, name="tiny-r", data=str(data), model=TINY_MODEL, phases=TINY_PHASES)
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(recipe))
    return path, tmp_path / "run"


def test_a_tiny_recipe_runs_every_phase_and_its_model_round_trips_an_image(tiny, tmp_path):
    path, out = tiny
    res = CliRunner().invoke(cli, ["train", "--recipe", str(path), "--out", str(out), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    state = json.loads((out / "phases.json").read_text())
    phases = ["autoencoder", "ecvq", "coarse", "decoder", "prior", "prior-own", "realistic", "export"]
    assert [k for k, v in state.items() if v["done"]] == phases
    assert state["autoencoder"]["megapixels_per_s"] > 0
    assert state["ecvq"]["lambdas"][0] == 0 and all(x > 0 for x in state["ecvq"]["lambdas"][1:])
    assert "warm_start" in json.dumps(state["prior-own"])
    model = out / "tiny-r"
    report = json.loads((model / "training_report.json").read_text())
    assert list(report["phases"]) == phases[:-1]
    assert (model / "realistic.safetensors").is_file()
    image = Image.open(sorted((tmp_path / "data").iterdir())[0])
    from vqcodec.codec import load_codec

    codec = load_codec(model)
    data = codec.compress(image, quality=2)
    back = codec.decompress(data)
    assert back.size == image.size and back.mode == "RGB"
    # the realistic phase: its head beside the model, and a second decoder for the same file
    assert codec.decoders == ("fidelity", "realistic")
    real = decompress(data, model=model, decoder="realistic")
    assert real.size == image.size and not np.array_equal(np.asarray(real), np.asarray(back))
    high = codec.compress(image, quality=4)           # not trained for (max_quality 2): the fidelity image
    assert np.array_equal(np.asarray(codec.decompress(high, decoder="realistic")), np.asarray(codec.decompress(high)))
    # a rerun skips every phase
    res = CliRunner().invoke(cli, ["train", "--recipe", str(path), "--out", str(out), "--device", "cpu"])
    assert res.exit_code == 0 and res.output.count(": done") == len(phases), res.output


def test_an_interrupted_phase_resumes_where_it_stopped(tiny):
    path, out = tiny
    recipe = json.loads(path.read_text())
    recipe["phases"] = [dict(TINY_PHASES[0], steps=300, checkpoint_minutes=0)]
    path.write_text(json.dumps(recipe))
    res = CliRunner().invoke(cli, ["train", "--recipe", str(path), "--out", str(out), "--time-limit", "0.5"])
    assert res.exit_code == 0, res.output
    assert "time limit: phase autoencoder stopped" in res.output
    res = CliRunner().invoke(cli, ["train", "--recipe", str(path), "--out", str(out)])
    assert res.exit_code == 0 and "resumed autoencoder from step" in res.output, res.output
    assert json.loads((out / "phases.json").read_text())["autoencoder"]["steps"] == 300


def test_the_learning_curve_is_measured_on_held_out_photos(tiny):
    path, out = tiny
    recipe = json.loads(path.read_text())
    recipe["phases"] = [TINY_PHASES[0]]
    path.write_text(json.dumps(recipe))
    from vqcodec import holdout

    names = holdout.holdout_names()
    assert len(names) >= 40 and set(names.values()) == {"clean", "plain"}
    # a data folder with one of the named photos: it is held out and measured on
    data = json.loads(path.read_text())["data"]
    rel = next(n for n, k in names.items() if k == "plain")
    target = __import__("pathlib").Path(data) / rel
    target.parent.mkdir(parents=True)
    Image.fromarray(np.full((160, 160, 3), 90, np.uint8)).save(target.with_suffix(".png"))
    target.with_suffix(".png").rename(target)
    train, held = holdout.split(data)
    assert [p for p, _ in held] == [target] and target not in train
    res = CliRunner().invoke(cli, ["train", "--recipe", str(path), "--out", str(out)])
    assert res.exit_code == 0, res.output
    curve = [json.loads(line) for line in (out / "autoencoder" / "curve.jsonl").read_text().splitlines()]
    assert [c["step"] for c in curve] == [20, 40]
    assert {"vq1", "vq3", "r1b2", "r2b2", "ceiling_psnr", "transform_psnr"} <= set(curve[-1])
    assert curve[-1]["r2b2"]["bpp"] > curve[-1]["vq1"]["bpp"]


def test_a_done_phase_with_other_settings_is_refused(tiny):
    path, out = tiny
    recipe = json.loads(path.read_text())
    recipe["phases"] = [TINY_PHASES[0]]
    path.write_text(json.dumps(recipe))
    assert CliRunner().invoke(cli, ["train", "--recipe", str(path), "--out", str(out)]).exit_code == 0
    recipe["phases"] = [dict(TINY_PHASES[0], lr=1e-3)]
    path.write_text(json.dumps(recipe))
    res = CliRunner().invoke(cli, ["train", "--recipe", str(path), "--out", str(out)])
    assert res.exit_code == 1
    assert "phase 'autoencoder' is done" in res.output and "use another --out" in res.output
    # a setting added to the phase since it ran, at its default, is the same settings: the phase stays done
    state = json.loads((out / "phases.json").read_text())
    del state["autoencoder"]["settings"]["refine_share"]
    (out / "phases.json").write_text(json.dumps(state))
    recipe["phases"] = [TINY_PHASES[0]]
    path.write_text(json.dumps(recipe))
    res = CliRunner().invoke(cli, ["train", "--recipe", str(path), "--out", str(out)])
    assert res.exit_code == 0 and ": done" in res.output, res.output
    # so is a model config field added since the run folder was made, at its default ...
    saved = json.loads((out / "recipe.json").read_text())
    del saved["model"]["refine_ladder"], saved["model"]["vq_qualities"]
    (out / "recipe.json").write_text(json.dumps(saved))
    res = CliRunner().invoke(cli, ["train", "--recipe", str(path), "--out", str(out)])
    assert res.exit_code == 0 and ": done" in res.output, res.output
    # ... but another model is not
    recipe["model"] = dict(TINY_MODEL, latent_dim=6)
    path.write_text(json.dumps(recipe))
    res = CliRunner().invoke(cli, ["train", "--recipe", str(path), "--out", str(out)])
    assert res.exit_code == 1 and "belongs to a recipe with another model; use another --out" in res.output


@pytest.mark.parametrize("change, message", [
    ({"recipe": 2}, "not a vqcodec recipe"),
    ({"phases": [{"phase": "bake"}]}, "each phase needs \"phase\""),
    ({"phases": [{"phase": "autoencoder", "stepz": 3}]}, "unknown settings ['stepz']"),
    ({"phases": [{"phase": "export"}, {"phase": "export"}]}, "two phases are named 'export'"),
    ({"model": {"latent_dim": 8, "colour": 1}}, "unknown model config keys"),
])
def test_bad_recipes_are_refused_with_one_line(tiny, change, message):
    path, out = tiny
    recipe = {**json.loads(path.read_text()), **change}
    path.write_text(json.dumps(recipe))
    res = CliRunner().invoke(cli, ["train", "--recipe", str(path), "--out", str(out)])
    assert res.exit_code != 0 and message in res.output, res.output


def test_recipe_round_trip():
    r = Recipe.from_dict(dict(recipe=1, name="x", model=TINY_MODEL, phases=TINY_PHASES))
    from vqcodec.recipe import recipe_dict

    assert Recipe.from_dict(recipe_dict(r)) == r
    assert r.phase("prior").settings.float_steps == 20


@pytest.mark.parametrize("recipe", sorted(p.parent / "recipe.json" for p in
                                           Path(__file__).resolve().parents[1].glob("models/*/config.json")),
                         ids=lambda p: p.parent.name)
def test_each_shipped_models_recipe_describes_its_architecture(recipe):
    from vqcodec.config import ModelConfig

    r = Recipe.load(recipe)   # every shipped model has its recipe
    shipped = ModelConfig.from_dict(json.loads((recipe.parent / "config.json").read_text()))
    assert r.name == recipe.parent.name
    assert r.model == shipped
    assert r.phases[-1].kind == "export"


def test_refinement_probabilities_sum_to_one():
    from vqcodec.refine import gaussian_bits

    q = torch.arange(-200, 201).float()[:, None]
    for scale in (0.05, 0.7, 3.0, 40.0):
        p = torch.pow(2.0, -gaussian_bits(q, torch.full_like(q, scale)))
        assert abs(float(p.sum()) - 1) < 1e-4


def test_torchrun_trains_in_step_on_two_cpu_processes_and_resumes(tiny, tmp_path):
    """The same command under torchrun: DistributedDataParallel over gloo, each rank its own crops, codebook
    statistics all-reduced: identical weights on both ranks, a falling loss, and a resume after a stop."""
    import os
    import shutil
    import subprocess
    import sys

    path, out = tiny
    recipe = json.loads(path.read_text())
    recipe["phases"] = [dict(TINY_PHASES[0], steps=300, eval_every=0, lr=2e-3, checkpoint_minutes=0)]
    path.write_text(json.dumps(recipe))
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    assert torchrun, "torchrun is installed with torch"
    command = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "vqcodec.cli", "train", "--recipe",
               str(path), "--out", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    first = subprocess.run(command + ["--time-limit", "6"], capture_output=True, text=True, env=env, timeout=600)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "time limit: phase autoencoder stopped" in first.stdout
    assert not (out / "phases.json").exists() and (out / "autoencoder" / "autoencoder.ckpt").exists()
    second = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "resumed autoencoder from step" in second.stdout
    state = json.loads((out / "phases.json").read_text())["autoencoder"]
    assert state["done"] and state["steps"] == 300 and state["ranks"] == 2
    assert state["ranks_in_sync"] is True
    assert state["loss_end"] < state["loss_start"]


def test_the_recipe_of_the_model_in_training_loads():
    r = Recipe.load(Path(__file__).resolve().parents[1] / "models" / "vqf8-r1" / "recipe.json")
    assert r.model.refine_levels and r.phases[0].settings.init_from == "vqf8-v13"


def test_export_measures_the_ladder_on_held_out_photos_and_writes_16_bit_weights(tiny):
    """refine_ladder "auto": every candidate quality measured with real files on the held-out photos; the model's
    qualities rise in bpp; the weights are float16 without the codebooks' EMA buffers."""
    from safetensors.torch import load_file

    from vqcodec import holdout
    from vqcodec.codec import load_codec

    path, out = tiny
    recipe = json.loads(path.read_text())
    recipe["phases"] = [TINY_PHASES[0], TINY_PHASES[2], TINY_PHASES[4], {"phase": "export", "half": True, "refine_ladder": "auto"}]
    path.write_text(json.dumps(recipe))
    rel = next(n for n, k in holdout.holdout_names().items() if k == "plain")
    target = Path(recipe["data"]) / rel
    target.parent.mkdir(parents=True)
    ramp = np.linspace(0, 250, 160)[None, :, None] + np.zeros((128, 160, 3))
    Image.fromarray(ramp.astype(np.uint8)).save(target.with_suffix(".png"))
    target.with_suffix(".png").rename(target)
    res = CliRunner().invoke(cli, ["train", "--recipe", str(path), "--out", str(out), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    report = json.loads((out / "tiny-r" / "training_report.json").read_text())
    points = report["ladder_points"]
    assert report["photos"] == 1 and len(points) == 3 + 2 * 3           # 3 VQ levels, 2 levels on 1..3 stages
    codec = load_codec(out / "tiny-r")
    cfg = codec.cfg
    chosen = [next(p for p in points if (p["k"], p["b"]) == (cfg.refine_level(q), cfg.quality_plan(q)[0]))
              for q in codec.qualities[len(cfg.coarse_sizes):]]
    assert [p["bpp"] for p in chosen] == sorted(p["bpp"] for p in chosen)
    assert len(chosen) == cfg.num_qualities - len(cfg.coarse_sizes) >= 1
    weights = load_file(str(out / "tiny-r" / "model.safetensors"))
    assert weights["ae.decoder.linear.weight"].dtype == torch.float16
    assert weights["ae.rvq.stages.0.codebook"].dtype == torch.float32
    assert not any(k.endswith(("embed_sum", "cluster_size")) for k in weights)
    image = Image.open(target)
    top = codec.compress(image, codec.qualities[-1])
    assert codec.decompress(top).size == image.size

    # each point was kept as it was measured; a stopped export resumes from those kept under the same weights
    lines = (out / "export" / "ladder_points.jsonl").read_text().splitlines()
    assert len(lines) == len(points) and len({json.loads(x)["key"] for x in lines}) == 1
    kept = [json.loads(x) for x in lines[:4]]
    kept[3]["point"]["psnr"] = 99.0                                        # proves that it was reused, not remeasured
    (out / "export" / "ladder_points.jsonl").write_text("".join(json.dumps(x) + "\n" for x in kept) + '{"key": "')
    state = json.loads((out / "phases.json").read_text())
    del state["export"]
    (out / "phases.json").write_text(json.dumps(state))
    res = CliRunner().invoke(cli, ["train", "--recipe", str(path), "--out", str(out), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    again = json.loads((out / "tiny-r" / "training_report.json").read_text())["ladder_points"]
    assert again[3]["psnr"] == 99.0 and again[:3] == points[:3] and again[4:] == points[4:]
    kept = []                                     # the cut line stays alone: every new record is whole
    for line in (out / "export" / "ladder_points.jsonl").read_text().splitlines():
        try:
            kept.append(json.loads(line)["quality"])
        except (ValueError, KeyError):
            pass
    assert sorted(kept) == sorted(set(kept)) and len(kept) == len(points)


def test_coarse_codes_from_a_shipped_model_need_its_stage_0(tiny):
    path, out = tiny
    recipe = json.loads(path.read_text())
    recipe["phases"] = [dict(TINY_PHASES[0], steps=4, eval_every=0), {"phase": "coarse", "from_model": "vqf8-v13"}]
    path.write_text(json.dumps(recipe))
    res = CliRunner().invoke(cli, ["train", "--recipe", str(path), "--out", str(out), "--device", "cpu"])
    assert res.exit_code == 1 and "Error: coarse: vqf8-v13's stage 0 is not this run's" in res.output


def test_transform_weight_trains_the_unquantized_reconstruction(tiny):
    from vqcodec.autoencoder import VQAutoencoder
    from vqcodec.config import ModelConfig
    from vqcodec.train import unquantized_mse

    torch.manual_seed(0)
    model = VQAutoencoder(ModelConfig.from_dict({**TINY_MODEL, "name": "t"}, partial=True))
    x = torch.rand(2, 3, 32, 32)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = float(unquantized_mse(model, x, bf16=False))
    for _ in range(30):
        loss = unquantized_mse(model, x, bf16=False)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(unquantized_mse(model, x, bf16=False)) < 0.5 * first
    path, out = tiny       # and in a recipe: the phase runs with it
    recipe = json.loads(path.read_text())
    recipe["phases"] = [dict(TINY_PHASES[0], transform_weight=1.0)]
    path.write_text(json.dumps(recipe))
    res = CliRunner().invoke(cli, ["train", "--recipe", str(path), "--out", str(out)])
    assert res.exit_code == 0, res.output


def test_transform_weight_applies_from_transform_from(tiny, monkeypatch):
    import vqcodec.train as train

    calls = []
    real = train.unquantized_mse
    monkeypatch.setattr(train, "unquantized_mse", lambda *a, **k: calls.append(1) or real(*a, **k))
    path, out = tiny
    recipe = json.loads(path.read_text())
    recipe["phases"] = [dict(TINY_PHASES[0], steps=5, eval_every=0, transform_weight=1.0, transform_from=3)]
    path.write_text(json.dumps(recipe))
    res = CliRunner().invoke(cli, ["train", "--recipe", str(path), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert len(calls) == 2                             # steps 3 and 4 of 0..4


def test_transform_weight_may_be_a_schedule_by_step(tiny, monkeypatch):
    """[[step, weight], ...]: each weight from its step (what a run that raised the weight mid-way did)."""
    import vqcodec.train as train

    weights = []
    real = train.unquantized_mse
    monkeypatch.setattr(train, "unquantized_mse", lambda *a, **k: real(*a, **k) * 0)
    real_at = train.AutoencoderSettings.transform_weight_at
    monkeypatch.setattr(train.AutoencoderSettings, "transform_weight_at",
                        lambda self, step: weights.append((step, real_at(self, step))) or real_at(self, step))
    path, out = tiny
    recipe = json.loads(path.read_text())
    recipe["phases"] = [dict(TINY_PHASES[0], steps=6, eval_every=0, transform_weight=[[2, 1.0], [4, 3.0]])]
    path.write_text(json.dumps(recipe))
    res = CliRunner().invoke(cli, ["train", "--recipe", str(path), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert sorted(set(weights)) == [(0, 0.0), (1, 0.0), (2, 1.0), (3, 1.0), (4, 3.0), (5, 3.0)]


@pytest.mark.parametrize("bad, message", [
    ([[4, 1.0], [2, 3.0]], "rising steps"), ([], "rising steps"), ([[0, -1.0]], "weights >= 0"),
    ([[0, "x"]], "a number or [[step, weight]"), ([1, 2], "a number or [[step, weight]")])
def test_a_bad_transform_schedule_is_one_line(tiny, bad, message):
    path, out = tiny
    recipe = json.loads(path.read_text())
    recipe["phases"] = [dict(TINY_PHASES[0], transform_weight=bad)]
    path.write_text(json.dumps(recipe))
    res = CliRunner().invoke(cli, ["train", "--recipe", str(path), "--out", str(out)])
    assert res.exit_code != 0 and res.output.startswith("Error: ") and message in res.output, res.output
