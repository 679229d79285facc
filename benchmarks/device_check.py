"""Encode on one device, decode on another: are the files the same contract? (issue 8: "encode on CUDA and
decode on the CPU, compare the indices").

    # on the GPU machine (part of benchmarks/gpu_session.sh):
    python3 benchmarks/device_check.py encode $OUT/device_check.tar --device cuda
    # here, on the CPU, with the tar that came back:
    python benchmarks/device_check.py verify FILES_AT/device_check.tar --out benchmarks/results/device_check_cuda.json

`encode` compresses the Kodak images (benchmarks/kodak) at --qualities on --device, decodes each file's indices
on that same device, and writes one tar: every .vq file plus `encode.json` (per file: the SHA-256 of the
indices the device decoded, the bytes, the seconds; the device's name, torch's version). One tar, because the
device tool returns at most 8 files.

`verify` decodes every file of such a tar on the CPU (at 1 and at 2 threads) and compares:
- the indices, bit for bit, against what the encoding device decoded. A .vq file is a contract: these must agree
  for every file, or the integer prior is not exact across devices;
- the pixels: PSNR of the CPU's decode against the original image;
- the encoder's choice: the same image compressed here on the CPU, byte for byte. The encoder's networks run in
  floating point, so a GPU may choose other indices for a few latents; that is allowed (the decoder reads what
  the file says), and this counts how often it happens.
Writes a JSON report and exits 1 if any index differs.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import tarfile
import time
from pathlib import Path

KODAK = Path(__file__).resolve().parent / "kodak"


def index_hash(data: bytes, device: str) -> str:
    """SHA-256 of a .vq file's indices as `device`'s coder decodes them (little-endian int64)."""
    import vqcodec
    from vqcodec.codec import load_codec

    indices = load_codec(vqcodec.read_info(data).model_name, device).read_indices(data).numpy().astype("<i8")
    return hashlib.sha256(indices.tobytes()).hexdigest()


def encode(args) -> None:
    import torch
    from PIL import Image

    from vqcodec.codec import load_codec

    codec = load_codec(args.model, args.device)
    report = {"device": args.device, "torch": torch.__version__, "model": codec.cfg.name, "files": {}}
    if args.device.startswith("cuda"):
        report["device_name"] = torch.cuda.get_device_name(torch.device(args.device))
    paths = sorted(Path(args.images).glob("*.png"))
    if not paths:
        raise SystemExit(f"Error: no .png images in {args.images}")
    args.tar.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(args.tar, "w") as tar:
        for path in paths:
            image = Image.open(path).convert("RGB")
            for q in args.qualities:
                t0 = time.perf_counter()
                data = codec.compress(image, q)
                seconds = time.perf_counter() - t0
                name = f"{path.stem}_q{q}.vq"
                report["files"][name] = {"bytes": len(data), "encode_s": round(seconds, 3),
                                         "index_sha256": index_hash(data, args.device)}
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            print(path.name, "done", flush=True)
        blob = json.dumps(report, indent=1).encode()
        info = tarfile.TarInfo("encode.json")
        info.size = len(blob)
        tar.addfile(info, io.BytesIO(blob))
    print(f"wrote {args.tar}: {len(report['files'])} files", flush=True)


def verify(args) -> int:
    import numpy as np
    import torch
    from PIL import Image

    import vqcodec
    from vqcodec.codec import load_codec

    with tarfile.open(args.tar) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    if "encode.json" not in members:
        raise SystemExit(f"Error: {args.tar} has no encode.json (not a device_check.py tar)")
    encoded = json.loads(members.pop("encode.json"))
    rows, index_mismatch, same_bytes = {}, 0, 0
    for name, info in sorted(encoded["files"].items()):
        data = members[name]
        stem, q = name[:-3].rsplit("_q", 1)
        hashes = {}
        for threads in (1, 2):
            torch.set_num_threads(threads)
            hashes[threads] = index_hash(data, "cpu")
        ok = all(h == info["index_sha256"] for h in hashes.values())
        index_mismatch += not ok
        original = Image.open(Path(args.images) / f"{stem}.png").convert("RGB")
        decoded = np.asarray(vqcodec.decompress(data), np.float64)
        mse = np.mean((decoded - np.asarray(original, np.float64)) ** 2)
        here = load_codec(encoded["model"]).compress(original, int(q))
        same_bytes += here == data
        rows[name] = {"indices_equal": ok, "psnr_cpu_decode": round(float(10 * np.log10(255 ** 2 / mse)), 3),
                      "bytes_device": len(data), "bytes_cpu_encode": len(here), "same_file_as_cpu_encode": here == data}
        print(name, "indices equal" if ok else "INDICES DIFFER", rows[name]["psnr_cpu_decode"], "dB",
              "same bytes as the CPU's encode" if here == data else f"CPU encode {len(here)} B, device {len(data)} B",
              flush=True)
    report = {"encoded_on": {k: v for k, v in encoded.items() if k != "files"}, "decoded_on": "cpu, 1 and 2 threads",
              "torch_here": torch.__version__, "files": len(rows), "index_mismatches": index_mismatch,
              "same_file_as_cpu_encode": same_bytes, "per_file": rows}
    print(f"{len(rows)} files: {index_mismatch} with other indices on the CPU; "
          f"{same_bytes} byte-identical to the CPU's own encode")
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    return 1 if index_mismatch else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("encode", help="compress on --device, write one tar")
    e.add_argument("tar", type=Path)
    e.add_argument("--device", default="cuda")
    e.add_argument("--model", default=None, help="model name or folder (default: the shipped model)")
    e.add_argument("--qualities", type=lambda s: [int(q) for q in s.split(",")], default=[1, 3, 6, 9, 12])
    e.add_argument("--images", default=str(KODAK))
    v = sub.add_parser("verify", help="decode a tar's files on the CPU and compare")
    v.add_argument("tar", type=Path)
    v.add_argument("--images", default=str(KODAK))
    v.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.cmd == "encode":
        encode(args)
    else:
        sys.exit(verify(args))


if __name__ == "__main__":
    main()
