"""benchmarks/assemble_model.py: the encoder side, the decoder side and the prior taken from three models."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch
from conftest import TINY

from vqcodec.codec import VQCodec
from vqcodec.training_cli import export_model

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "assemble_model.py"


def _run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, cwd=ROOT)


def _export(codec: VQCodec, path: Path) -> Path:
    export_model(VQCodec.serialize(codec.autoencoder, codec.prior), codec.cfg, {"made": path.name}, path)
    return path


def test_parts_come_from_their_models_and_codebooks_must_agree(tmp_path, tiny_codec, tiny_model_dir, photo_like):
    other = VQCodec.load(tiny_model_dir)                          # the same codebooks, another decoder and prior
    with torch.no_grad():
        for k, v in other.autoencoder.state_dict().items():
            if k.startswith("decoder.") and v.dtype.is_floating_point:
                v.add_(0.01)
            if k.startswith("encoder.") and v.dtype.is_floating_point:
                v.mul_(0.5)
    other.prior.t["conv3.bias"] = other.prior.t["conv3.bias"] + 7
    other_dir = _export(other, tmp_path / "other")

    out = tmp_path / "assembled"
    r = _run(out, "--name", "tiny-assembled", "--encoder", tiny_model_dir, "--decoder", other_dir, "--prior", other_dir)
    assert r.returncode == 0, r.stderr
    got = VQCodec.load(out)
    assert got.cfg.name == "tiny-assembled"
    state, enc, dec = (m.autoencoder.state_dict() for m in (got, tiny_codec, other))
    assert all(torch.equal(state[k], enc[k]) for k in state if k.startswith(("encoder.", "rvq.")))
    assert all(torch.equal(state[k], dec[k]) for k in state if k.startswith("decoder."))
    assert torch.equal(got.prior.t["conv3.bias"], other.prior.t["conv3.bias"])
    data = got.compress(photo_like, 2)
    assert torch.equal(got.read_indices(data), tiny_codec.read_indices(tiny_codec.compress(photo_like, 2)))

    assert _run(out, "--name", "x", "--encoder", tiny_model_dir, "--decoder", other_dir, "--prior", other_dir).stderr \
        .strip() == f"Error: {out} exists"
    moved = VQCodec.load(tiny_model_dir)
    moved.autoencoder.rvq.stages[0].codebook.add_(1.0)
    moved_dir = _export(moved, tmp_path / "moved")
    r = _run(tmp_path / "bad", "--name", "x", "--encoder", tiny_model_dir, "--decoder", moved_dir, "--prior", tiny_model_dir)
    assert r.returncode == 1 and r.stderr.strip() == "Error: the decoder model's codebooks differ from the encoder model's"
    assert not (tmp_path / "bad").exists()
