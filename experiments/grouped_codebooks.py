# Frozen record, not maintained. It ran as benchmarks/grouped_codebooks.py (first at commit 47c6a78); the record is
# experiments/grouped-codebooks.md. Its paths (benchmarks/..., benchmarks/results/...) and its imports of other
# benchmarks/ scripts are as they were then: run it from that commit, not from here.
"""Grouped low-dimensional codebooks for the deep residual stages against one 32-dimensional codebook per
stage (issue 8, item 3), measured on training crops (not Kodak).

    python benchmarks/grouped_codebooks.py [--keep 4] [--groups 1,2,4,8] [--lambdas 0.5,1,2] [--max-stages 8]

The shipped model's first --keep stages stay as they are (greedy codes with their code costs). Each arm then
quantizes what they leave with further residual stages fitted here, all by the same rule: Lagrangian
k-means (ECVQ, as in ecvq_codebooks.py) with one lambda, on the latents of 256 crops of the fit photos.
An arm with G groups splits each 32-value latent vector into G sub-vectors of 32/G values, each with its own
codebook of --codebook-size codes; a stage then sends G indices per latent vector. G = 1 is the shipped
design refitted the same way, so the arms differ only in the grouping. For each lambda (one per arm and run,
in units of the squared error the first refitted stage removes per bit under nearest codes), stages are added
until the rate passes the shipped model's rate at all 10 stages, or --max-stages.

Measured on the 48 fixed crops of compare_autoencoders.py: the rate under each stage's (and group's)
marginal code frequencies counted on the fit crops, for the kept stages too (what a coder with fixed tables
reaches; the prior's context would save more on the kept stages, the same for every arm), the latent SNR
(dB, the latents' mean square over the squared error) and the PSNR through the decoder, decoded with the
stage gains of min(stages, 10). The decoder was trained on the shipped stages' errors, so the pixel PSNR
favours G = 1 a little; the latent SNR is the quantizer's own measure. BD-rates are of each arm's best
points (the lower hull over its lambdas) against G = 1's.
"""
from __future__ import annotations

import argparse
import json
import time


