# Frozen record, not maintained. It ran as benchmarks/beam_search.py (first at commit 29d7bee); the record is
# experiments/beam-search.md and experiments/latent-refinement.md. Its paths (benchmarks/..., benchmarks/results/...) and its imports of other
# benchmarks/ scripts are as they were then: run it from that commit, not from here.
"""Beam search over the residual stages against greedy nearest codes, on training crops (not Kodak).

    python benchmarks/beam_search.py [--model NAME] [--crops 12] [--arms b1,b4,b8] [--stages 1,2,3,5,7,10]

The greedy encoder takes the nearest code at each stage given the ones before it. A beam search keeps the
`beam` best partial paths (lowest latent squared error) from stage to stage and picks the best whole path at
the end: the same codebooks, the same decoder and the same prior, only the encoder's choice changes, so it
needs no format change. An arm "bB" is beam B (b1: greedy); "rNbB" first refines the latents for N steps
(`VQAutoencoder.refine_indices`, each step quantized with beam B). Reported per stage count: the real payload
bits (the integer prior coding the indices), the PSNR of the decoded crops, and the encoder's seconds per
megapixel (network and search); then the BD-rate (PSNR) of each arm against the first.
Writes benchmarks/results/beam_search.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--crops", type=int, default=12)
    ap.add_argument("--arms", default="b1,b4,b8")
    ap.add_argument("--stages", default="1,2,3,5,7,10")
    ap.add_argument("--data", default="../shared/data/train")
    ap.add_argument("--out", default="benchmarks/results/beam_search.json")
    args = ap.parse_args()

    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    from compare_autoencoders import training_crops
    from vqcodec.bench.bdrate import bd_rate
    from vqcodec.codec import load_codec
    from vqcodec.coding import stream_bytes

    torch.set_num_threads(1)
    codec = load_codec(args.model)
    ae = codec.autoencoder.eval()
    crops = training_crops(args.data)[:args.crops]                         # (N, 3, 256, 256)
    pixels = crops.shape[0] * crops.shape[2] * crops.shape[3]
    arms = args.arms.split(",")
    rows = []
    for q in map(int, args.stages.split(",")):
        for arm in arms:
            refine, beam = (int(v) for v in arm.lstrip("r").replace("b", " ").split()) if arm.startswith("r") \
                else (0, int(arm[1:]))
            encode_s, se, bits = 0.0, 0.0, 0
            for x in crops:
                t0 = time.time()
                idx = ae.encode_indices(x[None], q, refine_steps=refine, beam=beam)   # (1, h, w, q)
                encode_s += time.time() - t0
                bits += 8 * stream_bytes(codec.coder.encode(idx[0]))
                with torch.no_grad():
                    se += float((ae.decode_indices(idx) - x[None]).pow(2).mean())
            row = {"stages": q, "arm": arm, "refine_steps": refine, "beam": beam, "bpp": round(bits / pixels, 4),
                   "psnr": round(-10 * float(torch.log10(torch.tensor(se / len(crops)))), 3),
                   "encode_seconds_per_megapixel": round(encode_s / (pixels / 1e6), 3)}
            print(json.dumps(row), flush=True)
            rows.append(row)
    curve = {a: [(r["bpp"], r["psnr"]) for r in rows if r["arm"] == a] for a in arms}
    anchor = list(zip(*curve[arms[0]]))
    bd = {a: round(bd_rate(anchor[0], anchor[1], *zip(*pts)), 2) for a, pts in curve.items() if a != arms[0]}
    print(f"BD-rate (PSNR) against {arms[0]}:", bd, flush=True)
    Path(args.out).write_text(json.dumps({"command": "python benchmarks/beam_search.py " + " ".join(sys.argv[1:]),
                                          "model": codec.model_name, "crops": args.crops, "rows": rows,
                                          "bd_rate_vs_first_arm": bd}, indent=1) + "\n")


if __name__ == "__main__":
    main()
