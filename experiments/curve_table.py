"""A learning curve (curve.jsonl of an autoencoder phase) as the markdown table of a model card.

    python experiments/curve_table.py runs/v4/r64/autoencoder/curve.jsonl --every 2000

Columns: step, wall time, and PSNR / bpp of the held-out crops at the points asked for (vqN: N VQ stages; rKbB:
refinement level K on B stages). VQ bits are each stage's unigram entropy (an upper
bound of the prior's); refinement bits the model's Gaussian at rounded values (train.evaluate_autoencoder); and,
where the curve has it, the unquantized transform's PSNR.
"""
from __future__ import annotations

import argparse
import json


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("curve")
    ap.add_argument("--every", type=int, default=2000)
    ap.add_argument("--points", default="vq1,vq10,r4b5,r8b5", help="the curve's points to show")
    args = ap.parse_args()
    rows = [json.loads(line) for line in open(args.curve) if line.strip()]
    rows = list({r["step"]: r for r in rows}.values())   # a resumed run measures a step again: the last counts
    rows = [r for r in rows if r["step"] % args.every == 0] + ([rows[-1]] if rows[-1]["step"] % args.every else [])
    cols = args.points.split(",")
    ceiling = any("transform_psnr" in r for r in rows)   # curves from 2026-12-03 on: the unquantized transform
    print("| step | wall (h) | " + " | ".join(f"{c} PSNR (dB) | {c} bpp" for c in cols)
          + (" | unquantized (dB)" if ceiling else "") + " |")
    print("|---:|---:|" + "---:|---:|" * len(cols) + ("---:|" if ceiling else ""))
    for r in rows:
        cells = " | ".join(f"{r[c]['psnr']:.2f} | {r[c]['bpp']:.3f}" for c in cols)
        extra = f" | {r['transform_psnr']:.2f}" if "transform_psnr" in r else (" | -" if ceiling else "")
        print(f"| {r['step']:,} | {r['wall_s'] / 3600:.1f} | {cells}{extra} |")


if __name__ == "__main__":
    main()
