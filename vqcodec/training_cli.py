"""`vqcodec train`: autoencoder, indices, prior, export — each phase resumable from OUT."""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from .config import ModelConfig
from .train import AutoencoderSettings, collect_indices, load_images, select_coarse_codes, train_autoencoder, train_prior

# coarse levels below one full stage (stage 0 limited to its first n greedy codes), where the codebook is larger
DEFAULT_COARSE_SIZES = (32, 128)


def pick_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but no CUDA device is available")
    return device


def export_model(codec_bytes: bytes, cfg: ModelConfig, report: dict, model_dir: Path) -> None:
    model_dir.mkdir(parents=True, exist_ok=True)
    for name, content in (("model.safetensors", codec_bytes),
                          ("config.json", json.dumps(cfg.to_dict(), indent=2).encode() + b"\n"),
                          ("training_report.json", json.dumps(report, indent=2).encode() + b"\n")):
        tmp = model_dir / (name + ".part")
        tmp.write_bytes(content)
        tmp.replace(model_dir / name)


def run_training(data_dir: Path, out: Path, name: str, steps: int, prior_steps: int, batch_size: int,
                 crop: int, lr: float, prior_crops: int, device: str, config_json: str | None, echo=print,
                 prior_crop: int = 256, time_limit: float | None = None, autoencoder_only: bool = False,
                 slim_checkpoints: bool = False, copy_checkpoints_to: Path | None = None, init_from: str | None = None):
    """Train and export; with time_limit (seconds from here), stop cleanly with checkpoints before it.

    init_from: a trained model (shipped name or folder) whose autoencoder the training starts from, and whose
    config is the base that config_json overrides."""
    t0 = time.time()
    stop_at = None if time_limit is None else t0 + time_limit
    device = pick_device(device)
    overrides = json.loads(config_json) if config_json else {}
    if not isinstance(overrides, dict):
        raise ValueError("--config must be a JSON object")
    init = None
    if init_from is not None:
        from .codec import load_codec  # reads an exported model (needs constriction, as the export does)

        init = load_codec(init_from).autoencoder.train()
        defaults = init.cfg.to_dict()
    else:
        defaults = ModelConfig().to_dict()
        k = overrides.get("codebook_size", defaults["codebook_size"])
        defaults["coarse_sizes"] = [n for n in DEFAULT_COARSE_SIZES if isinstance(k, int) and n < k]
    cfg = ModelConfig.from_dict({**defaults, **overrides, "name": name})
    out.mkdir(parents=True, exist_ok=True)
    images = load_images(data_dir, crop)
    echo(f"{len(images)} training images from {data_dir}; device {device}; config {cfg}")
    settings = AutoencoderSettings(steps=steps, batch_size=batch_size, crop=crop, lr=lr, eval_every=0)
    ae = train_autoencoder(cfg, images, out, settings, device=device, log=echo, stop_at=stop_at, slim=slim_checkpoints, copy_to=copy_checkpoints_to, init=init)
    if ae.steps_done < steps:
        echo(f"time limit: stopped at autoencoder step {ae.steps_done} of {steps}, checkpoint saved; "
             "run the same command again to resume")
        return
    if autoencoder_only:
        echo(f"autoencoder trained to step {steps}; no prior and no export (--autoencoder-only)")
        return
    # the indices and the prior belong to the autoencoder of this step: after more steps, both start afresh
    indices_path = out / "indices.pt"
    saved = torch.load(indices_path, weights_only=True) if indices_path.exists() else None
    if isinstance(saved, dict) and saved.get("autoencoder_step") == ae.steps_done:
        indices = saved["indices"]
    else:
        if saved is not None:
            echo("indices.pt is from another autoencoder step: collecting the indices again")
        indices = collect_indices(ae, images, prior_crops, crop=prior_crop, device=device)
        torch.save({"indices": indices, "autoencoder_step": ae.steps_done}, indices_path)
    trained = train_prior(ae, indices, out, float_steps=prior_steps, qat_steps=max(1, prior_steps // 3),
                          device=device, log=echo, stop_at=stop_at, copy_to=copy_checkpoints_to,
                          autoencoder_step=ae.steps_done)
    if trained is None:
        echo("time limit: stopped while training the prior, checkpoint saved; run the same command again to resume")
        return
    prior, int_prior, report = trained
    coarse_codes = None
    if cfg.coarse_sizes:
        coarse_codes = select_coarse_codes(ae, images, max(cfg.coarse_sizes), crop=crop, device=device).cpu()
    from .codec import VQCodec  # needs constriction: imported only once the networks are trained

    weights = VQCodec.serialize(ae.cpu().eval(), int_prior, coarse_codes)
    report.update(autoencoder_steps=steps, prior_steps=prior_steps, batch_size=batch_size, crop=crop, lr=lr,
                  device=device, images=len(images), last_invocation_wall_time_s=round(time.time() - t0),
                  autoencoder_wall_time_s=round(ae.train_seconds), weights_bytes=len(weights))
    export_model(weights, cfg, report, out / name)
    echo(f"exported {out / name} ({len(weights) / 1e6:.1f} MB) in {time.time() - t0:.0f}s")
