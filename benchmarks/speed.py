"""Speed of vqcodec on one image: whole `vqcodec` processes, and in-process with the model loaded.

    python benchmarks/speed.py [--image benchmarks/kodak/kodim23.png] [--quality Q] [--repeat 5] [--model NAME]

Prints a markdown table and writes benchmarks/results/speed_<device>.json (or --out). Run on an idle machine.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def median_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image", default=str(ROOT / "benchmarks/kodak/kodim23.png"))
    ap.add_argument("--quality", type=int, default=None, help="default: the highest")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", default=None, help="a shipped model's name (default: the default model)")
    ap.add_argument("--out", default=None, help="default: benchmarks/results/speed_<device>.json")
    args = ap.parse_args()

    import torch
    from PIL import Image

    from vqcodec.codec import load_codec

    t = time.perf_counter()
    codec = load_codec(args.model, args.device)
    load_s = time.perf_counter() - t
    quality = args.quality or codec.qualities[-1]
    image = Image.open(args.image).convert("RGB")
    data = codec.compress(image, quality)  # warm-up
    codec.decompress(data)
    enc_s = median_time(lambda: codec.compress(image, quality), args.repeat)
    enc_split = dict(codec.last_timings)
    dec_s = median_time(lambda: codec.decompress(data), args.repeat)
    dec_split = dict(codec.last_timings)

    with tempfile.TemporaryDirectory() as tmp:
        vq, png = Path(tmp) / "x.vq", Path(tmp) / "x.png"
        base = [sys.executable, "-m", "vqcodec.cli"]
        env = dict(os.environ)
        proc_enc = median_time(lambda: subprocess.run(base + ["compress", args.image, str(vq), "-q", str(quality),
                                                              "--force", "--quiet", "--device", args.device]
                                                      + (["--model", args.model] if args.model else []),
                                                      check=True, env=env), args.repeat)
        proc_dec = median_time(lambda: subprocess.run(base + ["decompress", str(vq), str(png), "--force",
                                                              "--quiet", "--device", args.device]
                                                      + (["--model", args.model] if args.model else []),
                                                      check=True, env=env), args.repeat)
        import_s = median_time(lambda: subprocess.run([sys.executable, "-c", "import torch"], check=True), 3)

    result = {
        "image": Path(args.image).name, "model": codec.model_name, "size": list(image.size), "quality": quality,
        "bytes": len(data),
        "bpp": 8 * len(data) / (image.width * image.height), "device": args.device,
        "cpu": platform.processor() or platform.machine(), "torch_threads": torch.get_num_threads(),
        "model_load_s": load_s, "in_process": {"compress_s": enc_s, "decompress_s": dec_s,
                                               "compress_split": enc_split, "decompress_split": dec_split},
        "whole_process": {"compress_s": proc_enc, "decompress_s": proc_dec, "import_torch_s": import_s},
        "repeat": args.repeat,
    }
    out = Path(args.out) if args.out else ROOT / "benchmarks/results" / f"speed_{args.device}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    fmt = lambda d: ", ".join(f"{k[:-2]} {v:.3f}" for k, v in d.items())
    print(f"| {result['image']} {image.width}x{image.height}, quality {quality} ({result['bpp']:.3f} bpp) | seconds |")
    print("|---|---|")
    print(f"| `vqcodec compress` process | {proc_enc:.2f} |")
    print(f"| `vqcodec decompress` process | {proc_dec:.2f} |")
    print(f"| `import torch` alone | {import_s:.2f} |")
    print(f"| model load | {load_s:.3f} |")
    print(f"| compress in-process | {enc_s:.3f} ({fmt(enc_split)}) |")
    print(f"| decompress in-process | {dec_s:.3f} ({fmt(dec_split)}) |")


if __name__ == "__main__":
    main()
