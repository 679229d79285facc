"""benchmarks/device_check.py, the cross-device check a GPU session runs (issue 8): here both sides on the CPU,
so the indices must agree, and a tar whose recorded indices differ must be reported and fail."""
from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "device_check.py"


def _run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, cwd=ROOT)


def test_encode_then_verify_on_the_cpu_agrees_and_a_changed_index_hash_fails(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    Image.open(ROOT / "benchmarks" / "kodak" / "kodim23.png").convert("RGB").crop((256, 128, 352, 192)).save(images / "k23.png")
    tar = tmp_path / "check.tar"
    r = _run("encode", tar, "--device", "cpu", "--images", images, "--qualities", "1,3,6")
    assert r.returncode == 0, r.stderr
    r = _run("verify", tar, "--images", images, "--out", tmp_path / "report.json")
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert (report["files"], report["index_mismatches"], report["same_file_as_cpu_encode"]) == (3, 0, 3)
    assert report["per_file"]["k23_q6.vq"]["psnr_cpu_decode"] > 30

    with tarfile.open(tar) as t:                      # the device "decoded" other indices for one file
        members = {m.name: t.extractfile(m).read() for m in t.getmembers()}
    encoded = json.loads(members["encode.json"])
    encoded["files"]["k23_q3.vq"]["index_sha256"] = "0" * 64
    members["encode.json"] = json.dumps(encoded).encode()
    bad = tmp_path / "bad.tar"
    with tarfile.open(bad, "w") as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    r = _run("verify", bad, "--images", images)
    assert r.returncode == 1
    assert "k23_q3.vq INDICES DIFFER" in r.stdout
    assert "3 files: 1 with other indices on the CPU" in r.stdout
