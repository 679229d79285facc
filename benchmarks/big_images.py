"""Big images in bounded memory: peak RSS and time of compress and decompress at 1, 12, 50 and 100 megapixels,
and the seams at tile boundaries.

    python benchmarks/big_images.py [--sizes 1,12,50,100] [--quality 7] [--out benchmarks/results/big_images.json]

Each image is a mosaic of the 24 Kodak images (reporting data, nothing is tuned on it), resized with
Lanczos to the target size and saved as PNG. Each measurement runs in a fresh process (`--one`), which reads
the input file, runs `vqcodec.compress` (or `vqcodec.decompress`) in-process with the default model, and
reports its wall time and its own peak RSS (`resource.getrusage`, import torch and the model included).
The seam check decodes the 12-megapixel file and compares the PSNR of the pixels within 8 of a tile boundary
(tiles are 1024 x 1024 pixels) with the PSNR of all other pixels.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make_image(megapixels: float, path: Path) -> tuple[int, int]:
    from PIL import Image

    tiles = [Image.open(p).convert("RGB").resize((768, 512)) for p in sorted((ROOT / "benchmarks" / "kodak").glob("*.png"))]
    mosaic = Image.new("RGB", (768 * 6, 512 * 4))
    for i, t in enumerate(tiles):
        mosaic.paste(t, ((i % 6) * 768, (i // 6) * 512))
    width = int(round((megapixels * 1e6 * 1.5) ** 0.5))
    height = int(round(megapixels * 1e6 / width))
    Image.MAX_IMAGE_PIXELS = None
    mosaic.resize((width, height), Image.Resampling.LANCZOS).save(path, compress_level=1)
    return width, height


def one(kind: str, src: str, dst: str, quality: int) -> None:
    import resource

    import vqcodec
    t = time.perf_counter()
    if kind == "compress":
        Path(dst).write_bytes(vqcodec.compress(src, quality=quality))
    else:
        im = vqcodec.decompress(Path(src).read_bytes())
        im.save(dst, compress_level=1)
    seconds = time.perf_counter() - t
    print(json.dumps({"seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def measure(kind: str, src: Path, dst: Path, quality: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--one", kind, str(src), str(dst), "--quality", str(quality)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def seams(original: Path, decoded: Path, tile_px: int = 1024, band: int = 8) -> dict:
    import numpy as np
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None
    a = np.asarray(Image.open(original).convert("RGB"), np.float64)
    b = np.asarray(Image.open(decoded).convert("RGB"), np.float64)
    err = ((a - b) ** 2).mean(2)
    near = np.zeros(err.shape, bool)
    for y in range(tile_px, err.shape[0], tile_px):
        near[y - band:y + band] = True
    for x in range(tile_px, err.shape[1], tile_px):
        near[:, x - band:x + band] = True
    psnr = lambda e: float(10 * np.log10(255 ** 2 / e.mean()))
    return {"psnr_near_boundaries": psnr(err[near]), "psnr_elsewhere": psnr(err[~near]), "band_px": band}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1,12,50,100", help="megapixels, comma-separated")
    ap.add_argument("--quality", type=int, default=7)
    ap.add_argument("--out", default="benchmarks/results/big_images.json")
    ap.add_argument("--one", nargs=3, metavar=("KIND", "SRC", "DST"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        return one(*args.one, args.quality)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for mp in (float(s) for s in args.sizes.split(",")):
            src, vq, back = tmp / f"{mp}.png", tmp / f"{mp}.vq", tmp / f"{mp}.back.png"
            w, h = make_image(mp, src)
            enc = measure("compress", src, vq, args.quality)
            dec = measure("decompress", vq, back, args.quality)
            row = {"megapixels": w * h / 1e6, "width": w, "height": h, "quality": args.quality,
                   "bytes": vq.stat().st_size, "bpp": 8 * vq.stat().st_size / (w * h),
                   "compress_s": enc["seconds"], "compress_peak_rss_mb": enc["peak_rss_mb"],
                   "decompress_s": dec["seconds"], "decompress_peak_rss_mb": dec["peak_rss_mb"]}
            row["compress_s_per_mp"] = row["compress_s"] / row["megapixels"]
            row["decompress_s_per_mp"] = row["decompress_s"] / row["megapixels"]
            if 10 <= mp <= 20:
                row["seams"] = seams(src, back)
            print(json.dumps(row), flush=True)
            rows.append(row)
            for p in (src, vq, back):
                p.unlink(missing_ok=True)
    Path(args.out).write_text(json.dumps({"command": "python benchmarks/big_images.py " + " ".join(sys.argv[1:]),
                                          "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