def hull(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """(rate, quality) points -> the ones no other point beats in both, sorted by rate."""
    points = sorted(points)
    out = []
    for p in points:
        if not out or p[1] > out[-1][1]:
            out.append(p)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/train")
    ap.add_argument("--model", default=None, help="shipped model name or folder (default: the shipped model)")
    ap.add_argument("--keep", type=int, default=4, help="shipped stages kept before the refitted ones")
    ap.add_argument("--groups", default="1,2,4,8", help="arms: groups per 32-value latent vector")
    ap.add_argument("--lambdas", default="0.5,1,2", help="lambda in units of the first refitted stage's slope")
    ap.add_argument("--codebook-size", type=int, default=512)
    ap.add_argument("--max-stages", type=int, default=8, help="refitted stages at most, per arm and lambda")
    ap.add_argument("--fit-crops", type=int, default=256)
    ap.add_argument("--iters", type=int, default=12)
    ap.add_argument("--out", default="benchmarks/results/grouped_codebooks.json")
    args = ap.parse_args()

    import sys
    from pathlib import Path

    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from ecvq_codebooks import assign, code_lengths, fit_and_eval_latents, fit_stage
    from vqcodec.bench.bdrate import bd_rate
    from vqcodec.codec import DEFAULT_MODEL, load_codec

    torch.manual_seed(0)
    t0 = time.time()
    ae = load_codec(args.model or DEFAULT_MODEL).autoencoder.eval()
    d, stages = ae.cfg.latent_dim, ae.cfg.num_stages
    if not 1 <= args.keep < stages:
        ap.error(f"--keep must be from 1 to {stages - 1}")
    z_fit, z_eval, evals = fit_and_eval_latents(ae, args.data, args.fit_crops)   # (N, D), (48, h, w, D)
    n, h, w, _ = z_eval.shape
    z_eval_flat = z_eval.reshape(-1, d).float()                               # (M, D)
    power = float(z_eval_flat.pow(2).sum(1).mean())
    pixels = 256 * 256

    def snr(err) -> float:                                                    # err: (M, D)
        return 10 * torch.log10(torch.tensor(power / float(err.pow(2).sum(1).mean()))).item()

    def psnr(zq_flat, count) -> float:
        zq = zq_flat.reshape(n, h, w, d).permute(0, 3, 1, 2)                 # (48, D, h, w)
        with torch.no_grad():
            out = torch.cat([ae.decode(zq[i:i + 8], min(count, stages)).clamp(0, 1) for i in range(0, n, 8)])
        mse = (out - evals).pow(2).mean(dim=(1, 2, 3))
        return float((-10 * mse.log10()).mean())

    # the shipped stages, greedy codes with their code costs: kept ones and the reference curve
    r_fit, r_eval, zq_eval = z_fit.clone(), z_eval_flat.clone(), torch.zeros_like(z_eval_flat)
    bits_eval, shipped = torch.zeros(len(z_eval_flat)), []
    k = ae.cfg.codebook_size
    for s, vq in enumerate(ae.rvq.stages):
        cb, cost = vq.codebook.float(), vq.code_cost.float()
        i_fit, i_eval = assign(r_fit, cb, cost), assign(r_eval, cb, cost)
        bits_eval += code_lengths(i_fit, k)[i_eval]
        r_fit, r_eval, zq_eval = r_fit - cb[i_fit], r_eval - cb[i_eval], zq_eval + cb[i_eval]
        bpp = float(bits_eval.sum()) / n / pixels
        shipped.append((bpp, snr(r_eval), psnr(zq_eval, s + 1)))
        if s + 1 == args.keep:
            kept = (r_fit.clone(), r_eval.clone(), zq_eval.clone(), bits_eval.clone())
            # the slope of the first refitted stage under nearest codes: squared error removed per bit
            idx = assign(r_fit, ae.rvq.stages[s + 1].codebook.float(), torch.zeros(k))
            removed = float(r_fit.pow(2).sum(1).mean() - (r_fit - ae.rvq.stages[s + 1].codebook.float()[idx])
                            .pow(2).sum(1).mean())
            slope = removed / float(code_lengths(idx, k)[idx].mean())
    print(f"shipped (bpp, latent SNR, PSNR): {[tuple(round(v, 4) for v in p) for p in shipped]}; slope {slope:.4f} "
          f"({time.time() - t0:.0f} s)", flush=True)
    top_rate = shipped[-1][0]

    results = {"command": "python benchmarks/grouped_codebooks.py " + " ".join(
        f"--{a.replace('_', '-')} {v}" for a, v in vars(args).items() if v is not None),
        "model": ae.cfg.name, "slope": slope, "shipped": shipped, "arms": {}}
    for g in [int(x) for x in args.groups.split(",")]:
        sub = d // g
        arm = {"lambdas": {}}
        for mult in [float(x) for x in args.lambdas.split(",")]:
            lam, t = mult * slope, time.time()
            r_fit, r_eval, zq, bits = (x.clone() for x in kept)
            points = [shipped[args.keep - 1]]  # the kept stages alone: every arm starts there
            for j in range(args.max_stages):
                for p in range(g):
                    cols = slice(p * sub, (p + 1) * sub)
                    gen = torch.Generator().manual_seed(1000 * j + p)
                    init = r_fit[torch.randperm(len(r_fit), generator=gen)[:args.codebook_size], cols]
                    cb, lengths = fit_stage(r_fit[:, cols].contiguous(), init, lam, args.iters)
                    cost = lam * lengths
                    i_fit = assign(r_fit[:, cols].contiguous(), cb, cost)
                    i_eval = assign(r_eval[:, cols].contiguous(), cb, cost)
                    bits += code_lengths(i_fit, args.codebook_size)[i_eval]
                    r_fit[:, cols] -= cb[i_fit]
                    r_eval[:, cols] -= cb[i_eval]
                    zq[:, cols] += cb[i_eval]
                bpp = float(bits.sum()) / n / pixels
                points.append((bpp, snr(r_eval), psnr(zq, args.keep + j + 1)))
                if bpp > top_rate:
                    break
            arm["lambdas"][str(mult)] = points
            print(f"groups {g} lambda {mult}: {[tuple(round(v, 4) for v in p) for p in points]} "
                  f"({time.time() - t:.0f} s)", flush=True)
        best = hull([p[:2] for ps in arm["lambdas"].values() for p in ps])
        best_px = hull([(p[0], p[2]) for ps in arm["lambdas"].values() for p in ps])
        arm["hull_latent_snr"], arm["hull_psnr"] = best, best_px
        results["arms"][str(g)] = arm
    first = args.groups.split(",")[0]
    anchors = {"groups " + first: results["arms"][first],
               "shipped": {"hull_latent_snr": [p[:2] for p in shipped[args.keep - 1:]],
                           "hull_psnr": [(p[0], p[2]) for p in shipped[args.keep - 1:]]}}
    for g, arm in results["arms"].items():
        for anchor_name, anchor in anchors.items():
            for key in ("hull_latent_snr", "hull_psnr"):
                a, b = anchor[key], arm[key]
                try:
                    bd = round(bd_rate([p[0] for p in a], [p[1] for p in a], [p[0] for p in b], [p[1] for p in b]), 2)
                except ValueError as e:  # no shared quality range
                    bd = str(e)
                arm.setdefault("bd_rate", {})[f"{key[5:]} vs {anchor_name}"] = bd
        print(f"groups {g}: BD-rate {arm['bd_rate']}", flush=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print("wrote", args.out, f"({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
