"""How well the integer prior codes the indices, on a folder of images (default: Kodak).

    python benchmarks/prior_stats.py [--dataset benchmarks/kodak] [--model NAME]

For each quality: bits per index of the file's payload, of the prior's ideal code length
(cross-entropy under its integer tables), and of plain log2(alphabet) coding (K codes, or a coarse
level's n); the prior's saving over that and the payload's overhead over the cross-entropy; per residual stage, how many of the K codes
the images use and their perplexity (2 ** entropy of the stage's code histogram).
Writes benchmarks/results/prior_stats.json.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default=str(ROOT / "benchmarks/kodak"))
    ap.add_argument("--model", default=None)
    args = ap.parse_args()

    import numpy as np
    import torch
    from PIL import Image
    from tqdm import tqdm

    from vqcodec.codec import load_codec
    from vqcodec.coding import stream_bytes
    from vqcodec.images import pad_to_multiple

    codec = load_codec(args.model)
    f, k = codec.cfg.downsampling, codec.cfg.codebook_size
    paths = sorted(Path(args.dataset).glob("*.png"))
    totals = {q: {"ideal_bits": 0.0, "payload_bits": 0, "indices": 0} for q in codec.qualities}
    counts = torch.zeros(codec.cfg.num_stages, k, dtype=torch.float64)  # code histogram per stage
    for path in tqdm(paths, desc="images"):
        arr = pad_to_multiple(np.asarray(Image.open(path).convert("RGB")), f)
        x = torch.from_numpy(arr.copy()).permute(2, 0, 1)[None].float() / 255
        all_indices = codec.autoencoder.encode_indices(x, codec.cfg.num_stages)[0]  # (h, w, S)
        for stage in range(codec.cfg.num_stages):
            counts[stage] += torch.bincount(all_indices[..., stage].flatten(), minlength=k).double()
        for q in codec.qualities:
            stages, coarse = codec.quality_plan(q)
            if coarse is None:
                indices = all_indices[..., :stages]
            else:  # a coarse level: stage 0 limited to the level's codes
                indices = codec.autoencoder.encode_indices(x, 1, coarse.codes)[0]
            stats: dict = {}
            payload = codec.coder.encode(indices, stats=stats, coarse=coarse)
            totals[q]["ideal_bits"] += stats["ideal_bits"]
            totals[q]["payload_bits"] += 8 * stream_bytes(payload)
            totals[q]["indices"] += indices.numel()
            totals[q]["alphabet"] = k if coarse is None else len(coarse.codes)
    rows = []
    print("| quality | payload bits/index | prior cross-entropy | log2(alphabet) | saving vs log2 | payload overhead |")
    print("|---|---|---|---|---|---|")
    for q, t in totals.items():
        ideal, real = t["ideal_bits"] / t["indices"], t["payload_bits"] / t["indices"]
        uniform = math.log2(t["alphabet"])
        row = {"quality": q, "alphabet": t["alphabet"], "payload_bits_per_index": real,
               "cross_entropy_bits_per_index": ideal, "uniform_bits_per_index": uniform,
               "saving_vs_uniform_pct": 100 * (1 - real / uniform), "payload_overhead_pct": 100 * (real / ideal - 1)}
        rows.append(row)
        print(f"| {q} | {real:.4f} | {ideal:.4f} | {uniform:.2f} | {row['saving_vs_uniform_pct']:.1f} % "
              f"| {row['payload_overhead_pct']:.3f} % |")
    p = counts / counts.sum(1, keepdim=True)
    entropy = -(p * torch.where(p > 0, p.log2(), torch.zeros_like(p))).sum(1)
    stages = [{"stage": s + 1, "codes_used": int((counts[s] > 0).sum()), "perplexity": float(2 ** entropy[s])}
              for s in range(codec.cfg.num_stages)]
    print("codes used per stage:", [r["codes_used"] for r in stages],
          "perplexity:", [round(r["perplexity"]) for r in stages])
    out = ROOT / "benchmarks/results/prior_stats.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"dataset": Path(args.dataset).name, "images": len(paths), "model": codec.model_name,
                               "per_quality": rows, "codebook_usage": stages}, indent=2) + "\n")


if __name__ == "__main__":
    main()
