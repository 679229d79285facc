"""Recipes: a model's architecture and the phases that train it, run in order by `vqcodec train --recipe`.

A recipe is a JSON file (no dependency on Python 3.10):

    {"recipe": 1, "name": "vqf8-w64", "data": "../shared/data/train",
     "model": {...ModelConfig fields...},
     "phases": [{"phase": "autoencoder", "steps": 150000, ...}, {"phase": "coarse"},
                {"phase": "prior", "float_steps": 4500}, {"phase": "export"}]}

Every phase checkpoints into OUT, resumes after an interrupt, and is skipped once done (OUT/phases.json). A
phase is done for the settings it ran with: a rerun with other settings for a finished phase is refused, so
that a model folder always says how it was made. The held-out photos (holdout.py) are left out of every phase.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .config import ModelConfig
from .finetune import DecoderSettings
from .realistic import RealisticSettings
from .train import AutoencoderSettings

RECIPE_VERSION = 1


@dataclass(frozen=True)
class CoarseSettings:
    """Stage-0 codes in greedy order for the coarse quality levels (config coarse_sizes). from_model: take a
    shipped model's instead (a model that froze its VQ side from it has the same stage 0; checked)."""
    crops: int = 256
    crop: int = 128
    from_model: str | None = None


@dataclass(frozen=True)
class EcvqSettings:
    """Entropy-constrained codebooks for the residual stages (finetune.fit_ecvq), fitted on training latents."""
    alpha: float = 0.5          # lambda_s = alpha x each stage's squared error removed per bit
    first_stage: int = 1        # stages before it keep their codebooks
    iters: int = 15
    fit_crops: int = 256
    crop: int = 256
    cost_scale: float = 1.0     # the costs times this (< 1: more bits for less error)


@dataclass(frozen=True)
class PriorSettings:
    """The integer prior on the autoencoder's indices: float steps, then quantisation-aware steps."""
    crops: int = 1600          # crops whose indices train the prior
    crop: int = 256
    float_steps: int = 1500
    qat_steps: int = 500
    lr: float = 2e-3
    indices: str = "greedy"    # "greedy": all stages, the nearest codes; "own": as each stage count's own beam
                               # search codes them (the files the codec writes; needs prior_stage_count)
    continue_from: str | None = None  # an earlier prior phase whose weights (and Adam's moments) this one continues


@dataclass(frozen=True)
class ExportSettings:
    """The model folder OUT/<name>: model.safetensors, config.json, training_report.json.

    prior_from: a shipped model whose integer prior and coarse codes are taken instead of a prior phase's (a
    model whose VQ side was frozen from it codes the same indices; its codebooks are checked). half: the
    networks in float16, without training-only buffers. vq_qualities and refine_ladder: the model's qualities
    above the coarse ones (ModelConfig); refine_ladder "auto": measured with real files on the held-out photos
    (vqcodec/ladder.py), and the measurement kept in training_report.json."""
    prior_from: str | None = None
    half: bool = False
    vq_qualities: int = 0
    refine_ladder: tuple | str = ()


PHASES = {"autoencoder": AutoencoderSettings, "ecvq": EcvqSettings, "coarse": CoarseSettings,
          "decoder": DecoderSettings, "prior": PriorSettings, "realistic": RealisticSettings,
          "export": ExportSettings}


@dataclass(frozen=True)
class Phase:
    name: str         # unique in the recipe; the kind unless the recipe names it
    kind: str         # a key of PHASES
    settings: object  # that kind's settings dataclass


