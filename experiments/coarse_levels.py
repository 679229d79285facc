# Frozen record, not maintained. It ran as benchmarks/coarse_levels.py (first at commit 4073571); the record is
# experiments/coarse-levels.md. Its paths (benchmarks/..., benchmarks/results/...) and its imports of other
# benchmarks/ scripts are as they were then: run it from that commit, not from here.
"""Rate and PSNR of stage 0 limited to its first n coarse codes, on fixed training crops (not Kodak:
this chooses the coarse levels' sizes).

    python benchmarks/coarse_levels.py [--model NAME] [--sizes 8,16,32,64,128,256,512]

Uses the model's own coarse code order when it has one; otherwise orders the codes the way
`vqcodec train` does (`select_coarse_codes` on the training photos). For each n: PSNR of the 48 crops of
compare_autoencoders.py, and bits per latent of the real payload (the prior's tables merged by cells,
as a coarse level codes them); n = K is the model's full first stage. Writes
benchmarks/results/coarse_levels.json.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from compare_autoencoders import training_crops

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--sizes", default="8,16,32,64,128,256,512")
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data/train"))
    args = ap.parse_args()

    import torch
    from tqdm import tqdm

    from vqcodec.codec import load_codec
    from vqcodec.coding import CoarseAlphabet, stream_bytes
    from vqcodec.train import load_images, select_coarse_codes

    codec = load_codec(args.model)
    ae, k = codec.autoencoder, codec.cfg.codebook_size
    sizes = [int(n) for n in args.sizes.split(",")]
    order = codec.coarse_codes
    if order is None or len(order) < max(n for n in sizes if n < k):
        order = select_coarse_codes(ae, load_images(args.data, 128), k - 1)
    crops = training_crops(args.data)                                         # (48, 3, 256, 256)
    with torch.no_grad():
        latents = torch.cat([ae.encoder(crops[i:i + 8]) for i in range(0, len(crops), 8)])  # (48, D, 32, 32)
    flat = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1])
    rows = []
    for n in sizes:
        alphabet = None if n >= k else CoarseAlphabet.build(codec.prior.t["codebooks"][0], order[:n])
        stage0 = ae.rvq.stages[0].nearest(flat, None if alphabet is None else alphabet.codes)
        indices = stage0.reshape(len(crops), 32, 32, 1)
        with torch.no_grad():
            out = torch.cat([ae.decode_indices(indices[i:i + 8]) for i in range(0, len(crops), 8)])
        bits = sum(8 * stream_bytes(codec.coder.encode(grid, coarse=alphabet)) for grid in tqdm(indices, desc=f"n={n}"))
        row = {"codes": min(n, k), "psnr": round(float(-10 * torch.log10((out - crops).pow(2).mean())), 2),
               "bits_per_latent": round(bits / indices.numel(), 3),
               "bpp": round(bits / indices.numel() / codec.cfg.downsampling ** 2, 4)}
        rows.append(row)
        print(row, flush=True)
    out_path = ROOT / "benchmarks/results/coarse_levels.json"
    out_path.write_text(json.dumps({"model": codec.model_name, "crops": "48 fixed 256x256 training crops",
                                    "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
