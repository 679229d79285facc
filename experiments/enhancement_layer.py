# Frozen record, not maintained. It ran as benchmarks/enhancement_layer.py (first at commit 9b9747e); the record is
# experiments/enhancement-layer.md. Its paths (benchmarks/..., benchmarks/results/...) and its imports of other
# benchmarks/ scripts are as they were then: run it from that commit, not from here.
"""A pixel-domain enhancement layer on top of the VQ codec, against the codec's own top qualities (proxy,
training crops, not Kodak).

    python benchmarks/enhancement_layer.py [--model vqf8-v7] [--bases 6,9,12] [--steps 48,40,33,27,22,18,15]

At high rates vqcodec's curve flattens toward its transform's ceiling (32 latent values per 8x8 block): the
deep stages buy ~0.4 dB each, then nothing. A second layer that codes the pixel residual x - x_base of the
decoded base image has no ceiling. This measures such a layer on the 48 crops of compare_autoencoders.py:

- base: the codec at quality q (real .vq files, default effort), decoded to 8-bit RGB;
- transform: the residual in 8x8x3 blocks (192 values), rotated by a KLT fitted per base quality on the
  residuals of 128 fit crops from the other training photos (orthonormal: coefficient error = pixel error);
- quantizer: one uniform step for every coefficient, a dead zone theta, reconstruction offset rho fitted;
- entropy model: each coefficient's scale sigma = s_(q,k) x m(context), where s is the coefficient's mean
  magnitude on the fit crops and m a multiplier per context cell: the base image's local activity in the
  block (8 buckets), the decoded energy of the left and upper blocks (6), and of the coefficients already
  decoded in the block (6), and 4 coefficient bands. The symbol's table is a histogram per scale index
  round(4 log2(sigma / step)), counted on the fit crops. Every input of the context is known to the decoder;
  the rate is the cross-entropy on the evaluation crops (a coder with these fixed tables reaches it within a
  fraction of a percent). The activity comes from the decoded base image, which is float network output and
  not bit-exact across machines: a shipped layer would need another feature, so this context is an upper
  bound on what it would give.

Output: results/enhancement_layer.json, every (base, step, theta) point with the rate of each context
model, the envelopes, and BD-rates (PSNR) against the codec alone and against WebP on the same crops.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

B = 8                      # block side
ESC = 40                   # symbols with |q| > ESC pay an escape (Elias gamma of the excess)


def blocks(a: np.ndarray) -> np.ndarray:
    """(N, H, W, C) -> (N, H/8, W/8, 8*8*C)."""
    n, h, w, c = a.shape
    return a.reshape(n, h // B, B, w // B, B, c).transpose(0, 1, 3, 2, 4, 5).reshape(n, h // B, w // B, -1)


def unblocks(b: np.ndarray, c: int = 3) -> np.ndarray:
    n, hb, wb, _ = b.shape
    return b.reshape(n, hb, wb, B, B, c).transpose(0, 1, 3, 2, 4, 5).reshape(n, hb * B, wb * B, c)


def activity(base: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, H/8, W/8) integer sum of absolute neighbour differences inside each block."""
    x = base.astype(np.int64)
    dx = np.abs(np.diff(x, axis=2))                       # (N, H, W-1, 3)
    dy = np.abs(np.diff(x, axis=1))
    dx[:, :, B - 1::B] = 0                                 # differences across block borders do not count
    dy[:, B - 1::B] = 0
    dx = np.pad(dx, ((0, 0), (0, 0), (0, 1), (0, 0)))
    dy = np.pad(dy, ((0, 0), (0, 1), (0, 0), (0, 0)))
    return blocks(dx + dy).sum(-1)


def bucket(v: np.ndarray, edges: np.ndarray) -> np.ndarray:
    return np.searchsorted(edges, v, side="right")