@dataclass(frozen=True)
class Recipe:
    name: str
    model: ModelConfig
    data: str
    phases: tuple[Phase, ...] = field(default_factory=tuple)

    @classmethod
    def from_dict(cls, d: dict) -> "Recipe":
        if not isinstance(d, dict) or d.get("recipe") != RECIPE_VERSION:
            raise ValueError(f"not a vqcodec recipe (version {RECIPE_VERSION}): it needs \"recipe\": {RECIPE_VERSION}")
        unknown = set(d) - {"recipe", "name", "data", "model", "phases", "comment"}
        if unknown:
            raise ValueError(f"unknown recipe keys: {sorted(unknown)}")
        name = d.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError("the recipe needs a \"name\"")
        model = ModelConfig.from_dict({**d.get("model", {}), "name": name}, partial=True)
        phases, seen = [], set()
        for p in d.get("phases", []):
            if not isinstance(p, dict) or p.get("phase") not in PHASES:
                raise ValueError(f"each phase needs \"phase\", one of {', '.join(PHASES)}: {p!r}")
            p = dict(p)
            kind = p.pop("phase")
            pname = p.pop("name", kind)
            if pname in seen:
                raise ValueError(f"two phases are named {pname!r}: give one a \"name\"")
            seen.add(pname)
            phases.append(Phase(pname, kind, settings_from_dict(PHASES[kind], p, pname)))
        if not phases:
            raise ValueError("the recipe has no phases")
        return cls(name, model, str(d.get("data", "../shared/data/train")), tuple(phases))

    @classmethod
    def load(cls, path: str | Path) -> "Recipe":
        try:
            d = json.loads(Path(path).read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON: {e}") from None
        return cls.from_dict(d)

    def phase(self, name: str) -> Phase:
        for p in self.phases:
            if p.name == name:
                return p
        raise ValueError(f"the recipe has no phase {name!r} (it has: {', '.join(p.name for p in self.phases)})")


def settings_from_dict(cls, d: dict, where: str):
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(d) - set(known)
    if unknown:
        raise ValueError(f"phase {where!r}: unknown settings {sorted(unknown)} (known: {', '.join(known)})")
    d = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
    return cls(**d)


def settings_dict(settings) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(settings).items()}


# --- the run ---------------------------------------------------------------------------------

class Run:
    """One recipe's run folder OUT: its phases' state, and what phases hand on to each other."""

    def __init__(self, recipe: Recipe, out: Path, data: Path, device: str, log=print, stop_at: float | None = None,
                 rank: int = 0, world: int = 1, copy_to: Path | None = None, slim: bool = False):
        self.recipe, self.out, self.data, self.device, self.log, self.stop_at = recipe, out, data, device, log, stop_at
        self.rank, self.world, self.copy_to, self.slim = rank, world, copy_to, slim
        self.cfg = recipe.model
        self._images = self._val = None
        self.state_path = out / "phases.json"
        self.state = json.loads(self.state_path.read_text()) if self.state_path.exists() else {}

    # inputs, loaded once
    def train_paths(self) -> list[Path]:
        from .holdout import split

        return split(self.data)[0]

    def images(self, crop: int):
        if self._images is None:
            from .holdout import split
            from .train import load_images_from

            train, held = split(self.data)
            self.log(f"{len(train)} training photos under {self.data}; {len(held)} held out")
            self._images = load_images_from(train, crop)
        return self._images

    def val(self):
        if self._val is None:
            from .holdout import split, validation_crops

            held = split(self.data)[1]
            self._val = validation_crops(held) if held else None
        return self._val

    def save_state(self) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=2) + "\n")
        tmp.replace(self.state_path)

    def done(self, phase: Phase) -> bool:
        entry = self.state.get(phase.name)
        if entry is None or not entry.get("done"):
            return False
        try:   # compared as settings, so that a setting added since, at its default, is the same
            same = settings_from_dict(type(phase.settings), entry.get("settings") or {}, phase.name) == phase.settings
        except (TypeError, ValueError):
            same = False
        if not same:
            raise ValueError(f"phase {phase.name!r} is done in {self.out} with other settings "
                             f"({entry.get('settings')}); use another --out")
        return True

    def finish(self, phase: Phase, **report) -> None:
        self.state[phase.name] = dict(done=True, settings=settings_dict(phase.settings), **report)
        self.save_state()

    # what phases hand on: the autoencoder (state dict in safetensors), coarse codes, the codec weights
    def autoencoder(self):
        from safetensors.torch import load_file

        from .autoencoder import VQAutoencoder

        path = self.out / "autoencoder.safetensors"
        if not path.exists():
            raise ValueError(f"{self.out} has no trained autoencoder yet: run the autoencoder phase first")
        model = VQAutoencoder(self.cfg)
        state = model.state_dict()
        state.update(load_file(str(path)))
        model.load_state_dict(state)
        for vq in model.rvq.stages:
            vq.initialized.fill_(True)
        return model.to(self.device)

    def save_autoencoder(self, model) -> None:
        from safetensors.torch import save_file

        tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        tmp = self.out / "autoencoder.safetensors.tmp"
        save_file(tensors, str(tmp))
        tmp.replace(self.out / "autoencoder.safetensors")


