"""Record the shipped model's bpp and PSNR on kodim23 at every quality, for tests/test_shipped_model.py.

    python benchmarks/expectations.py [--model NAME]   (default: the default shipped model)

Writes models/<model>/test_expectations.json. Run it once when a new model is exported.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    args = ap.parse_args()

    import numpy as np
    from PIL import Image

    from vqcodec.codec import DEFAULT_MODEL, load_codec, resolve_model_dir

    args.model = args.model or DEFAULT_MODEL

    codec = load_codec(args.model)
    photo = Image.open(ROOT / "benchmarks/kodak/kodim23.png").convert("RGB")
    ref = np.asarray(photo, np.float64)
    rows = {}
    for q in codec.qualities:
        data = codec.compress(photo, q)
        mse = np.mean((np.asarray(codec.decompress(data), np.float64) - ref) ** 2)
        rows[str(q)] = {"bpp": round(8 * len(data) / (photo.width * photo.height), 5),
                        "psnr": round(float(10 * np.log10(255 ** 2 / mse)), 3)}
        print(q, rows[str(q)])
    out = resolve_model_dir(args.model) / "test_expectations.json"
    out.write_text(json.dumps({"kodim23": rows}, indent=2) + "\n")
    print("wrote", out)


if __name__ == "__main__":
    main()