class Layer:
    """The enhancement layer of one base quality: KLT, scales, context edges, fitted on fit crops."""

    def __init__(self, res_fit: np.ndarray, base_fit: np.ndarray):
        r = blocks(res_fit.astype(np.float64)).reshape(-1, 3 * B * B)
        cov = r.T @ r / len(r)
        val, vec = np.linalg.eigh(cov)
        order = np.argsort(val)[::-1]
        self.basis = vec[:, order]                                    # (192, 192), columns = components
        self.s = np.abs(r @ self.basis).mean(0) + 1e-3                # (192,) mean magnitude per coefficient
        act = activity(base_fit).ravel()
        self.act_edges = np.quantile(act, np.linspace(0, 1, 9)[1:-1])
        self.band = np.minimum(3, np.log2(np.arange(1, 3 * B * B + 1) / 6).clip(0).astype(int))

    def coefficients(self, res: np.ndarray) -> np.ndarray:
        return blocks(res.astype(np.float64)) @ self.basis           # (N, hb, wb, 192)

    def contexts(self, chat: np.ndarray, base: np.ndarray) -> np.ndarray:
        """Context cell of every coefficient from what the decoder knows: (N, hb, wb, 192) ints."""
        n, hb, wb, k = chat.shape
        act = bucket(activity(base), self.act_edges)                  # (N, hb, wb) in 0..7
        e = (chat ** 2).sum(-1) / (self.s ** 2).sum()                 # decoded energy per block, relative
        nb = np.zeros((n, hb, wb))
        cnt = np.zeros((n, hb, wb))
        nb[:, :, 1:] += e[:, :, :-1]; cnt[:, :, 1:] += 1
        nb[:, 1:, :] += e[:, :-1, :]; cnt[:, 1:, :] += 1
        nbr = np.where(cnt > 0, bucket(nb / np.maximum(cnt, 1), np.array([1e-9, 0.1, 0.3, 1.0, 3.0])), 0)  # 0: none known or all zero
        prev = np.cumsum(chat ** 2, -1) - chat ** 2                   # energy of the coefficients before k
        expect = np.cumsum(self.s ** 2) - self.s ** 2
        inb = bucket(prev / np.maximum(expect, 1e-9), np.array([1e-9, 0.1, 0.3, 1.0, 3.0]))
        inb[..., 0] = 0
        return ((act[..., None] * 6 + nbr[..., None]) * 6 + inb) * 4 + self.band   # 8*6*6*4 = 1152 cells


def quantize(c, step, theta):
    a = np.abs(c) / step
    return (np.sign(c) * np.floor(a + 0.5 - theta).clip(0)).astype(np.int64)


def dequantize(q, step, rho):
    return np.sign(q) * np.maximum(np.abs(q) - rho, 0) * step


def symbol_bits(q: np.ndarray, sidx_fit, q_fit, sidx) -> np.ndarray:
    """Cross-entropy (bits per value) of q under histograms per scale index counted on (sidx_fit, q_fit)."""
    nsym = 2 * ESC + 2                                                # -ESC..ESC and the escape
    def sym(v):
        return np.where(np.abs(v) > ESC, nsym - 1, v.clip(-ESC, ESC) + ESC)
    lo, hi = -24, 40
    counts = np.zeros((hi - lo + 1, nsym))
    np.add.at(counts, (sidx_fit.clip(lo, hi) - lo, sym(q_fit)), 1)
    counts += 0.05                                                    # every symbol stays codable
    table = -np.log2(counts / counts.sum(1, keepdims=True))
    bits = table[sidx.clip(lo, hi) - lo, sym(q)]
    excess = np.abs(q) - ESC
    bits = bits + np.where(excess > 0, 2 * np.floor(np.log2(np.maximum(excess, 1))) + 2, 0)
    return bits


