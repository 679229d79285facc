"""Two learning curves (curve.jsonl of an autoencoder phase) side by side at the steps both measured: an arm
against its control, evaluated on the same held-out crops.

    python experiments/curve_diff.py runs/v4/r64/autoencoder/curve.jsonl runs/v4/crop256/autoencoder/curve.jsonl --from 60000

For each shared step: the arm's PSNR minus the control's (dB) and its bits over the control's (%), at each point
asked for, and the difference of the unquantized transform's PSNR where both curves have it. A resumed run
measures a step again: the last record of a step counts.
"""
from __future__ import annotations

import argparse
import json


def read(path: str) -> dict[int, dict]:
    return {r["step"]: r for r in (json.loads(line) for line in open(path) if line.strip())}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("control")
    ap.add_argument("arm")
    ap.add_argument("--from", dest="start", type=int, default=0, help="the first step shown (where the arm forked)")
    ap.add_argument("--points", default="vq1,vq10,r1b5,r4b5,r8b5", help="the curve's points to show")
    args = ap.parse_args()
    control, arm = read(args.control), read(args.arm)
    steps = sorted(s for s in control.keys() & arm.keys() if s >= args.start)
    cols = args.points.split(",")
    print("| step | " + " | ".join(f"{c} dB | {c} bits" for c in cols) + " | unquantized dB |")
    print("|---:|" + "---:|---:|" * len(cols) + "---:|")
    for s in steps:
        a, c = arm[s], control[s]
        cells = " | ".join(f"{a[k]['psnr'] - c[k]['psnr']:+.2f} | {100 * (a[k]['bpp'] / c[k]['bpp'] - 1):+.1f} %"
                           for k in cols)
        ceiling = (f"{a['transform_psnr'] - c['transform_psnr']:+.2f}"
                   if "transform_psnr" in a and "transform_psnr" in c else "-")
        print(f"| {s:,} | {cells} | {ceiling} |")


if __name__ == "__main__":
    main()
