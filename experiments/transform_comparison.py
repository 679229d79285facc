# Frozen record, not maintained. It ran as benchmarks/transform_comparison.py (first at commit fb3ffa7); the record is
# experiments/transform-comparison.md and experiments/finetune-from-v3.md. Its paths (benchmarks/..., benchmarks/results/...) and its imports of other
# benchmarks/ scripts are as they were then: run it from that commit, not from here.
"""Transforms compared at equal training time, on training crops (not Kodak): issue 8's "a transform without a
low ceiling".

    python benchmarks/transform_comparison.py --minutes 12 --arms conv-32,klt-32,klt-48 [--run-dir runs/transforms]

Each arm trains an autoencoder with `vqcodec.train.train_autoencoder` (the `vqcodec train` loop: batch 8 of
128 x 128 crops, lr 3e-4 cosine, quantizer dropout) from scratch for the same wall time, one thread. Arms:
`conv-D` is the current architecture with a D-dimensional latent; `klt-D` is the hybrid (config
`transform="klt-hybrid"`): a linear 8 x 8 block transform initialised to the KLT of training blocks plus the
same conv networks as branches that start at zero. Each is then measured on the 48 fixed 256 x 256 training
crops of `compare_autoencoders.py`: PSNR unquantized and after 1, 2, 3, 5 and 10 stages, and a rate proxy, the
empirical entropy of each stage's indices on those crops (no context: an upper bound on what the prior
codes). The shipped default model is measured the same way as a reference. Arms run one after another unless
`--parallel`, which runs two at a time on the two cores.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def arm_config(arm: str):
    from vqcodec.config import ModelConfig

    kind, d = arm.split("-")
    if kind.startswith("ft"):  # ftconv-32, ftklt-32: started from the shipped model (d must be its latent size)
        from vqcodec.codec import load_codec
        shipped = load_codec().autoencoder.cfg
        return ModelConfig(name=f"exp-{arm}", channels=shipped.channels, latent_dim=int(d),
                           transform="klt-hybrid" if kind == "ftklt" else "conv")
    return ModelConfig(name=f"exp-{arm}", latent_dim=int(d), transform="klt-hybrid" if kind == "klt" else "conv")


def train_arm(arm: str, minutes: float, run_dir: Path, data: str, lr: float) -> None:
    import torch

    from vqcodec.train import load_images, train_autoencoder

    torch.set_num_threads(1)
    images = load_images(data, 128)
    out = run_dir / arm
    out.mkdir(parents=True, exist_ok=True)
    init = None
    if arm.startswith("ft"):
        from vqcodec.codec import load_codec
        init = load_codec().autoencoder.train()
    train_autoencoder(arm_config(arm), images, out, steps=100_000, stop_at=time.time() + 60 * minutes, lr=lr,
                      log=lambda m: print(f"[{arm}] {m}", flush=True), init=init)


def evaluate_arm(arm: str, run_dir: Path, crops) -> dict:
    import torch

    from vqcodec.autoencoder import VQAutoencoder
    from vqcodec.train import load_checkpoint

    if arm == "shipped":  # the default model as a reference: trained far longer than any arm here
        from vqcodec.codec import load_codec
        model, ck = load_codec().autoencoder, {"step": "shipped"}
    else:
        ck = load_checkpoint(run_dir / arm / "autoencoder.ckpt", "cpu")
        model = VQAutoencoder(arm_config(arm))
        model.load_state_dict(ck["model"])
    model.eval()
    pixels = crops.shape[0] * crops.shape[2] * crops.shape[3]

    def psnr(run) -> float:
        with torch.no_grad():
            out = torch.cat([run(crops[i:i + 8]) for i in range(0, len(crops), 8)])
        return round(float((-10 * torch.log10((out - crops).pow(2).mean((1, 2, 3)))).mean()), 3)

    with torch.no_grad():
        idx = torch.cat([model.encode_indices(crops[i:i + 8], model.cfg.num_stages) for i in range(0, len(crops), 8)])
    entropy = []
    for s in range(idx.shape[-1]):
        counts = torch.bincount(idx[..., s].flatten(), minlength=model.cfg.codebook_size).double()
        p = counts[counts > 0] / counts.sum()
        entropy.append(float(-(p * p.log2()).sum()))
    row = {"arm": arm, "steps": ck["step"], "train_seconds": round(ck.get("elapsed_s", 0.0)),
           "unquantized_psnr": psnr(lambda x: model.decode(model.encoder(x)).clamp(0, 1)), "stages": {}}
    for q in (1, 2, 3, 5, 10):
        bpp = sum(entropy[:q]) * idx.shape[1] * idx.shape[2] * idx.shape[0] / pixels
        row["stages"][q] = {"psnr": psnr(lambda x: model.decode_indices(model.encode_indices(x, q))),
                            "entropy_bpp": round(bpp, 4)}
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arms", default="conv-32,klt-32,klt-48")
    ap.add_argument("--minutes", type=float, default=12)
    ap.add_argument("--data", default="../shared/data/train")
    ap.add_argument("--run-dir", default="runs/transforms")
    ap.add_argument("--lr", type=float, default=3e-4, help="peak learning rate (after a 200-step warmup)")
    ap.add_argument("--parallel", action="store_true", help="train two arms at a time (one thread each)")
    ap.add_argument("--out", default="benchmarks/results/transform_comparison.json")
    ap.add_argument("--train-one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    run_dir = Path(args.run_dir)
    if args.train_one:
        return train_arm(args.train_one, args.minutes, run_dir, args.data, args.lr)
    arms = args.arms.split(",")
    width = 2 if args.parallel else 1
    for i in range(0, len(arms), width):
        procs = [subprocess.Popen([sys.executable, __file__, "--train-one", arm, "--minutes", str(args.minutes),
                                   "--run-dir", str(run_dir), "--data", args.data,
                                   "--lr", str(args.lr)]) for arm in arms[i:i + width]]
        for p in procs:
            if p.wait():
                raise SystemExit(f"training an arm failed ({p.returncode})")
    sys.path.insert(0, str(Path(__file__).parent))
    from compare_autoencoders import training_crops

    crops = training_crops(args.data)
    rows = [evaluate_arm(arm, run_dir, crops) for arm in arms + ["shipped"]]
    for row in rows:
        print(json.dumps(row), flush=True)
    Path(args.out).write_text(json.dumps({"command": "python benchmarks/transform_comparison.py " + " ".join(sys.argv[1:]),
                                          "minutes": args.minutes, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
