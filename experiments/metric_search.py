# Frozen record, not maintained. It ran as benchmarks/metric_search.py (first at commit 5dcb21b); the record is
# experiments/metric-search.md. Its paths (benchmarks/..., benchmarks/results/...) and its imports of other
# benchmarks/ scripts are as they were then: run it from that commit, not from here.
"""The residual quantizer's search under the decoder's own metric, measured on training crops (not Kodak).

    python benchmarks/metric_search.py [--model vqf8-v8] [--variants euclid,metric,diag] [--out results/metric_search.json]

The encoder picks, at every stage, the code of least squared *latent* error (plus its code cost). What counts
is the error in pixels after the decoder, and a latent error e costs about e^T M e in pixels, where
M = E[J^T J] and J is the decoder's Jacobian at the decoded latent (one latent vector's 32 values to its
pixels; the stage gains make it depend on the number of stages decoded). If M were a multiple of the
identity, the latent distance would already be the right one. This script measures M per number of stages
(central differences of the decoder along each latent channel, with random signs over the positions so that
the positions' cross terms cancel) on 32 crops of training photos that are not among compare_autoencoders.py's,
scales it to trace D (so the code costs keep their scale: the trade of error against bits stays where the
entropy-constrained fit put it) and searches with the distance |L^T (r - c)|^2, M = L L^T: the codebooks and
the residual are mapped by L^T and the beam search runs as it is. The decoder, the codebooks and the prior do
not change; only which indices the encoder chooses.

Variants: euclid (the codec as it is), metric (the full M per number of stages), diag (only M's diagonal).
Measured: compare_autoencoders.py's 48 fixed 256x256 crops through the whole codec (default effort) at every
quality: bpp of the real .vq files, mean PSNR and MS-SSIM; BD-rate of each variant against euclid.
"""
from __future__ import annotations

import argparse
import copy
import json
import time


def decoder_metric(ae, crops, stages: int, rel_eps: float = 0.02):
    """(B, 3, H, W) crops -> M (D, D): the mean over latent positions of J^T J at `stages` greedy stages."""
    import torch

    with torch.no_grad():
        z = ae.encoder(crops)                                                   # (B, D, h, w)
        b, d, h, w = z.shape
        zq = ae._unflatten(ae.rvq.decode(ae.rvq.encode(ae._flatten(z), stages)), b, h, w)
        eps = rel_eps * float(z.pow(2).mean().sqrt())
        g = torch.Generator().manual_seed(0)
        signs = torch.randint(0, 2, (b, 1, h, w), generator=g).float() * 2 - 1  # (B, 1, h, w)
        cols = []
        for c in range(d):
            dz = torch.zeros_like(zq)
            dz[:, c:c + 1] = signs * eps
            cols.append(((ae.decode(zq + dz, stages) - ae.decode(zq - dz, stages)) / (2 * eps)).flatten(1))
        jac = torch.stack(cols, 1)                                              # (B, D, 3*H*W)
        return torch.einsum("bip,bjp->ij", jac, jac) / (b * h * w)


def metric_encoder(rvq, metrics: dict[int, "torch.Tensor"]):
    """A replacement for rvq.encode that searches under metrics[num_stages] (D, D), scaled to trace D."""
    import torch

    clones = {}
    for q, m in metrics.items():
        m = m * (m.shape[0] / torch.trace(m))
        lower = torch.linalg.cholesky(m.double()).float()                     # M = L L^T
        clone = copy.deepcopy(rvq)
        for vq in clone.stages:
            vq.codebook.copy_(vq.codebook.float() @ lower)                    # rows c -> (L^T c)^T
        clones[q] = (clone, lower)
    plain = rvq.encode

    def encode(z, num_stages, first_codes=None, beam=1):
        if num_stages not in clones:
            return plain(z, num_stages, first_codes, beam)
        clone, lower = clones[num_stages]
        return clone.encode(z.float() @ lower, num_stages, first_codes, beam)

    return encode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/train")
    ap.add_argument("--model", default=None, help="shipped model name or folder (default: the shipped model)")
    ap.add_argument("--variants", default="euclid,metric,diag")
    ap.add_argument("--out", default="benchmarks/results/metric_search.json")
    args = ap.parse_args()

    import torch

    from compare_autoencoders import codec_curve, fit_photos, training_crops
    from vqcodec.bench.bdrate import bd_rate
    from vqcodec.codec import load_codec
    from vqcodec.data import CropSampler
    from vqcodec.train import load_images

    t0 = time.time()
    codec = load_codec(args.model)
    ae = codec.autoencoder
    others = fit_photos(load_images(args.data, 128))
    fit = CropSampler(others, 128, seed=11).batch(32)                            # (32, 3, 128, 128)
    metrics = {q: decoder_metric(ae, fit, q) for q in range(1, ae.cfg.num_stages + 1)}
    spread = {}
    for q, m in metrics.items():
        ev = torch.linalg.eigvalsh(m.double())
        spread[q] = {"eig_min": float(ev.min()), "eig_max": float(ev.max()), "diag_min": float(m.diag().min()),
                     "diag_max": float(m.diag().max()),
                     "offdiag_fraction": float((m - torch.diag(m.diag())).norm() / m.norm())}
    print("decoder metric per number of stages (eigenvalues, off-diagonal share):",
          {q: (round(s["eig_min"], 3), round(s["eig_max"], 3), round(s["offdiag_fraction"], 3))
           for q, s in spread.items()}, f"({time.time() - t0:.0f} s)", flush=True)

    crops = training_crops(args.data)
    plain = ae.rvq.encode
    curves = {}
    for variant in args.variants.split(","):
        if variant == "euclid":
            ae.rvq.encode = plain
        elif variant == "metric":
            ae.rvq.encode = metric_encoder(ae.rvq, metrics)
        elif variant == "diag":
            ae.rvq.encode = metric_encoder(ae.rvq, {q: torch.diag(m.diag()) for q, m in metrics.items()})
        else:
            raise SystemExit(f"Error: unknown variant {variant!r}")
        bpp, db, ms = codec_curve(codec, crops)
        curves[variant] = {"bpp": bpp, "psnr": db, "msssim_db": ms}
        print(variant, {q: (round(r, 4), round(d, 2), round(m, 2)) for q, r, d, m in zip(codec.qualities, bpp, db, ms)},
              f"({time.time() - t0:.0f} s)", flush=True)
    ae.rvq.encode = plain
    base = curves.get("euclid")
    result = {"description": __doc__.strip().splitlines()[0], "model": codec.model_name,
              "command": "python benchmarks/metric_search.py " + " ".join(f"--{k} {v}" for k, v in vars(args).items()
                                                                      if v is not None),
              "metric_spread": spread, "curves": curves, "bd_rate_vs_euclid": {}}
    if base:
        for name, c in curves.items():
            if name != "euclid":
                bd = {"psnr": bd_rate(base["bpp"], base["psnr"], c["bpp"], c["psnr"]),
                      "msssim_db": bd_rate(base["bpp"], base["msssim_db"], c["bpp"], c["msssim_db"])}
                result["bd_rate_vs_euclid"][name] = bd
                print(f"BD-rate of {name} against euclid: PSNR {bd['psnr']:+.2f} %, MS-SSIM (dB) {bd['msssim_db']:+.2f} %")
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print("wrote", args.out, f"({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
