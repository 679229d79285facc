"""Encoder-side refinement of the latents (issue 8, item 5), on training crops (not Kodak).

    python benchmarks/latent_refinement.py [--model NAME] [--crops 8] [--iters 0,5,10] [--stages 1,2,3,5,10]

The decoder and the prior stay as trained; only the encoder's choice changes. For each crop and number of
stages q, `VQAutoencoder.refine_indices` (what `compress --effort 1` ran in vqcodec 0.3, with 5 steps)
starts the latent z at the encoder's output and takes `iters` Adam steps (lr 0.02 relative to the latent's
RMS) on the pixel MSE of decode(RVQ_q(z)), through the quantizer by straight-through; each crop keeps the
indices of its best step. Reported: PSNR and the real payload bits (the integer prior coding the indices), against the
plain encoder (iters 0), and the seconds it costs per megapixel. Writes benchmarks/results/latent_refinement.json.
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
    ap.add_argument("--crops", type=int, default=8)
    ap.add_argument("--iters", default="0,5,10")
    ap.add_argument("--stages", default="1,2,3,5,10")
    ap.add_argument("--data", default="../shared/data/train")
    ap.add_argument("--out", default="benchmarks/results/latent_refinement.json")
    args = ap.parse_args()

    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    from compare_autoencoders import training_crops
    from vqcodec.codec import load_codec
    from vqcodec.coding import stream_bytes

    torch.set_num_threads(1)
    codec = load_codec(args.model)
    ae = codec.autoencoder.eval()
    for p in ae.parameters():
        p.requires_grad_(False)
    crops = training_crops(args.data)[:args.crops]                         # (N, 3, 256, 256)
    pixels = crops.shape[0] * crops.shape[2] * crops.shape[3]
    rows = []
    for q in map(int, args.stages.split(",")):
        for iters in map(int, args.iters.split(",")):
            t0, se, bits = time.time(), 0.0, 0
            for x in crops:
                idx = ae.encode_indices(x[None], q, refine_steps=iters)   # what compress --effort 1 ran in vqcodec 0.3
                bits += 8 * stream_bytes(codec.coder.encode(idx[0]))
                with torch.no_grad():
                    se += float((ae.decode_indices(idx) - x[None]).pow(2).mean((1, 2, 3)).sum())
            # psnr of the mean squared error over crops, as compare_autoencoders.py
            row = {"stages": q, "iters": iters, "bpp": round(bits / pixels, 4),
                   "psnr": round(-10 * float(torch.log10(torch.tensor(se / len(crops)))), 3),
                   "seconds_per_megapixel": round((time.time() - t0) / (pixels / 1e6), 2)}
            print(json.dumps(row), flush=True)
            rows.append(row)
    from vqcodec.bench.bdrate import bd_rate

    curve = {i: [(r["bpp"], r["psnr"]) for r in rows if r["iters"] == i] for i in map(int, args.iters.split(","))}
    anchor = list(zip(*curve[0]))
    bd = {i: round(bd_rate(anchor[0], anchor[1], *zip(*pts)), 2) for i, pts in curve.items() if i != 0}
    print("BD-rate (PSNR) against no refinement:", bd, flush=True)
    Path(args.out).write_text(json.dumps({"command": "python benchmarks/latent_refinement.py " + " ".join(sys.argv[1:]),
                                          "model": codec.model_name, "crops": args.crops, "rows": rows,
                                          "bd_rate_vs_no_refinement": bd}, indent=1) + "\n")


if __name__ == "__main__":
    main()