def run_phase(run: Run, phase: Phase) -> bool:
    """Run (or resume) one phase; False if it stopped at the time limit."""
    t0 = time.time()
    s = phase.settings
    log = run.log
    if phase.kind == "autoencoder":
        from .train import train_autoencoder

        init = None
        if s.init_from is not None:
            from .codec import load_codec

            init = load_codec(s.init_from).autoencoder.train()
        folder = run.out / phase.name
        folder.mkdir(parents=True, exist_ok=True)
        ae = train_autoencoder(run.cfg, run.images(s.crop), folder, s, device=run.device, log=log,
                               stop_at=run.stop_at, init=init, val=run.val(), copy_to=run.copy_to,
                               slim=run.slim)
        if ae.steps_done < s.steps:
            return False
        if run.rank != 0:
            return True
        run.save_autoencoder(ae)
        extra = {} if ae.ranks_in_sync is None else {"ranks": run.world, "ranks_in_sync": ae.ranks_in_sync}
        run.finish(phase, steps=ae.steps_done, wall_s=round(ae.train_seconds),
                   megapixels_per_s=round(ae.megapixels_per_s, 4), loss_start=ae.loss_start, loss_end=ae.loss_end,
                   **extra)
        return True
    if phase.kind == "ecvq":
        from .data import CropSampler
        from .finetune import fit_ecvq, latents

        ae = run.autoencoder().eval()
        crops = CropSampler(run.images(s.crop), s.crop, seed=11).batch(s.fit_crops)
        lambdas = fit_ecvq(ae, latents(ae, crops), s.alpha, s.first_stage, s.iters, s.cost_scale)
        run.save_autoencoder(ae)
        run.finish(phase, lambdas=[round(x, 6) for x in lambdas], wall_s=round(time.time() - t0))
        return True
    if phase.kind == "decoder":
        from .data import CropSampler
        from .finetune import finetune_decoder

        ae = run.autoencoder()
        folder = run.out / phase.name
        folder.mkdir(parents=True, exist_ok=True)
        crops = CropSampler(run.images(s.crop), s.crop, seed=13).batch(s.crops)
        done = finetune_decoder(ae, coarse_codes(run), crops, s, folder, log=log, stop_at=run.stop_at)
        if done < s.steps:
            return False
        run.save_autoencoder(ae)
        run.finish(phase, steps=done, wall_s=round(time.time() - t0))
        return True
    if phase.kind == "realistic":
        from .data import CropSampler
        from .codec import REALISTIC_FILE
        from .realistic import evaluate, head_config, save_head, serving_qualities, train_realistic

        if s.init_from is not None:
            from .codec import load_codec

            codec = load_codec(s.init_from)
            ae, codes = codec.autoencoder, codec.coarse_codes
        else:
            ae, codes = run.autoencoder(), coarse_codes(run)
        folder = run.out / phase.name
        folder.mkdir(parents=True, exist_ok=True)
        crops = CropSampler(run.images(s.crop), s.crop, seed=17).batch(s.crops)
        head, done = train_realistic(ae.cpu().eval(), codes, crops, s, folder, val=run.val(), log=log,
                                     stop_at=run.stop_at)
        if done < s.steps:
            return False
        scores, served = {}, None
        if run.val() is not None:   # where the head serves, chosen on the held-out crops
            scores = evaluate(head, ae.cpu().eval(), codes, run.val(), range(1, s.max_quality + 1))
            served = serving_qualities(scores, s)
            log(f"realistic decoder: serves qualities {served} of 1..{s.max_quality} ({json.dumps(scores)})")
        config = head_config(s, served)
        save_head(head, config, folder / REALISTIC_FILE)
        run.finish(phase, steps=done, wall_s=round(time.time() - t0), qualities=config["qualities"], held_out=scores)
        return True
    if phase.kind == "coarse":
        from .train import select_coarse_codes

        ae = run.autoencoder()
        count = max(run.cfg.coarse_sizes, default=0)
        if s.from_model is not None:
            from .codec import load_codec

            source = load_codec(s.from_model)
            if not torch.equal(source.autoencoder.rvq.stages[0].codebook.cpu(), ae.rvq.stages[0].codebook.cpu()):
                raise ValueError(f"coarse: {s.from_model}'s stage 0 is not this run's")
            codes = source.coarse_codes[:count].cpu()
        else:
            codes = (select_coarse_codes(ae, run.images(s.crop), count, crops=s.crops, crop=s.crop, device=run.device)
                     if count else torch.zeros(0, dtype=torch.int64))
        torch.save(codes.cpu(), run.out / "coarse_codes.pt")
        run.finish(phase, codes=int(count), wall_s=round(time.time() - t0))
        return True
    if phase.kind == "prior":
        from .train import collect_indices, train_prior

        ae = run.autoencoder().eval()
        folder = run.out / phase.name
        folder.mkdir(parents=True, exist_ok=True)
        indices_path = folder / "indices.pt"
        if indices_path.exists():
            indices = torch.load(indices_path, weights_only=True)
        elif s.indices == "own":
            from .data import CropSampler
            from .finetune import own_beam_grids

            large = [im for im in run.images(s.crop) if min(im.shape[:2]) >= s.crop]
            crops = CropSampler(large, s.crop, seed=1).batch(s.crops)
            indices = own_beam_grids(ae, crops, progress=lambda i, n: log(f"own beam indices {i}/{n}")
                                     if i % 400 == 0 else None)
            torch.save(indices, indices_path)
        elif s.indices == "greedy":
            indices = collect_indices(ae, run.images(s.crop), s.crops, crop=s.crop, device=run.device)
            torch.save(indices, indices_path)
        else:
            raise ValueError(f"prior indices must be greedy or own, not {s.indices!r}")
        if s.continue_from is not None and not (folder / "prior.ckpt").exists():
            warm_start_prior(run, folder, s)
        trained = train_prior(ae, indices, folder, float_steps=s.float_steps, qat_steps=s.qat_steps, lr=s.lr,
                              device=run.device, log=log, stop_at=run.stop_at, autoencoder_step=0)
        if trained is None:
            return False
        _, int_prior, report = trained
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in int_prior.tensors().items()}, str(folder / "integer_prior.tmp"))
        (folder / "integer_prior.tmp").replace(folder / "integer_prior.safetensors")
        run.finish(phase, wall_s=round(time.time() - t0), **report)
        return True
    if phase.kind == "export":
        from safetensors.torch import load_file

        from .prior import IntegerPrior

        prior = coarse = None
        if s.prior_from is None:
            priors = [p for p in run.recipe.phases if p.kind == "prior" and run.state.get(p.name, {}).get("done")]
            if not priors:
                raise ValueError("export needs a prior phase before it (or prior_from)")
            tensors = load_file(str(run.out / priors[-1].name / "integer_prior.safetensors"))
            prior, coarse = IntegerPrior(run.cfg, tensors), coarse_codes(run)
        from .holdout import split

        (run.out / phase.name).mkdir(parents=True, exist_ok=True)
        weights, cfg, extra = export_weights(run.autoencoder().cpu().eval(), s, run.train_paths(), prior, coarse,
                                             split(run.data)[1], cache=run.out / phase.name / "ladder_points.jsonl")
        folder = run.out / run.recipe.name
        report = dict(recipe=run.recipe.name, phases={k: v for k, v in run.state.items()},
                      total_wall_s=sum(v.get("wall_s", 0) for v in run.state.values()), **extra)
        from .training_cli import export_model

        export_model(weights, cfg, report, folder)
        realistic = [p for p in run.recipe.phases if p.kind == "realistic" and run.state.get(p.name, {}).get("done")]
        if realistic:   # the realistic decoder's own file, beside model.safetensors (whose hash files carry)
            import shutil

            from .codec import REALISTIC_FILE
            shutil.copyfile(run.out / realistic[-1].name / REALISTIC_FILE, folder / REALISTIC_FILE)
        run.finish(phase, wall_s=round(time.time() - t0), folder=str(folder))
        log(f"exported {folder} ({len(weights) / 1e6:.1f} MB)")
        return True
    raise ValueError(f"unknown phase kind {phase.kind!r}")


