"""Fine-tune a model's decoder on the indices its own encoder makes, measured on training crops (not Kodak).

    python benchmarks/decoder_finetune.py [--model vqf8-v6] [--arms plain,gains,encoder,rate,postfilter] [--minutes 12]
                                          [--crops 4096] [--loss mse] [--rate-weight 2] [--export runs/decft]

In the plain and gains arms the encoder, the codebooks, their code costs and the prior stay as they are, so
every index of every .vq file stays the same (and so does every rate): only the pixels decoded from them
change. The decoder was trained on nearest-code latents; entropy-constrained codebooks (vqf8-v6) quantize
differently, so it can learn what the new quantization error looks like. Arms, each trained for the same wall
time from the same start:

- plain: the decoder's weights;
- gains: the same, plus `StageGains` (config stage_gains): a gain and offset per number of decoded stages on
  every latent value and on the decoder's first layer, so that the decoder knows how coarse its input is.

- encoder: gains, and the encoder trained too (the codebooks, code costs and prior stay): each step encodes its
  crops greedily with the code costs, straight-through, plus `vqcodec train`'s commitment term. The indices
  change, so this arm is measured by the real codec (its bpp under the unchanged prior, which was trained on
  the old indices: a retrained prior could only do better).
- postfilter: gains as trained, and a new full-resolution residual filter after the decoder (config postfilter,
  `autoencoder.PostFilter`, --postfilter channels), trained alone; postfilter-dec: the filter and the decoder.
  The filter's new weights take steps 10 x --lr.
- rate: the encoder arm with a rate term: + --rate-weight x each crop's expected bits per pixel of its coded
  stages, through a soft assignment at every stage (softmax over -(|r - c|^2 + cost) / lambda_s, lambda_s the
  stage's Lagrange multiplier, so the softmax is over code lengths in bits) and each code's length L(c) =
  cost / lambda_s (the marginal lengths the ECVQ fit counted; stage 0 has none and adds nothing). With
  --loss log-mse the weight is in log-MSE per bpp: about 2 is the slope of the codec's curve at mid rates.

The loss is the pixel MSE of the batch, or (--loss log-mse) the mean of each crop's log MSE, which weighs every
quality alike in dB (the MSE is dominated by the coarsest qualities).

Training data: --crops random 128x128 crops of the training photos that are not among compare_autoencoders.py's
(every 15th photo), encoded once, greedily, at every quality (the coarse levels too); each step decodes a batch at
random qualities (uniform over the codec's qualities) and descends the pixel MSE. With --train-indices codec,
each crop is instead encoded at --qualities-per-crop random qualities as the codec encodes (its beam search, each
quality on its own rather than a prefix of the ten-stage greedy path), and each step draws crop-quality pairs:
the decoder then learns the error of the search it will decode. Measured: the 48 fixed crops of
compare_autoencoders.py encoded as the codec does (default effort), bpp of the real .vq files, and the PSNR of
each arm's decoder on those same indices; BD-rate (PSNR) of each arm against the model as it is.
"""
from __future__ import annotations

