"""Helpers of `vqcodec train` (recipe.py runs the phases): the device, and writing a model folder."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from .config import ModelConfig


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