def export_weights(ae, s: ExportSettings, train_paths: list[Path], prior=None, coarse=None, held=None,
                   cache: Path | None = None):
    """A trained autoencoder -> (the model's weights file, its config with the qualities of s, a report). prior
    and coarse: the integer prior and coarse codes (None: those of s.prior_from). A model with refinement gets
    its integer refinement, calibrated on 32 training crops of 128x128 (smaller where the photos are); with
    refine_ladder "auto", its ladder is measured on the held-out photos held ([(path, kind)], ladder.py), each
    point kept in cache as it is measured (a stopped export resumes there)."""
    from .codec import VQCodec, load_codec

    if s.prior_from is not None:
        source = load_codec(s.prior_from)
        prior, coarse = source.prior.to("cpu"), source.coarse_codes
        if any(not torch.equal(a.codebook, b.codebook.cpu()) for a, b in zip(ae.rvq.stages, source.autoencoder.rvq.stages)):
            raise ValueError(f"export: prior_from {s.prior_from} has other codebooks than this run's model")
    refinement, report = None, {}
    if ae.cfg.refine_levels:
        from .refine import integer_refinement
        from .train import random_crops

        try:
            crops = [c for c, _ in zip(random_crops(train_paths, 128, random.Random(1)), range(32))]
        except ValueError:   # photos smaller than 128x128 (a test's): the smallest crop the encoder takes
            f = ae.cfg.downsampling
            crops = [c for c, _ in zip(random_crops(train_paths, 4 * f, random.Random(1)), range(32))]
        x = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255
        scale = float(prior.t["codebooks"][0].double().abs().max() / ae.rvq.stages[0].codebook.abs().max()) / 16
        refinement = integer_refinement(ae, x, 2.0 ** round(math.log2(scale)))
    if s.refine_ladder == "auto":
        from PIL import Image

        from . import ladder
        from .holdout import load_holdout_image

        if not ae.cfg.refine_levels or not held:
            raise ValueError("export: refine_ladder auto needs a model with refinement and held-out photos")
        ae.cfg = ladder.candidates(ae.cfg)
        weights = VQCodec.serialize(ae, prior, coarse, refinement, half=s.half)
        codec = VQCodec.from_bytes(weights, ae.cfg)
        images = [Image.fromarray(load_holdout_image(p, k)) for p, k in held]
        key = hashlib.sha256(weights + json.dumps([[str(p), k] for p, k in held]).encode()).hexdigest()[:16]
        points = ladder.measure(codec, images, cache, key)
        vq, steps = ladder.choose(points)
        report = dict(ladder_points=points, photos=len(held))
    else:
        vq = s.vq_qualities or ae.cfg.vq_qualities
        steps = tuple((int(k), int(b)) for k, b in s.refine_ladder) or ae.cfg.refine_ladder
    ae.cfg = dataclasses.replace(ae.cfg, vq_qualities=vq, refine_ladder=steps)
    return VQCodec.serialize(ae, prior, coarse, refinement, half=s.half), ae.cfg, report

