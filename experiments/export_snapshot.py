"""Issue 30: a model folder from a checkpoint of a run still training, to measure it (never shipped as is).

    python experiments/export_snapshot.py runs/v4/r64/autoencoder/autoencoder.ckpt runs/snap/vqf8-r1 \
        --vq-qualities 7 --ladder 1,3 2,3 3,3 4,5 5,4 6,6 7,6 8,8

The same export as the recipe's export phase (recipe.export_weights): v13's prior and coarse codes (the VQ side
is frozen from it), 16-bit weights, the integer refinement calibrated on 32 training crops.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from vqcodec.holdout import split
from vqcodec.recipe import ExportSettings, export_weights
from vqcodec.train import load_autoencoder
from vqcodec.training_cli import export_model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("out")
    ap.add_argument("--data", default="../shared/data/train")
    ap.add_argument("--vq-qualities", type=int, default=0)
    ap.add_argument("--ladder", nargs="*", default=[])
    args = ap.parse_args()
    ae, state = load_autoencoder(args.checkpoint)
    ladder = tuple(tuple(int(v) for v in p.split(",")) for p in args.ladder)
    settings = ExportSettings(prior_from="vqf8-v13", half=True, vq_qualities=args.vq_qualities, refine_ladder=ladder)
    weights, cfg, _ = export_weights(ae.eval(), settings, split(args.data)[0])
    export_model(weights, cfg, dict(snapshot_of=args.checkpoint, step=state["step"], elapsed_s=state["elapsed_s"]),
                 Path(args.out))
    print(json.dumps(dict(out=args.out, step=state["step"], mb=round(len(weights) / 1e6, 2))))


if __name__ == "__main__":
    main()
