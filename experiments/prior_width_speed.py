# Frozen record, not maintained. It ran as benchmarks/prior_width_speed.py (first at commit eacb101); the record is
# experiments/prior-width.md. Its paths (benchmarks/..., benchmarks/results/...) and its imports of other
# benchmarks/ scripts are as they were then: run it from that commit, not from here.
"""What a wider prior would cost at decode time: the prior's share of one decode, by width.

    python benchmarks/prior_width_speed.py [--widths 64,96,128] [--repeat 5]

The shipped model's config with `prior_hidden` changed, random weights (`VQCodec.random`): the prior's work
depends on its shape, not on its weights. Decodes kodim23 (768x512) at the highest quality, so all 42
prior passes run. The entropy coding of random-weight files is not the shipped model's (their
probabilities are near uniform): only the prior's seconds are comparable. Writes
benchmarks/results/prior_width_speed.json.
"""
import argparse
import json
import statistics
from pathlib import Path

from speed import median_time

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--widths", default="64,96,128")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--image", default=str(ROOT / "benchmarks/kodak/kodim23.png"))
    args = ap.parse_args()

    import torch
    from PIL import Image

    from vqcodec.codec import CONFIG_FILE, VQCodec, resolve_model_dir
    from vqcodec.config import ModelConfig

    image = Image.open(args.image).convert("RGB")
    shipped = ModelConfig.from_dict(json.loads((resolve_model_dir(None) / CONFIG_FILE).read_text()))  # no weights
    rows = []
    for width in [int(w) for w in args.widths.split(",")]:
        codec = VQCodec.random(ModelConfig.from_dict(shipped.to_dict() | {"name": f"width-{width}", "prior_hidden": width}))
        data = codec.compress(image, codec.qualities[-1])
        codec.decompress(data)  # warm-up
        prior_s = []
        decode_s = median_time(lambda: (codec.decompress(data), prior_s.append(codec.last_timings["prior_s"])), args.repeat)
        rows.append(dict(prior_hidden=width, prior_s=statistics.median(prior_s), decode_s=decode_s))
        print(f"prior_hidden {width}: prior {rows[-1]['prior_s']:.3f} s of a {rows[-1]['decode_s']:.3f} s decode")
    out = ROOT / "benchmarks/results/prior_width_speed.json"
    out.write_text(json.dumps(dict(command="python benchmarks/prior_width_speed.py " + f"--widths {args.widths} --repeat {args.repeat}",
                                   image=Path(args.image).name, threads=torch.get_num_threads(), model=shipped.name,
                                   rows=rows), indent=2) + "\n")
    print("wrote", out)


if __name__ == "__main__":
    main()