def warm_start_prior(run: Run, folder: Path, s: PriorSettings) -> None:
    """Start this prior phase at an earlier one's final weights and Adam moments (step 0); stage-count biases
    that the earlier prior lacks start at zero, with Adam afresh."""
    from .prior import PriorNet
    from .train import load_checkpoint, prior_fields, save_checkpoint

    source = run.recipe.phase(s.continue_from)
    src = load_checkpoint(run.out / source.name / "prior.ckpt", "cpu")
    if source.kind != "prior" or src is None:
        raise ValueError(f"continue_from {s.continue_from!r}: not a prior phase that has run")
    net = PriorNet(run.cfg)
    missing = net.load_state_dict(src["prior"], strict=False).missing_keys
    warm = {**src, "step": 0, "report": json.dumps({"warm_start": f"{source.name} step {src['step']}"})}
    if missing:
        if sorted(missing) != ["count_bias1", "count_bias3"]:
            raise ValueError(f"continue_from {s.continue_from!r}: a prior of another shape (missing {missing})")
        warm.update(prior=net.state_dict(), prior_fields=list(prior_fields(run.cfg)),
                    optimizer=torch.optim.Adam(net.parameters(), lr=s.lr).state_dict())
    save_checkpoint(folder / "prior.ckpt", warm)