def rate(layer, q_fit, chat_fit, base_fit, q_ev, chat_ev, base_ev, step, model: str) -> np.ndarray:
    """Bits per evaluation crop under context model 'none' or 'context'."""
    s = layer.s
    if model == "none":
        sig_fit = np.broadcast_to(s, q_fit.shape)
        sig_ev = np.broadcast_to(s, q_ev.shape)
    else:
        cf = layer.contexts(chat_fit, base_fit)
        ce = layer.contexts(chat_ev, base_ev)
        ratio = np.abs(chat_fit) / s + 0.5 * step / s * (q_fit == 0)   # magnitude seen through the quantizer
        num = np.bincount(cf.ravel(), ratio.ravel(), minlength=1152)
        den = np.bincount(cf.ravel(), minlength=1152)
        m = (num + 1) / (den + 1)
        sig_fit, sig_ev = s * m[cf], s * m[ce]
    idx_fit = np.round(4 * np.log2(sig_fit / step)).astype(np.int64)
    idx_ev = np.round(4 * np.log2(sig_ev / step)).astype(np.int64)
    bits = symbol_bits(q_ev, idx_fit, q_fit, idx_ev)
    return bits.reshape(len(q_ev), -1).sum(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/train")
    ap.add_argument("--model", default=None)
    ap.add_argument("--bases", default="6,9,12", help="base qualities")
    ap.add_argument("--steps", default="48,40,33,27,22,18,15", help="quantizer steps, in 8-bit pixel units")
    ap.add_argument("--thetas", default="0.2,0.35")
    ap.add_argument("--fit-crops", type=int, default=128)
    ap.add_argument("--out", default="benchmarks/results/enhancement_layer.json")
    args = ap.parse_args()

    import sys
    from pathlib import Path

    import torch
    from PIL import Image

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from compare_autoencoders import fit_photos, training_crops
    from vqcodec.bench.bdrate import bd_rate
    from vqcodec.bench.codecs import make_codec
    from vqcodec.codec import DEFAULT_MODEL, load_codec
    from vqcodec.data import CropSampler
    from vqcodec.train import load_images

    torch.manual_seed(0)
    t0 = time.time()
    codec = load_codec(args.model or DEFAULT_MODEL)
    images = load_images(args.data, 256)
    fit = CropSampler(fit_photos(images), 256, seed=12).batch(args.fit_crops)
    to_u8 = lambda t: (t * 255).round().byte().permute(0, 2, 3, 1).numpy()
    x_fit, x_ev = to_u8(fit), to_u8(training_crops(args.data, images))        # (N, 256, 256, 3) uint8
    pixels = 256 * 256
    psnr = lambda d, a: float(np.mean([10 * np.log10(255 ** 2 / np.mean((d[i].astype(np.float64) - a[i]) ** 2))
                                       for i in range(len(a))]))

    def run_codec(x, q):
        files = codec.compress_batch([Image.fromarray(a) for a in x], q)
        dec = np.stack([np.asarray(d) for d in codec.decompress_batch(files)])
        return np.array([8 * len(f) / pixels for f in files]), dec

    own = {}
    for q in codec.qualities:
        b, d = run_codec(x_ev, q)
        own[q] = (float(b.mean()), psnr(d, x_ev))
    print("codec:", {q: (round(b, 4), round(p, 2)) for q, (b, p) in own.items()}, f"({time.time() - t0:.0f} s)", flush=True)

    webp = make_codec("webp")
    web = []
    for wq in webp.qualities + [95]:
        files = [webp.encode(Image.fromarray(a), wq) for a in x_ev]
        dec = np.stack([np.asarray(webp.decode(f)) for f in files])
        web.append((float(np.mean([8 * len(f) / pixels for f in files])), psnr(dec, x_ev)))
    print("webp:", [(round(b, 4), round(p, 2)) for b, p in web], flush=True)

    results = {"command": "python benchmarks/enhancement_layer.py " + " ".join(
        f"--{a.replace('_', '-')} {v}" for a, v in vars(args).items() if v is not None),
        "model": codec.cfg.name, "codec": own, "webp": web, "points": []}
    for bq in [int(v) for v in args.bases.split(",")]:
        _, base_fit = run_codec(x_fit, bq)
        _, base_ev = run_codec(x_ev, bq)
        res_fit = x_fit.astype(np.int64) - base_fit
        res_ev = x_ev.astype(np.int64) - base_ev
        layer = Layer(res_fit, base_fit)
        c_fit, c_ev = layer.coefficients(res_fit), layer.coefficients(res_ev)
        print(f"base q{bq}: {own[bq]}, fitted ({time.time() - t0:.0f} s)", flush=True)
        for theta in [float(t) for t in args.thetas.split(",")]:
            for step in [float(s) for s in args.steps.split(",")]:
                q_fit, q_ev = quantize(c_fit, step, theta), quantize(c_ev, step, theta)
                nz = q_fit != 0
                rho = float(np.mean(np.abs(q_fit[nz]) - np.abs(c_fit[nz]) / step)) if nz.any() else 0.0
                chat_fit, chat_ev = dequantize(q_fit, step, rho), dequantize(q_ev, step, rho)
                rec = unblocks(chat_ev @ layer.basis.T)
                out = np.clip(np.round(base_ev + rec), 0, 255)
                point = {"base": bq, "step": step, "theta": theta, "rho": rho, "psnr": psnr(out, x_ev)}
                for model in ("none", "context"):
                    bits = rate(layer, q_fit, chat_fit, base_fit, q_ev, chat_ev, base_ev, step, model)
                    point[f"bpp_{model}"] = own[bq][0] + float(bits.mean()) / pixels
                results["points"].append(point)
                print(f"q{bq} step {step} theta {theta}: {point['psnr']:.2f} dB, bpp {point['bpp_none']:.4f} "
                      f"(no context) {point['bpp_context']:.4f} (context) ({time.time() - t0:.0f} s)", flush=True)

    ra, pa = [v[0] for v in own.values()], [v[1] for v in own.values()]
    wr, wp = [w[0] for w in web], [w[1] for w in web]
    print(f"codec against WebP on these crops: PSNR BD-rate {bd_rate(wr, wp, ra, pa):+.1f} %")
    for model in ("none", "context"):
        pts = sorted((p[f"bpp_{model}"], p["psnr"]) for p in results["points"])
        env = []
        for b, p in sorted(pts + [v for v in own.values()]):
            if not env or p > env[-1][1]:
                env.append((b, p))
        results[f"envelope_{model}"] = env
        results[f"bd_vs_codec_{model}"] = bd_rate(ra, pa, [e[0] for e in env], [e[1] for e in env])
        results[f"bd_vs_webp_{model}"] = bd_rate(wr, wp, [e[0] for e in env], [e[1] for e in env])
        print(f"{model}: envelope {[(round(b, 4), round(p, 2)) for b, p in env]}")
        print(f"{model}: BD-rate (PSNR) against the codec {results[f'bd_vs_codec_{model}']:+.2f} %, "
              f"against WebP {results[f'bd_vs_webp_{model}']:+.2f} %")
    results["bd_codec_vs_webp"] = bd_rate(wr, wp, ra, pa)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print("wrote", args.out, f"({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
