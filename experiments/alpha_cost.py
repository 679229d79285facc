# Frozen record, not maintained. It ran as benchmarks/alpha_cost.py (first at commit e17c3cf); the record is
# experiments/alpha-lossless.md. Its paths (benchmarks/..., benchmarks/results/...) and its imports of other
# benchmarks/ scripts are as they were then: run it from that commit, not from here.
"""What alpha costs, lossless (the format's choice) against coding it lossy as a grayscale image.

    python benchmarks/alpha_cost.py

Three alpha masks at Kodak size (768 x 512): a hard-edged shape, the same with a 16-pixel feathered edge, and
a smooth radial vignette. For each: the bytes of the lossless alpha section (a grayscale PNG, method 0) and,
for comparison, vqcodec's own grayscale coding of the mask at qualities 3 and 7 with its maximum and mean
absolute error. The masks are made here; no image data is used.
"""
from __future__ import annotations

import argparse
import json


def masks():
    import numpy as np
    from PIL import Image, ImageDraw, ImageFilter

    w, h = 768, 512
    hard = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(hard)
    draw.ellipse((120, 60, 520, 460), fill=255)
    draw.polygon([(480, 80), (740, 200), (600, 480)], fill=255)
    soft = hard.filter(ImageFilter.GaussianBlur(16))
    y, x = np.mgrid[0:h, 0:w]
    r = np.hypot((x - w / 2) / (w / 2), (y - h / 2) / (h / 2))
    vignette = Image.fromarray(np.clip(255 * (1.3 - r), 0, 255).astype(np.uint8), "L")
    return {"hard edge": hard, "feathered edge": soft, "radial vignette": vignette}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="benchmarks/results/alpha_cost.json")
    args = ap.parse_args()
    import numpy as np

    import vqcodec
    from vqcodec.images import pack_alpha

    rows = []
    for name, mask in masks().items():
        plane = np.asarray(mask)
        row = {"mask": name, "lossless_bytes": len(pack_alpha(plane)),
               "lossless_bpp": 8 * len(pack_alpha(plane)) / plane.size}
        for q in (3, 7):
            data = vqcodec.compress(mask, quality=q)
            err = np.abs(np.asarray(vqcodec.decompress(data), int) - plane)
            row[f"lossy_q{q}"] = {"bytes": len(data), "bpp": 8 * len(data) / plane.size,
                                  "max_abs_error": int(err.max()), "mean_abs_error": float(err.mean())}
        print(json.dumps(row), flush=True)
        rows.append(row)
    with open(args.out, "w") as fh:
        json.dump({"command": "python benchmarks/alpha_cost.py", "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
