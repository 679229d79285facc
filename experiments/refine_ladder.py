"""Issue 30: a refined model's quality ladder, measured with real files on the held-out photos, from a checkpoint
of a run still training (the export phase's refine_ladder "auto" does the same at the end of a run).

    python experiments/refine_ladder.py runs/v4/r64/autoencoder/autoencoder.ckpt --json experiments/results/refine_ladder_step13k.json

Every VQ level and every (refinement level k, VQ stages b) is compressed at the default effort (vqcodec/ladder.py).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from vqcodec.holdout import split
from vqcodec.recipe import ExportSettings, export_weights
from vqcodec.train import load_autoencoder


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("--data", default="../shared/data/train")
    ap.add_argument("--json")
    args = ap.parse_args()
    ae, state = load_autoencoder(args.checkpoint)
    train, held = split(args.data)
    _, cfg, report = export_weights(ae.eval(), ExportSettings(prior_from="vqf8-v13", half=True, refine_ladder="auto"),
                                    train, held=held)
    out = dict(checkpoint_step=state["step"], vq_qualities=cfg.vq_qualities, refine_ladder=cfg.refine_ladder, **report)
    print(json.dumps({k: out[k] for k in ("checkpoint_step", "vq_qualities", "refine_ladder")}))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
