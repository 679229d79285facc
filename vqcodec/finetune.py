"""The phases after the autoencoder's own training (torch): entropy-constrained codebooks, the decoder trained on
the indices the codec writes, and those indices for the prior.

- `fit_ecvq`: Lagrangian k-means (Chou, Lookabaugh and Gray, 1989) of the residual stages on training latents;
  each code gets an encoder-side cost lambda_s x L(c) (`code_cost`), which only the encoder reads.
- `codec_pairs` / `finetune_decoder`: crops encoded as the codec encodes them (its beam search, each quality on
  its own), and the decoder, stage gains and post-filter trained on exactly those indices; a model with
  refinement also at every (level, stages), its values rounded as the codec rounds them.
- `own_beam_grids`: every crop as each stage count's own beam search codes it, the layout `train_prior` takes
  for a prior with stage-count biases.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from .autoencoder import VQAutoencoder
from .train import cosine_lr, load_checkpoint, save_checkpoint

BEAM = 4  # the codec's default effort (vqcodec.EFFORT_BEAMS[DEFAULT_EFFORT])


# --- entropy-constrained codebooks --------------------------------------------------------------

def assign(r: torch.Tensor, cb: torch.Tensor, cost: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
    """r (N, D), cb (K, D), cost (K,) -> (N,) argmin |r - c|^2 + cost, in fp32."""
    term = cb.pow(2).sum(1) + cost
    return torch.cat([torch.addmm(term[None], part, cb.t(), alpha=-2).argmin(1) for part in r.split(chunk)])


def code_lengths(idx: torch.Tensor, k: int) -> torch.Tensor:
    """(N,) indices -> (K,) -log2 of each code's smoothed frequency (half a count for an unused code)."""
    counts = torch.bincount(idx, minlength=k).double() + 0.5
    return (-(counts / counts.sum()).log2()).float()


