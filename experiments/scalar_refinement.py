# Frozen record, not maintained. It ran as benchmarks/scalar_refinement.py (first at commit 8230c21); the record is
# experiments/scalar-refinement.md. Its paths (benchmarks/..., benchmarks/results/...) and its imports of other
# benchmarks/ scripts are as they were then: run it from that commit, not from here.
"""A scalar refinement layer after the first residual stages, against more residual stages (proxy, training
crops, not Kodak).

    python benchmarks/scalar_refinement.py [--model vqf8-v7] [--stages 2,3,4,6] [--steps 0.06,0.045,...]

The deep residual stages buy little PSNR per bit (where_bits_go.py). At high rates a uniform scalar quantizer
with an entropy code is within 0.25 bit per value of the rate-distortion bound; a 512-code VQ of a 32-value
residual that has become noise-like is not. This measures, on the 48 crops of compare_autoencoders.py, the
codec's first k stages (real .vq files at effort 1) plus the residual latent z - zq_k quantized per value
with step delta_d = delta / sqrt(w_d), where w_d is the decoder's pixel-domain sensitivity to latent value d
(measured by perturbation), so every value adds the same pixel error. Its rate: the cross-entropy of the
quantized values under a context-free histogram per value d and per k, counted on 256 fit crops from the other
training photos (a real coder with fixed tables would reach it; a context model would do better). PSNR: the
decoder on zq_k + the dequantized residual, with the stage gains of all stages. Rounding offsets: theta shifts
the rounding toward zero (a dead zone; 0 = plain rounding).

Output: results/scalar_refinement.json: every (k, delta, theta) point, the best curve, and its BD-rate (PSNR)
against the codec's own qualities on the same crops.
"""
from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/train")
    ap.add_argument("--model", default=None)
    ap.add_argument("--stages", default="2,3,4,6", help="residual stages before the scalar layer")
    ap.add_argument("--steps", default="0.06,0.045,0.032,0.024,0.018,0.013,0.009",
                    help="delta: the pixel-domain step (an added pixel MSE of 32 delta^2 / 12 in [0, 1] units)")
    ap.add_argument("--thetas", default="0,0.2")
    ap.add_argument("--fit-crops", type=int, default=256)
    ap.add_argument("--out", default="benchmarks/results/scalar_refinement.json")
    args = ap.parse_args()

    import sys
    from pathlib import Path

    import numpy as np
    import torch
    from PIL import Image

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from compare_autoencoders import fit_photos, training_crops
    from vqcodec.bench.bdrate import bd_rate
    from vqcodec.codec import DEFAULT_MODEL, load_codec
    from vqcodec.data import CropSampler
    from vqcodec.train import load_images

    torch.manual_seed(0)
    t0 = time.time()
    codec = load_codec(args.model or DEFAULT_MODEL)
    ae, cfg = codec.autoencoder, codec.cfg
    images = load_images(args.data, 256)
    fit = CropSampler(fit_photos(images), 256, seed=11).batch(args.fit_crops)
    evals = training_crops(args.data, images)                                 # (48, 3, 256, 256)
    arrays = (evals * 255).round().byte().permute(0, 2, 3, 1).numpy()
    pixels = 256 * 256

    def batched(fn, x, n=16):
        with torch.no_grad():
            return torch.cat([fn(x[i:i + n]) for i in range(0, len(x), n)])

    # the codec's own curve, and the real bits of its first k stages
    own = {}
    for q in codec.qualities:
        files = codec.compress_batch([Image.fromarray(a) for a in arrays], q)
        dec = codec.decompress_batch(files)
        mse = [np.mean((np.asarray(d, np.float64) - a) ** 2) for d, a in zip(dec, arrays)]
        own[q] = (float(np.mean([8 * len(f) / pixels for f in files])), float(np.mean([10 * np.log10(255 ** 2 / m) for m in mse])))
    print("codec:", {q: (round(b, 4), round(p, 2)) for q, (b, p) in own.items()}, f"({time.time() - t0:.0f} s)", flush=True)
    first = len(cfg.coarse_sizes)                                             # quality of k stages: first + k

    z_fit, z_eval = batched(ae.encoder, fit), batched(ae.encoder, evals)      # (N, D, h, w)

    # the decoder's sensitivity to each latent value: pixel MSE per unit of latent variance
    probe = evals[:8]
    with torch.no_grad():
        z = ae.encoder(probe)
        base = ae.decode(z)
        sens = []
        for d in range(cfg.latent_dim):
            noise = torch.zeros_like(z)
            noise[:, d] = 0.02 * torch.randn_like(z[:, d])
            sens.append(float((ae.decode(z + noise) - base).pow(2).mean() / noise[:, d].pow(2).mean()))
    w = torch.tensor(sens)                                                    # (D,)
    print("sensitivity per latent value:", [round(s, 4) for s in sens], flush=True)

    def quantized(z, k, beam=4):
        b, d, h, wd = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)
        idx = ae.rvq.encode(flat, k, beam=beam)
        return ae.rvq.decode(idx).reshape(b, h, wd, d).permute(0, 3, 1, 2)

    def sq(r, delta, theta):
        """(N, D, h, w) residual -> integer symbols (N, D, h, w)."""
        step = (delta / w.sqrt()).view(1, -1, 1, 1)
        a = r / step
        return (a.sign() * (a.abs() + 0.5 - theta).floor().clamp_min(0)).long(), step

    results = {"command": "python benchmarks/scalar_refinement.py " + " ".join(
        f"--{a.replace('_', '-')} {v}" for a, v in vars(args).items() if v is not None),
        "model": cfg.name, "sensitivity": sens, "codec": own, "points": []}
    for k in [int(s) for s in args.stages.split(",")]:
        zq_fit, zq_eval = quantized(z_fit, k), quantized(z_eval, k)
        vq_bpp = own[first + k][0]
        for theta in [float(t) for t in args.thetas.split(",")]:
            for delta in [float(s) for s in args.steps.split(",")]:
                s_fit, _ = sq(z_fit - zq_fit, delta, theta)
                s_eval, step = sq(z_eval - zq_eval, delta, theta)
                lo = int(min(s_fit.min(), s_eval.min())); hi = int(max(s_fit.max(), s_eval.max()))
                bits = torch.zeros(len(s_eval))
                for d in range(cfg.latent_dim):
                    counts = torch.bincount((s_fit[:, d] - lo).flatten(), minlength=hi - lo + 1).double() + 0.5
                    length = -(counts / counts.sum()).log2()
                    bits += length[(s_eval[:, d] - lo)].sum((1, 2)).float()
                zhat = zq_eval + s_eval.float() * step
                out = batched(lambda z: ae.decode(z).clamp(0, 1), zhat)
                img = (out * 255).round() / 255
                mse = (img - evals).pow(2).mean((1, 2, 3))
                point = {"k": k, "delta": delta, "theta": theta, "bpp": vq_bpp + float(bits.mean()) / pixels,
                         "sq_bpp": float(bits.mean()) / pixels, "psnr": float((-10 * mse.log10()).mean())}
                results["points"].append(point)
                print(f"k {k} theta {theta} delta {delta}: {point['bpp']:.4f} bpp ({point['sq_bpp']:.4f} scalar), "
                      f"{point['psnr']:.2f} dB ({time.time() - t0:.0f} s)", flush=True)

    # the best curve: the lower-right envelope of all points, and the codec's own points below its range
    pts = sorted((p["bpp"], p["psnr"]) for p in results["points"])
    env = []
    for b, p in pts:
        if not env or p > env[-1][1]:
            env.append((b, p))
    results["envelope"] = env
    ra, pa = [v[0] for v in own.values()], [v[1] for v in own.values()]
    low = [(b, p) for b, p in own.values() if b < env[0][0]]
    merged = low + env
    results["bd_rate_vs_codec"] = bd_rate(ra, pa, [m[0] for m in merged], [m[1] for m in merged])
    print("envelope:", [(round(b, 4), round(p, 2)) for b, p in env])
    print(f"BD-rate (PSNR) of the codec's low qualities + the envelope against the codec: {results['bd_rate_vs_codec']:+.2f} %")
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print("wrote", args.out, f"({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