def coarse_codes(run: Run):
    path = run.out / "coarse_codes.pt"
    if run.cfg.coarse_sizes and not path.exists():
        raise ValueError("the model has coarse levels (config coarse_sizes): run a coarse phase before the prior")
    return torch.load(path, weights_only=True) if run.cfg.coarse_sizes else None


def run_recipe(recipe: Recipe, out: Path, data: Path | None = None, device: str = "cpu", phase: str | None = None,
               log=print, time_limit: float | None = None, copy_to: Path | None = None, slim: bool = False) -> bool:
    """Run every phase in order (or only `phase`), skipping those already done. True when all ran to the end."""
    stop_at = None if time_limit is None else time.time() + time_limit
    data = Path(data if data is not None else recipe.data)
    if not data.is_dir():
        raise ValueError(f"training data folder {data} does not exist (the recipe's \"data\", or --data)")
    device, rank, world = init_distributed(device)
    if rank != 0:
        log = lambda *a, **k: None  # noqa: E731 - rank 0 logs and writes the run folder
    out.mkdir(parents=True, exist_ok=True)
    saved = out / "recipe.json"
    mine = json.dumps(recipe_dict(recipe), indent=2) + "\n"
    if saved.exists() and not same_model(json.loads(saved.read_text()), recipe):
        raise ValueError(f"{out} belongs to a recipe with another model; use another --out")
    if rank == 0:
        saved.write_text(mine)
    run = Run(recipe, out, data, device, log, stop_at, rank, world, copy_to, slim)
    todo = [recipe.phase(phase)] if phase is not None else list(recipe.phases)
    try:
        for p in todo:
            if run.done(p):
                log(f"phase {p.name}: done")
                continue
            if rank != 0 and p.kind != "autoencoder":
                continue  # under torchrun, only the autoencoder phase is distributed; rank 0 runs the others
            log(f"phase {p.name} ({p.kind}): {json.dumps(settings_dict(p.settings))}")
            if not run_phase(run, p):
                log(f"time limit: phase {p.name} stopped with a checkpoint; the same command resumes it")
                return False
        return True
    finally:
        if world > 1:   # leave the process group cleanly (no rank's exit finds its peers' group half torn down)
            import torch.distributed as dist

            dist.destroy_process_group()


def same_model(saved: dict, recipe: Recipe) -> bool:
    """Whether a run folder's saved recipe describes `recipe`'s model. Both are read through ModelConfig, so a
    field that a later vqcodec added (with a default) does not orphan a run folder that predates it."""
    try:
        theirs = ModelConfig.from_dict({**saved.get("model", {}), "name": recipe.name}, partial=True)
    except (ValueError, TypeError, AttributeError):
        return False
    return theirs.to_dict() == recipe.model.to_dict()


def init_distributed(device: str) -> tuple[str, int, int]:
    """Under torchrun (WORLD_SIZE > 1): join the process group, gloo on the CPU and NCCL on CUDA, each rank on
    its own GPU -> (device, rank, world size). Otherwise (device, 0, 1)."""
    import datetime
    import os

    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return device, 0, 1
    if not dist.is_initialized():
        cuda = device.startswith("cuda")
        dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(hours=12))
        if cuda:
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            device = f"cuda:{local}"
    return device, dist.get_rank(), dist.get_world_size()


def recipe_dict(recipe: Recipe) -> dict:
    model = recipe.model.to_dict()
    model.pop("name")
    return dict(recipe=RECIPE_VERSION, name=recipe.name, data=recipe.data, model=model,
                phases=[{"phase": p.kind, **({"name": p.name} if p.name != p.kind else {}), **settings_dict(p.settings)}
                        for p in recipe.phases])