import argparse
import json
import math
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/train")
    ap.add_argument("--model", default=None, help="shipped model name or folder (default: the shipped model)")
    ap.add_argument("--arms", default="plain,gains")
    ap.add_argument("--minutes", type=float, default=12.0, help="training wall time per arm")
    ap.add_argument("--crops", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--loss", choices=("mse", "log-mse"), default="mse",
                    help="log-mse: the mean of each crop's log MSE, so every quality counts alike in dB")
    ap.add_argument("--rate-weight", type=float, default=2.0, help="the rate arm's weight on expected bpp")
    ap.add_argument("--postfilter", type=int, default=16, help="the postfilter arms' width (config postfilter)")
    ap.add_argument("--train-indices", choices=("greedy", "codec"), default="greedy",
                    help="greedy: all stages greedily once, each quality its prefix; codec: each crop at "
                         "--qualities-per-crop random qualities, encoded as the codec does (default effort)")
    ap.add_argument("--qualities-per-crop", type=int, default=3)
    ap.add_argument("--export", default=None, help="write a model folder per arm under this folder")
    ap.add_argument("--out", default="benchmarks/results/decoder_finetune.json")
    args = ap.parse_args()

    import sys
    from pathlib import Path

    import numpy as np
    import torch
    from PIL import Image

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from compare_autoencoders import fit_photos, training_crops
    from vqcodec import DEFAULT_EFFORT, EFFORT_BEAMS
    from vqcodec.autoencoder import VQAutoencoder
    from vqcodec.bench.bdrate import bd_rate
    from vqcodec.codec import DEFAULT_MODEL, VQCodec, load_codec
    from vqcodec.config import ModelConfig
    from vqcodec.data import CropSampler
    from vqcodec.train import load_images
    from vqcodec.training_cli import export_model

    torch.manual_seed(0)
    t0 = time.time()
    codec = load_codec(args.model or DEFAULT_MODEL)
    ae, cfg = codec.autoencoder.eval(), codec.cfg
    plans = [cfg.quality_plan(q) for q in codec.qualities]                    # (stages, coarse size or None)
    images = load_images(args.data, 256)
    fit = CropSampler(fit_photos(images), 128, seed=13).batch(args.crops)
    evals = training_crops(args.data, images)                                 # (48, 3, 256, 256)

    # training indices: all stages greedily, and stage 0 again under each coarse alphabet
    codebooks = torch.stack([vq.codebook.float() for vq in ae.rvq.stages])    # (S, K, D)
    fine, coarse = [], {n: [] for n in cfg.coarse_sizes}
    with torch.no_grad():
        for i in range(0, len(fit), 64):
            z = ae.encoder(fit[i:i + 64])
            b, d, h, w = z.shape
            flat = VQAutoencoder._flatten(z)
            fine.append(ae.rvq.encode(flat, cfg.num_stages).reshape(b, h, w, -1).short())
            for n in cfg.coarse_sizes:
                first = codec.coarse_codes[:n]
                coarse[n].append(ae.rvq.encode(flat, 1, first).reshape(b, h, w).short())
    fine = torch.cat(fine)                                                    # (N, h, w, S)
    coarse = {n: torch.cat(v) for n, v in coarse.items()}                     # (N, h, w)
    print(f"training indices {tuple(fine.shape)} ({time.time() - t0:.0f} s)", flush=True)

    # --train-indices codec: the indices the codec itself writes (its beam search, each quality on its own)
    if args.train_indices == "codec":
        gen_q = torch.Generator().manual_seed(2)
        pairs = [(r, int(p)) for r in range(len(fit))
                 for p in torch.randperm(len(plans), generator=gen_q)[:args.qualities_per_crop]]
        pair_rows = torch.tensor([r for r, _ in pairs])
        pair_plans = torch.tensor([p for _, p in pairs])
        store = torch.zeros(len(pairs), *fine.shape[1:], dtype=torch.int16)   # (P, h, w, S), unused stages 0
        beam_w = EFFORT_BEAMS[DEFAULT_EFFORT]
        with torch.no_grad():
            for p, (stages_p, size_p) in enumerate(plans):
                members = (pair_plans == p).nonzero()[:, 0]
                first = None if size_p is None else codec.coarse_codes[:size_p]
                for i in range(0, len(members), 64):
                    chunk = members[i:i + 64]
                    store[chunk, ..., :stages_p] = ae.encode_indices(fit[pair_rows[chunk]], stages_p, first,
                                                                     beam=beam_w).short()
        print(f"codec indices for {len(pairs)} crop-quality pairs ({time.time() - t0:.0f} s)", flush=True)

    def prefix_sum(idx, stages):
        """idx (B, ..., S) codes, stages (B,) -> (B, ..., D): each sample's first stages[j] code vectors summed."""
        vecs = codebooks[torch.arange(cfg.num_stages), idx]                   # (B, ..., S, D)
        keep = (torch.arange(cfg.num_stages)[None] < stages[:, None]).float()  # (B, S)
        return (vecs * keep.view(len(keep), *[1] * (idx.dim() - 2), -1, 1)).sum(-2)

    def latents(rows, plan_ids):
        """Summed code vectors of crops `rows`, each at the quality plan plan_ids[i] -> (B, D, h, w), stages (B,)."""
        idx = fine[rows].long()                                               # (B, h, w, S)
        stages = torch.tensor([plans[p][0] for p in plan_ids])
        for j, p in enumerate(plan_ids):
            if plans[p][1] is not None:
                idx[j, ..., 0] = coarse[plans[p][1]][rows[j]].long()
        return prefix_sum(idx, stages).permute(0, 3, 1, 2), stages

    # evaluation: the codec's own files and indices at every quality, for every arm the same
    arrays = (evals * 255).round().byte().permute(0, 2, 3, 1).numpy()        # (48, 256, 256, 3)
    pil = [Image.fromarray(a) for a in arrays]
    beam = EFFORT_BEAMS[DEFAULT_EFFORT]
    eval_idx, bpp = [], []
    for q in codec.qualities:
        stages, alphabet = codec.quality_plan(q)
        files = codec.compress_batch(pil, q)
        bpp.append(float(np.mean([8 * len(f) / (256 * 256) for f in files])))
        first = None if alphabet is None else alphabet.codes
        eval_idx.append(torch.cat([ae.encode_indices(evals[i:i + 8], stages, first, beam=beam)
                                   for i in range(0, len(evals), 8)]))
    print(f"evaluation indices and bpp {[round(b, 4) for b in bpp]} ({time.time() - t0:.0f} s)", flush=True)

    def curve(model) -> list[float]:
        out = []
        with torch.no_grad():
            for idx in eval_idx:
                x = torch.cat([model.decode_indices(idx[i:i + 8]) for i in range(0, len(idx), 8)])
                x = (x * 255).round() / 255
                out.append(float((-10 * (x - evals).pow(2).mean((1, 2, 3)).log10()).mean()))
        return out

    def real_curve(model) -> tuple[list[float], list[float]]:
        """The codec of `model` (the same prior) on the evaluation crops -> (bpp, mean PSNR) per quality."""
        trial = VQCodec.from_bytes(VQCodec.serialize(model, codec.prior, codec.coarse_codes), model.cfg)
        rates, dbs = [], []
        for q in codec.qualities:
            files = trial.compress_batch(pil, q)
            out = np.stack([np.asarray(im, np.float64) for im in trial.decompress_batch(files)])
            rates.append(float(np.mean([8 * len(f) / (256 * 256) for f in files])))
            dbs.append(float(np.mean(10 * np.log10(255 ** 2 / ((out - arrays) ** 2).mean((1, 2, 3))))))
        return rates, dbs

    def multiplier(cost: torch.Tensor) -> float:
        """A stage's code costs lambda x L(c), with L the lengths of a complete code (sum 2^-L = 1) -> lambda."""
        if float(cost.abs().max()) == 0:
            return 0.0
        lo, hi = 1e-9, 1e3
        for _ in range(100):                                                  # sum 2^(-cost/lam) grows with lam
            mid = math.sqrt(lo * hi)
            lo, hi = (lo, mid) if float(torch.exp2(-cost.double() / mid).sum()) > 1 else (mid, hi)
        return math.sqrt(lo * hi)

    lambdas = [multiplier(vq.code_cost.float()) for vq in ae.rvq.stages]
    print("stage multipliers lambda_s:", [round(x, 6) for x in lambdas], flush=True)

    def expected_bits(flat, idx, stages):
        """flat (B, n, D) latents, idx (B, n, S) their hard codes, stages (B,) -> (B,) expected bits of the coded
        stages under a soft assignment at each (see the rate arm); the path before each stage stays hard."""
        bits = flat.new_zeros(flat.shape[0])
        residual = flat
        for s, vq in enumerate(ae.rvq.stages[:int(stages.max())]):
            cb = codebooks[s]
            if lambdas[s] > 0:
                cost = vq.code_cost.float()
                dist = residual.pow(2).sum(-1, keepdim=True) - 2 * residual @ cb.t() + (cb.pow(2).sum(1) + cost)
                p = torch.softmax(-dist / lambdas[s], -1)                     # (B, n, K)
                per = (p * (cost / lambdas[s])).sum(-1).sum(-1)               # (B,) expected bits of stage s
                bits = bits + per * (s < stages).float()
            residual = residual - cb[idx[..., s]]
        return bits

    def live_latents(model, x, plan_ids, rate=False):
        """The encoder on crops x at qualities plan_ids, greedy codes (with their costs), straight-through
        -> (B, D, h, w) quantized, stages (B,), commitment (B,) to all stages' codes, and (rate) the expected
        bits per pixel (B,) of the coded stages (else zeros)."""
        z = model.encoder(x)
        b, d, h, w = z.shape
        flat = VQAutoencoder._flatten(z)                                      # (B*h*w, D)
        idx = model.rvq.encode(flat.detach(), cfg.num_stages).reshape(b, h * w, -1)  # (B, h*w, S)
        full = prefix_sum(idx, torch.full((b,), cfg.num_stages))              # (B, h*w, D)
        stages = torch.tensor([plans[p][0] for p in plan_ids])
        for j, p in enumerate(plan_ids):
            if plans[p][1] is not None:
                first = codec.coarse_codes[:plans[p][1]]
                idx[j, :, 0] = model.rvq.encode(flat.detach()[j * h * w:(j + 1) * h * w], 1, first)[:, 0]
        part = prefix_sum(idx, stages)                                         # (B, h*w, D)
        flat = flat.reshape(b, h * w, d)
        commit = (flat - full).pow(2).mean((1, 2))
        bpp = expected_bits(flat, idx, stages) / x[0, 0].numel() if rate else torch.zeros(b)
        zq = flat + (part - flat).detach()
        return zq.reshape(b, h, w, d).permute(0, 3, 1, 2), stages, commit, bpp

    base = curve(ae)
    results = {"command": "python benchmarks/decoder_finetune.py " + " ".join(
        f"--{a.replace('_', '-')} {v}" for a, v in vars(args).items() if v is not None),
        "model": cfg.name, "bpp": bpp, "psnr_before": base, "arms": {}}
    print("before: PSNR", [round(p, 2) for p in base], flush=True)

    for arm in args.arms.split(","):
        if arm not in ("plain", "gains", "encoder", "rate", "postfilter", "postfilter-dec"):
            raise SystemExit(f"unknown arm {arm!r}")
        filtered = arm.startswith("postfilter")
        model = VQAutoencoder(ModelConfig.from_dict(cfg.to_dict() | {"stage_gains": arm != "plain"}
                                                    | ({"postfilter": args.postfilter} if filtered else {})))
        model.load_state_dict(ae.state_dict(), strict=False)
        model.train()
        params = list(model.decoder.parameters()) + (list(model.gains.parameters()) if model.gains else [])
        if arm == "postfilter":                                               # the filter alone
            params = []
        groups = [{"params": params, "scale": 1.0}]
        if filtered:                                                          # new weights: a 10x larger step
            groups.append({"params": list(model.postfilter.parameters()), "scale": 10.0})
        live = arm in ("encoder", "rate")
        if live:
            model.rvq.eval()                                                  # codebooks and costs stay
            groups[0]["params"] += list(model.encoder.parameters())
        opt = torch.optim.Adam([g for g in groups if g["params"]], lr=args.lr)
        gen = torch.Generator().manual_seed(1)
        start, step, seen = time.time(), 0, 0.0
        while time.time() - start < args.minutes * 60:
            frac = (time.time() - start) / (args.minutes * 60)
            for g in opt.param_groups:
                g["lr"] = g["scale"] * args.lr * 0.5 * (1 + math.cos(math.pi * frac))
            rows = torch.randint(len(fine), (args.batch,), generator=gen)
            plan_ids = torch.randint(len(plans), (args.batch,), generator=gen).tolist()
            commit, spent = torch.zeros(args.batch), torch.zeros(args.batch)
            if live:
                z, stages, commit, spent = live_latents(model, fit[rows], plan_ids, rate=arm == "rate")
            elif args.train_indices == "codec":                               # pairs the codec encoded
                pick = torch.randint(len(pairs), (args.batch,), generator=gen)
                rows, plan_ids = pair_rows[pick], pair_plans[pick].tolist()
                stages = torch.tensor([plans[p][0] for p in plan_ids])
                z = prefix_sum(store[pick].long(), stages).permute(0, 3, 1, 2)  # (B, D, h, w)
            else:
                z, stages = latents(rows, plan_ids)
            x = fit[rows]
            if arm == "postfilter":                                           # frozen decoder: no backward
                with torch.no_grad():
                    y = model.decode(z, stages, postfilter=False)
                out = model.postfilter(y, stages)
            else:
                out = model.decode(z, stages)
            mse = (out - x).pow(2).mean((1, 2, 3))                               # (B,)
            mse = mse + 0.25 * commit                                           # as `vqcodec train` (0 if frozen)
            loss = mse.log().mean() if args.loss == "log-mse" else mse.mean()
            loss = loss + args.rate_weight * spent.mean() if arm == "rate" else loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            seen = 0.98 * seen + 0.02 * float(loss.detach()) if step > 1 else float(loss.detach())
            if step % 200 == 0:
                print(f"  {arm} step {step} loss {seen:.6f} ({time.time() - start:.0f} s)", flush=True)
        model.eval()
        rates, points = real_curve(model) if live else (bpp, curve(model))
        bd = bd_rate(bpp, base, rates, points)
        results["arms"][arm] = {"steps": step, "bpp": rates, "psnr": points, "bd_rate_vs_before": bd,
                                "gain_db": [p - b for p, b in zip(points, base)]}
        print(f"{arm}: {step} steps, BD-rate {bd:+.2f} %, PSNR gain per quality",
              [round(p - b, 3) for p, b in zip(points, base)], flush=True)
        if args.export:
            name = f"{cfg.name}-dec{arm}" + ("-log" if args.loss == "log-mse" else "")
            out = Path(args.export) / name
            model.cfg = ModelConfig.from_dict(model.cfg.to_dict() | {"name": name})
            export_model(VQCodec.serialize(model, codec.prior, codec.coarse_codes), model.cfg,
                         {"from": cfg.name, "command": results["command"], "arm": arm, "steps": step}, out)
            print("exported", out, flush=True)
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print("wrote", args.out, f"({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
