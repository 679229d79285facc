"""Entropy-constrained codebooks (ECVQ) for the residual stages, fitted on training latents, measured on
training crops (not Kodak).

    python benchmarks/ecvq_codebooks.py [--alphas 0.25,0.5,1] [--fit-crops 256] [--first-stage 1]
                                        [--export runs/ecvq]

For every stage s >= first-stage, in order, Lagrangian k-means (Chou, Lookabaugh and Gray, 1989) on the
residuals that the earlier (already refitted) stages leave: each vector goes to the code of least
|r - c|^2 + lambda_s * L(c), with L = -log2 of the code's frequency; each code moves to the mean of its
vectors; the frequencies are counted again. lambda_s = alpha * (the squared error stage s removes per bit it
spends) under the nearest-code quantizer, so each stage trades distortion for bits near its own slope.
Nothing changes for the decoder or the format: the encoder's costs ride in each stage's `code_cost`.

Measured on the 48 fixed crops of compare_autoencoders.py (the codebooks are fitted on crops of the other
training photos), greedy encoding, for every prefix of stages: the rate under each stage's marginal code
frequencies counted on the fit crops (a stand-in for the prior, which must be retrained on the new
statistics; `--export` writes model folders to train it with `vqcodec train --init-from`), and the mean
PSNR through the decoder. BD-rate (PSNR) of each alpha against nearest codes on that same rate measure.
"""
from __future__ import annotations

import argparse
import json
import time


from vqcodec.finetune import assign, code_lengths, fit_stage  # noqa: E402,F401 - one implementation, in the package


def fit_and_eval_latents(ae, data: str, fit_crops: int):
    """The encoder's latents of `fit_crops` random 256x256 crops of the fit photos (seed 11) and of the 48
    evaluation crops of compare_autoencoders.py -> (z_fit (N, D) fp32, z_eval (48, h, w, D), eval crops)."""
    import sys
    from pathlib import Path

    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from compare_autoencoders import fit_photos, training_crops
    from vqcodec.data import CropSampler
    from vqcodec.train import load_images

    images = load_images(data, 256)
    fit = CropSampler(fit_photos(images), 256, seed=11).batch(fit_crops)
    evals = training_crops(data, images)                                      # (48, 3, 256, 256)

    def latents(x):                                                           # (B, 3, H, W) -> (B, h, w, D)
        with torch.no_grad():
            return torch.cat([ae.encoder(x[i:i + 16]).permute(0, 2, 3, 1) for i in range(0, len(x), 16)])

    return latents(fit).reshape(-1, ae.cfg.latent_dim).float(), latents(evals), evals


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/train")
    ap.add_argument("--model", default=None, help="shipped model name or folder (default: the shipped model)")
    ap.add_argument("--alphas", default="0.25,0.5,1")
    ap.add_argument("--fit-crops", type=int, default=256)
    ap.add_argument("--first-stage", type=int, default=1, help="stages before it keep their codebooks")
    ap.add_argument("--iters", type=int, default=15)
    ap.add_argument("--export", default=None, help="write a model folder per alpha under this folder")
    ap.add_argument("--out", default="benchmarks/results/ecvq_codebooks.json")
    args = ap.parse_args()

    import copy
    from pathlib import Path

    import torch

    from vqcodec.config import ModelConfig
    from vqcodec.bench.bdrate import bd_rate
    from vqcodec.codec import DEFAULT_MODEL, VQCodec, load_codec

    torch.manual_seed(0)
    t0 = time.time()
    codec = load_codec(args.model or DEFAULT_MODEL)
    ae = codec.autoencoder
    k, stages = ae.cfg.codebook_size, ae.cfg.num_stages
    z_fit, z_eval, evals = fit_and_eval_latents(ae, args.data, args.fit_crops)
    print(f"latents: fit {tuple(z_fit.shape)}, eval {tuple(z_eval.shape)} ({time.time() - t0:.0f} s)", flush=True)

    # the nearest-code quantizer on the fit latents: each stage's squared error removed per bit -> lambda_s
    r, slope = z_fit.clone(), []
    for vq in ae.rvq.stages:
        cb = vq.codebook.float()
        idx = assign(r, cb, torch.zeros(k))
        bits = float((code_lengths(idx, k)[idx]).mean())
        before = float(r.pow(2).sum(1).mean())
        r = r - cb[idx]
        slope.append((before - float(r.pow(2).sum(1).mean())) / bits)
    print("squared error removed per bit, per stage:", [round(x, 4) for x in slope], flush=True)

    def quantizer(alpha: float):
        """-> (autoencoder with refitted codebooks and code costs, per-stage code lengths on the fit crops)."""
        model = copy.deepcopy(ae)
        r, lengths = z_fit.clone(), []
        for s, vq in enumerate(model.rvq.stages):
            if s >= args.first_stage and alpha > 0:
                lam = alpha * slope[s]
                cb, length = fit_stage(r, vq.codebook.float(), lam, args.iters)
                vq.codebook.copy_(cb)
                vq.embed_sum.copy_(cb)
                vq.code_cost.copy_(lam * length)
            idx = assign(r, vq.codebook.float(), vq.code_cost.float())
            lengths.append(code_lengths(idx, k))
            r = r - vq.codebook.float()[idx]
        return model, lengths

    def curve(model, lengths):
        """-> [(bits per pixel, mean PSNR)] for 1..S stages, greedy encoding of the eval crops."""
        n, h, w, d = z_eval.shape
        idx = model.rvq.encode(z_eval.reshape(-1, d), stages).reshape(n, h, w, stages)
        points = []
        for q in range(1, stages + 1):
            bits = sum(lengths[s][idx[..., s]].sum(dim=(1, 2)) for s in range(q))           # (n,)
            with torch.no_grad():
                out = torch.cat([model.decode_indices(idx[i:i + 8, ..., :q]) for i in range(0, n, 8)])
            mse = (out - evals).pow(2).mean(dim=(1, 2, 3))
            points.append((float((bits / (256 * 256)).mean()), float((-10 * mse.log10()).mean())))
        return points

    results = {"command": "python benchmarks/ecvq_codebooks.py " + " ".join(
        f"--{a.replace('_', '-')} {v}" for a, v in vars(args).items() if v is not None),
        "model": ae.cfg.name, "slope_per_stage": slope, "arms": {}}
    base = None
    for alpha in [0.0] + [float(a) for a in args.alphas.split(",")]:
        t = time.time()
        model, lengths = quantizer(alpha)
        points = curve(model, lengths)
        base = base or points
        bd = bd_rate([p[0] for p in base], [p[1] for p in base], [p[0] for p in points], [p[1] for p in points])
        results["arms"][str(alpha)] = {"points": points, "bd_rate_vs_nearest": bd}
        print(f"alpha {alpha}: BD-rate {bd:+.2f} % ({time.time() - t:.0f} s); points (bpp, dB):",
              [(round(b, 4), round(p, 2)) for b, p in points], flush=True)
        if args.export and alpha > 0:
            name = f"{ae.cfg.name}-ecvq{alpha:g}"
            out = Path(args.export) / name
            out.mkdir(parents=True, exist_ok=True)
            cfg = ae.cfg.to_dict() | {"name": name}
            model.cfg = ModelConfig.from_dict(cfg)
            (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
            (out / "model.safetensors").write_bytes(VQCodec.serialize(model, codec.prior, codec.coarse_codes))
            print("exported", out, flush=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print("wrote", args.out, f"({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