def fit_stage(r: torch.Tensor, cb: torch.Tensor, lam: float, iters: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Lagrangian k-means from codebook cb on residuals r -> (codebook, code lengths in bits)."""
    cb = cb.clone()
    lengths = torch.full((cb.shape[0],), math.log2(cb.shape[0]))
    for _ in range(iters):
        idx = assign(r, cb, lam * lengths)
        counts = torch.bincount(idx, minlength=cb.shape[0]).float()
        sums = torch.zeros_like(cb).index_add_(0, idx, r)
        filled = counts > 0
        cb[filled] = sums[filled] / counts[filled, None]
        lengths = code_lengths(assign(r, cb, lam * lengths), cb.shape[0])
    return cb, lengths


@torch.no_grad()
def fit_ecvq(model: VQAutoencoder, z: torch.Tensor, alpha: float, first_stage: int = 1, iters: int = 15,
             scale: float = 1.0) -> list[float]:
    """Refit stages >= first_stage of model's residual quantizer on latents z (N, D), in order, each on what the
    refitted stages before it leave, with lambda_s = alpha x (the squared error stage s removes per bit under
    the nearest-code quantizer); the costs are then scaled by `scale` (the code-cost scale: < 1 spends more
    bits for less error). In place. -> lambda_s per stage (0 for stages kept)."""
    stages, k = model.rvq.stages, model.cfg.codebook_size
    r, slope = z.float().clone(), []
    for vq in stages:
        cb = vq.codebook.float()
        idx = assign(r, cb, torch.zeros(k))
        bits = float(code_lengths(idx, k)[idx].mean())
        before = float(r.pow(2).sum(1).mean())
        r = r - cb[idx]
        slope.append((before - float(r.pow(2).sum(1).mean())) / bits)
    r, lambdas = z.float().clone(), []
    for s, vq in enumerate(stages):
        lam = alpha * slope[s] if s >= first_stage and alpha > 0 else 0.0
        if lam > 0:
            cb, length = fit_stage(r, vq.codebook.float(), lam, iters)
            vq.codebook.copy_(cb)
            vq.embed_sum.copy_(cb)
            vq.code_cost.copy_(scale * lam * length)
        lambdas.append(lam)
        r = r - vq.codebook.float()[assign(r, vq.codebook.float(), vq.code_cost.float())]
    return lambdas


@torch.no_grad()
def latents(model: VQAutoencoder, x: torch.Tensor, batch: int = 16) -> torch.Tensor:
    """Crops (N, 3, H, W) -> the encoder's latents as vectors (N*h*w, D), fp32."""
    return torch.cat([VQAutoencoder._flatten(model.vq_latent(x[i:i + batch])).float() for i in range(0, len(x), batch)])


# --- the indices the codec writes ----------------------------------------------------------------

def quality_plans(cfg, coarse_codes: torch.Tensor | None) -> list[tuple[int, torch.Tensor | None]]:
    """Every quality -> (stages coded, stage 0's allowed codes or None)."""
    out = []
    for q in range(1, cfg.num_qualities + 1):
        stages, size = cfg.quality_plan(q)
        out.append((stages, None if size is None else coarse_codes[:size]))
    return out


def refined_plans(cfg) -> list[tuple[int, int]]:
    """A model with refinement: every (refinement level k, VQ stages b) it could offer, [(b, k)] (its ladder is
    chosen at export, from all of them)."""
    return [(b, k) for b in range(1, cfg.num_stages + 1) for k in range(1, cfg.refine_levels + 1)]


@torch.no_grad()
def codec_pairs(model: VQAutoencoder, coarse_codes, crops: torch.Tensor, per_crop: int, seed: int = 2,
                batch: int = 64, beam: int = BEAM, refine_share: float = 0.5):
    """Each crop at `per_crop` random qualities, encoded as the codec encodes (beam search, each quality on its
    own) -> (rows (P,), plan ids (P,), indices (P, h, w, S) int16 with the stages a quality does not code 0).
    Plans: the model's qualities, then (with refinement) refined_plans, drawn with probability refine_share."""
    plans = quality_plans(model.cfg, coarse_codes)
    refined = refined_plans(model.cfg) if model.cfg.refine_levels else []
    gen = torch.Generator().manual_seed(seed)

    if refined:
        def draw() -> int:
            if float(torch.rand(1, generator=gen)) < refine_share:
                return len(plans) + int(torch.randint(len(refined), (1,), generator=gen))
            return int(torch.randint(len(plans), (1,), generator=gen))
        pairs = [(r, draw()) for r in range(len(crops)) for _ in range(per_crop)]
    else:   # distinct qualities per crop
        pairs = [(r, int(p)) for r in range(len(crops)) for p in torch.randperm(len(plans), generator=gen)[:per_crop]]
    plans = plans + [(b, None) for b, _ in refined]
    rows = torch.tensor([r for r, _ in pairs])
    plan_ids = torch.tensor([p for _, p in pairs])
    f = model.cfg.downsampling
    store = torch.zeros(len(pairs), crops.shape[2] // f, crops.shape[3] // f, model.cfg.num_stages, dtype=torch.int16)
    bar = tqdm(total=len(pairs), desc="codec indices", unit="crop", mininterval=10)
    for p, (stages, first) in enumerate(plans):
        members = (plan_ids == p).nonzero()[:, 0]
        for i in range(0, len(members), batch):
            chunk = members[i:i + batch]
            store[chunk, ..., :stages] = model.encode_indices(crops[rows[chunk]], stages, first, beam=beam).short()
            bar.update(len(chunk))
    bar.close()
    return rows, plan_ids, store


@torch.no_grad()
def own_beam_grids(model: VQAutoencoder, crops: torch.Tensor, beam: int = BEAM, batch: int = 8,
                   progress=None) -> torch.Tensor:
    """(N, 3, H, W) -> (N, S, h, w, S) int16: [:, c - 1] each crop as a file of c stages codes it (its own beam
    over c stages), stages >= c zero: the per-count layout of train_prior."""
    s = model.cfg.num_stages
    f = model.cfg.downsampling
    out = torch.zeros(len(crops), s, crops.shape[2] // f, crops.shape[3] // f, s, dtype=torch.int16)
    for i in range(0, len(crops), batch):
        for c in range(1, s + 1):
            out[i:i + batch, c - 1, ..., :c] = model.encode_indices(crops[i:i + batch], c, beam=beam).short()
        if progress is not None:
            progress(min(i + batch, len(crops)), len(crops))
    return out


# --- the decoder on the codec's indices ---------------------------------------------------------

@dataclass(frozen=True)
class DecoderSettings:
    """The decoder, its stage gains and post-filter trained on the indices the codec writes for training crops
    (a recipe's "decoder" phase). The encoder, codebooks, costs and prior stay: every file stays the same."""
    steps: int = 3000
    crops: int = 8192
    crop: int = 128
    batch_size: int = 16
    lr: float = 1e-4
    postfilter_lr_scale: float = 10.0   # the post-filter's step, relative (it starts at zero)
    loss: str = "log-mse"               # or "mse"; log-mse weighs every quality alike in dB
    qualities_per_crop: int = 2
    refine_share: float = 0.5           # a model with refinement: the share of pairs at a refinement level
    checkpoint_minutes: float = 10.0
    bf16: bool = True                   # bf16 autocast for the decoder (about half the step on a CPU); loss in fp32


def finetune_decoder(model: VQAutoencoder, coarse_codes, crops: torch.Tensor, st: DecoderSettings, out_dir: Path,
                     log=print, stop_at: float | None = None) -> int:
    """Train model's decoder side in place on `crops` (N, 3, H, W) for st.steps, resuming from
    out_dir/decoder.ckpt. -> steps done (less than st.steps if stopped at stop_at, with a checkpoint)."""
    if st.loss not in ("mse", "log-mse"):
        raise ValueError(f"decoder loss must be mse or log-mse, not {st.loss!r}")
    cfg = model.cfg
    pairs_path = out_dir / "pairs.pt"
    if pairs_path.exists():
        rows, plan_ids, store = torch.load(pairs_path, weights_only=True)
    else:
        t0 = time.time()
        rows, plan_ids, store = codec_pairs(model.eval(), coarse_codes, crops, st.qualities_per_crop,
                                            refine_share=st.refine_share)
        torch.save((rows, plan_ids, store), pairs_path)
        log(f"codec indices for {len(rows)} crop-quality pairs in {time.time() - t0:.0f}s")
    vq_plans = quality_plans(cfg, coarse_codes)
    refined = refined_plans(cfg) if cfg.refine_levels else []
    stages_of = torch.tensor([p[0] for p in vq_plans] + [b for b, _ in refined])
    level_of = torch.tensor([0] * len(vq_plans) + [k for _, k in refined])      # refinement level, 0: none
    codebooks = torch.stack([vq.codebook.float() for vq in model.rvq.stages])          # (S, K, D)
    model.train()
    model.rvq.eval()
    main = list(model.decoder.parameters()) + (list(model.gains.parameters()) if model.gains is not None else [])
    groups = [{"params": main, "scale": 1.0}]
    if model.postfilter is not None:
        groups.append({"params": list(model.postfilter.parameters()), "scale": st.postfilter_lr_scale})
    opt = torch.optim.Adam(groups, lr=st.lr)
    ckpt_path = out_dir / "decoder.ckpt"
    start = 0
    ck = load_checkpoint(ckpt_path, "cpu")
    if ck is not None:
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        start = ck["step"]
        log(f"resumed the decoder from step {start}")
    gen = torch.Generator().manual_seed(1 + start)
    t0 = last = time.time()
    step_s, done = 0.0, start

    def checkpoint(step: int) -> None:
        save_checkpoint(ckpt_path, dict(model=model.state_dict(), optimizer=opt.state_dict(), step=step))

    for step in range(start, st.steps):
        if stop_at is not None and step > start and time.time() + 2 * step_s > stop_at:  # >= 1 step a run
            break
        t_step = time.time()
        for g in opt.param_groups:
            g["lr"] = g["scale"] * cosine_lr(step, st.steps, st.lr, warmup=50, resumed_at=start)
        pick = torch.randint(len(rows), (st.batch_size,), generator=gen)
        stages = stages_of[plan_ids[pick]]
        idx = store[pick].long()                                                        # (B, h, w, S)
        vecs = codebooks[torch.arange(cfg.num_stages), idx]                             # (B, h, w, S, D)
        keep = (torch.arange(cfg.num_stages)[None] < stages[:, None]).float()          # (B, S)
        z = (vecs * keep[:, None, None, :, None]).sum(-2).permute(0, 3, 1, 2)          # (B, D, h, w)
        levels = level_of[plan_ids[pick]]
        if cfg.refine_levels:   # the refined values as the codec rounds them (the float model's means and scales)
            z, stages = refined_input(model, crops[rows[pick]], z, stages, levels)
        with torch.autocast(z.device.type, dtype=torch.bfloat16, enabled=st.bf16):
            out = model.decode(z, stages)
        mse = (out.float() - crops[rows[pick]]).pow(2).mean((1, 2, 3))
        loss = mse.clamp_min(1e-10).log().mean() if st.loss == "log-mse" else mse.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        done = step + 1
        step_s = time.time() - t_step
        if time.time() - last > 60 * st.checkpoint_minutes:
            checkpoint(done)
            last = time.time()
            log(f"decoder step {done} loss {float(loss):.5f} ({time.time() - t0:.0f}s)")
    checkpoint(done)
    model.eval()
    return done


@torch.no_grad()
def refined_input(model: VQAutoencoder, x: torch.Tensor, zq: torch.Tensor, stages: torch.Tensor,
                  levels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The decoder's input for a batch of which some samples are at a refinement level: crops x (B, 3, H, W),
    their VQ latents zq (B, D, h, w) of `stages` (B,), levels (B,) (0: none) -> (latents (B, D + R, h, w), the
    decoder's level entries (B,)). A refined sample gets zq + the rounded residual and the R rounded values."""
    cfg, d = model.cfg, model.cfg.latent_dim
    z = torch.cat([zq, zq.new_zeros(zq.shape[0], cfg.refine_dim, *zq.shape[2:])], 1)
    codes = stages.clone()
    i = (levels > 0).nonzero()[:, 0]
    if len(i):
        z_all = model.encoder(x[i]).float()
        r = torch.cat([z_all[:, :d] - zq[i], z_all[:, d:]], 1)
        r_hat, _ = model.refine(r, zq[i], levels[i], stages[i], noise=False)
        z[i] = torch.cat([zq[i] + r_hat[:, :d], r_hat[:, d:]], 1)
        codes[i] = cfg.decoder_level(levels[i], stages[i])
    return z, codes
