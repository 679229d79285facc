"""Training: the autoencoder first, then the integer prior on its indices; then export."""
from __future__ import annotations

import io
import json
import math
import random
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from .autoencoder import VQAutoencoder
from .config import ModelConfig
from .data import CropSampler, find_images, load_training_image
from .prior import IntegerPrior, PriorNet, training_contexts

PART_BYTES = 15 * 2**20  # a larger checkpoint is split into files of at most this (the device returns <= 16 MiB)
PACK_JPEG_QUALITY = 95   # pack crops, 4:4:4: about 41 dB PSNR and 42 KiB per 256x256 crop


def load_images(data_dir: str | Path, crop: int, limit: int | None = None):
    return load_images_from(find_images(data_dir)[:limit], crop)


def load_images_from(paths: list[Path], crop: int):
    return [load_training_image(p, crop) for p in tqdm(paths, desc="loading images", unit="img", mininterval=10)]


def make_pack(data_dir: str | Path, pack_dir: Path, size_mib: float, shard: int = 0, crop: int = 256,
              log=print) -> int:
    """Write random crops of the images under data_dir as JPEG files into pack_dir, up to size_mib in all.

    One crop per image, the images in an order drawn from `shard` (another shard: other crops, another
    order; after a full pass, new crops of the same images). Images smaller than the crop are skipped.
    Training reads a pack (or a folder of packs) as it reads any folder of images. Returns the crop count.
    """
    if pack_dir.exists() and any(pack_dir.iterdir()):
        raise ValueError(f"{pack_dir} is not empty")
    paths, rng = find_images(data_dir), random.Random(shard)
    pack_dir.mkdir(parents=True, exist_ok=True)
    budget, used, count = int(size_mib * 2**20), 0, 0
    bar = tqdm(total=budget, desc="pack", unit="B", unit_scale=True, mininterval=10)
    for patch in random_crops(paths, crop, rng):
        buf = io.BytesIO()
        Image.fromarray(patch).save(buf, "JPEG", quality=PACK_JPEG_QUALITY, subsampling=0, optimize=True)
        if used + buf.tell() > budget:
            break
        (pack_dir / f"crop{count:05d}.jpg").write_bytes(buf.getvalue())
        used, count = used + buf.tell(), count + 1
        bar.update(buf.tell())
    bar.close()
    if count == 0:
        raise ValueError(f"a pack of {size_mib} MiB holds not even one crop")
    info = dict(source=str(data_dir), shard=shard, crop=crop, jpeg_quality=PACK_JPEG_QUALITY, crops=count, bytes=used)
    (pack_dir / "pack.json").write_text(json.dumps(info, indent=2) + "\n")
    log(f"wrote {count} crops of {crop}x{crop} ({used / 2**20:.1f} MiB) to {pack_dir}")
    return count


def random_crops(paths: list[Path], crop: int, rng: random.Random):
    """Endless (crop, crop, 3) uint8 crops: one per image and pass, each pass in a new random order."""
    while True:
        found = False
        for path in rng.sample(paths, len(paths)):
            img = load_training_image(path, 1)  # downscaled as for training, never upsampled
            if min(img.shape[:2]) >= crop:
                found = True
                y, x = rng.randrange(img.shape[0] - crop + 1), rng.randrange(img.shape[1] - crop + 1)
                yield img[y:y + crop, x:x + crop]
        if not found:
            raise ValueError(f"no image is at least {crop}x{crop} pixels")


def cosine_lr(step: int, total: int, base: float, warmup: int = 200, resumed_at: int = 0) -> float:
    """Linear warmup, cosine decay to base/10; after a resume the rate ramps up again over `warmup` steps."""
    ramp = min(1.0, (step + 1) / warmup, (step - resumed_at + 1) / warmup if resumed_at else 1.0)
    t = max(0, step - warmup) / max(1, total - warmup)
    return ramp * base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


RESTART_EVERY = 100        # dead-code restarts: every 100 steps,
RESTART_QUIET_STEPS = 500  # but none in the last 500, so that no restarted code is exported untrained


def restart_due(step: int, steps: int) -> bool:
    """Whether step (0-based, of `steps`) ends with a dead-code restart."""
    return step % RESTART_EVERY == RESTART_EVERY - 1 and step < steps - RESTART_QUIET_STEPS


def sample_stage_counts(batch: int, num_stages: int, gen: torch.Generator) -> torch.Tensor:
    """Quantizer dropout: half the samples use all stages, the rest a uniform prefix."""
    full = torch.rand(batch, generator=gen) < 0.5
    prefix = torch.randint(1, num_stages + 1, (batch,), generator=gen)
    return torch.where(full, torch.full_like(prefix, num_stages), prefix)


# --- checkpoints: torch.save files, read back with weights_only=True, split when large -------------

def save_checkpoint(path: Path, state: dict, copy_to: Path | None = None, part_bytes: int = PART_BYTES) -> None:
    """Save `state` as the file `path`, or as path.part1ofN .. path.partNofN when larger than part_bytes.

    The same files go into the folder copy_to too, if given. The new files are written whole, then renamed
    into place, and only then are the older files of this checkpoint removed.
    """
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getbuffer()
    n = max(1, math.ceil(len(data) / part_bytes))
    for folder in [path.parent] + ([copy_to] if copy_to is not None else []):
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / path.name
        names = [target] if n == 1 else [folder / f"{path.name}.part{i + 1}of{n}" for i in range(n)]
        old = checkpoint_files(target)
        for i, name in enumerate(names):
            name.with_name(name.name + ".tmp").write_bytes(data[i * part_bytes:(i + 1) * part_bytes])
        for name in names:
            name.with_name(name.name + ".tmp").replace(name)
        for stale in set(old) - set(names):
            stale.unlink(missing_ok=True)


def load_checkpoint(path: Path, device: str) -> dict | None:
    """The checkpoint saved as `path` (whole or in parts); of several complete ones, that of the highest step."""
    best = None
    for files in complete_checkpoints(path):
        data = io.BytesIO(b"".join(f.read_bytes() for f in files))
        state = torch.load(data, map_location=device, weights_only=True)
        if best is None or state.get("step", 0) > best.get("step", 0):
            best = state
    return best


def load_autoencoder(path: str | Path, device: str = "cpu") -> tuple[VQAutoencoder, dict]:
    """An autoencoder phase's checkpoint (whole or in parts) -> (its model, in eval mode, and the whole state)."""
    state = load_checkpoint(Path(path), device)
    if state is None:
        raise ValueError(f"no complete checkpoint at {path}")
    model = VQAutoencoder(ModelConfig.from_dict(state["config"]))
    model.load_state_dict(state["model"])
    return model.to(device).eval(), state


def checkpoint_files(path: Path) -> list[Path]:
    """`path` itself if it exists, and every file path.partIofN."""
    pattern = re.compile(re.escape(path.name) + r"\.part\d+of\d+")
    parts = [p for p in path.parent.glob(path.name + ".part*") if pattern.fullmatch(p.name)]
    return ([path] if path.is_file() else []) + sorted(parts)


def complete_checkpoints(path: Path) -> list[list[Path]]:
    """The complete checkpoints among checkpoint_files(path): each a list of files to join in order."""
    whole, parts = [], {}
    for f in checkpoint_files(path):
        if f == path:
            whole.append([f])
        else:
            i, n = map(int, re.fullmatch(r".*\.part(\d+)of(\d+)", f.name).groups())
            parts.setdefault(n, {})[i] = f
    complete = [[got[i] for i in range(1, n + 1)] for n, got in parts.items() if set(got) == set(range(1, n + 1))]
    return whole + complete


def autoencoder_fields(cfg: ModelConfig) -> tuple:
    """The config fields the autoencoder's weights depend on (name and prior fields may change on resume)."""
    return (cfg.channels, cfg.latent_dim, cfg.codebook_size, cfg.num_stages, cfg.transform, cfg.stage_gains,
            cfg.postfilter, cfg.refine_levels, cfg.refine_dim, cfg.refine_hidden)


def prior_fields(cfg: ModelConfig) -> tuple:
    """The config fields the prior's weights depend on, besides the autoencoder's."""
    fields = cfg.prior_hidden, cfg.prior_kernel, cfg.prior_passes, cfg.stage0_prior_kernel, cfg.stage0_prior_passes
    return fields + (True,) if cfg.prior_stage_count else fields   # checkpoints from before the field still match


@torch.no_grad()
def fit_klt(images, f: int, d: int, crops: int = 3200, crop: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The KLT (PCA) of f x f x 3 pixel blocks of random training crops -> (basis (d, 3*f*f), mean (3,)).

    Blocks are flattened as (channel, row, column), the layout of a conv weight; the mean is per channel."""
    x = CropSampler(images, crop, seed=seed).batch(crops)                    # (N, 3, crop, crop) in [0, 1]
    mean = x.mean((0, 2, 3))
    blocks = F.unfold(x - mean.view(1, 3, 1, 1), f, stride=f)                # (N, 3*f*f, L)
    blocks = blocks.permute(0, 2, 1).reshape(-1, blocks.shape[1]).double()   # (N*L, 3*f*f)
    cov = blocks.t() @ blocks / len(blocks)
    values, vectors = torch.linalg.eigh(cov)                                 # ascending
    basis = vectors.flip(1)[:, :d].t().contiguous()                          # (d, 3*f*f), strongest first
    basis *= torch.where(basis.sum(1, keepdim=True) < 0, -1.0, 1.0)          # a fixed sign: rows sum >= 0
    return basis.float(), mean.float()


@torch.no_grad()
def start_from(model: VQAutoencoder, source: VQAutoencoder, klt: tuple | None = None) -> None:
    """Start `model` at a trained autoencoder `source` (an exported model's networks and codebooks).

    The same transform is copied whole. A conv source goes into a klt-hybrid model's branches, with the linear
    paths at zero (the decoder's bias at mid-grey): at step 0 the hybrid computes exactly what the source does,
    and training adds what the linear paths are worth. Stage gains (config stage_gains) and a post-filter
    (config postfilter) may be added: they start as the identity. Refinement (config refine_levels, refine_dim)
    may be added to a klt-hybrid source: see grow_refinement; klt = (basis (D + R, 3 f f), mean) for it.
    """
    src, dst = source.cfg, model.cfg
    if autoencoder_fields(src)[:4] != autoencoder_fields(dst)[:4]:
        raise ValueError(f"cannot start from {src.name}: its channels, latent, codebook or stages differ")
    if src.stage_gains and not dst.stage_gains:
        raise ValueError(f"cannot start from {src.name}: it has stage gains (config stage_gains) and this model not")
    if src.postfilter and src.postfilter != dst.postfilter:
        raise ValueError(f"cannot start from {src.name}: its post-filter (config postfilter {src.postfilter}) "
                         f"differs from this model's ({dst.postfilter})")
    added = (dst.stage_gains and not src.stage_gains) or (dst.postfilter and not src.postfilter)
    if dst.refine_dim != src.refine_dim or dst.refine_levels != src.refine_levels:
        if src.refine_dim or dst.transform != "klt-hybrid" or src.transform != "klt-hybrid" or klt is None:
            raise ValueError(f"cannot start from {src.name}: refinement is added only to a klt-hybrid model "
                             "without one, with the KLT of the new values")
        grow_refinement(model, source, *klt)
    elif src.transform == dst.transform:
        model.load_state_dict(source.state_dict(), strict=not added)
    elif (src.transform, dst.transform) == ("conv", "klt-hybrid"):
        model.encoder.branch.load_state_dict(source.encoder.state_dict())
        model.decoder.branch.load_state_dict(source.decoder.state_dict())
        model.rvq.load_state_dict(source.rvq.state_dict())
        for linear in (model.encoder.linear, model.decoder.linear):
            linear.weight.zero_()
            linear.bias.zero_()
        model.decoder.linear.bias.fill_(0.5)  # the hybrid subtracts the branch's mid-grey
    else:
        raise ValueError(f"cannot start a {dst.transform} model from a {src.transform} one")


@torch.no_grad()
def grow_refinement(model: VQAutoencoder, source: VQAutoencoder, basis: torch.Tensor, mean: torch.Tensor) -> None:
    """A klt-hybrid model with refinement, started from a trained one without: every tensor of the source goes
    into the leading part of its counterpart. The R new values are the KLT's components D..D+R-1 on both linear
    paths, and zero on the conv branches' new inputs and outputs, so at step 0 the decoder without refinement
    computes what the source does; refinement levels start with the gains and post-filter of all S stages."""
    model.set_linear_transform(basis.to(model.encoder.linear.weight.device), mean)
    model.encoder.branch.net[-1].weight.zero_()
    model.encoder.branch.net[-1].bias.zero_()
    model.decoder.branch.net[0].weight.zero_()
    s = source.cfg.num_stages
    target = model.state_dict()
    for key, value in source.state_dict().items():
        dst = target[key]
        if dst.shape == value.shape:
            dst.copy_(value)
        elif dst.dim() == value.dim():
            dst[tuple(slice(0, n) for n in value.shape)].copy_(value)
            if dst.shape[0] > value.shape[0] and (key.startswith("gains.") or key.startswith("postfilter.")):
                for k in range(1, model.cfg.refine_levels + 1):   # refinement on b stages: as b stages decoded
                    for b in range(1, s + 1):
                        dst[model.cfg.decoder_level(k, b) - 1] = value[b - 1]
        else:
            raise ValueError(f"cannot start from {source.cfg.name}: {key} has another shape")


def freeze_vq_side(model: VQAutoencoder) -> None:
    """Train only the refinement: the encoder's trunk and its D quantized outputs stay as they are (their
    gradients are cut), the codebooks take no EMA step; the readout of the R refined values, the refinement
    network and the decoder side train."""
    if not model.cfg.refine_dim or model.cfg.transform != "klt-hybrid":
        raise ValueError("train: refinement needs a klt-hybrid model with refinement (refine_dim)")
    d = model.cfg.latent_dim
    outputs = [model.encoder.linear, model.encoder.branch.net[-1]]
    for p in model.encoder.parameters():
        p.requires_grad_(False)
    for layer in outputs:
        for p in (layer.weight, layer.bias):
            p.requires_grad_(True)
            p.register_hook(lambda g: torch.cat([torch.zeros_like(g[:d]), g[d:]]))
    model.rvq.requires_grad_(False)
    model.rvq.frozen = True


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclass(frozen=True)
class AutoencoderSettings:
    """How the autoencoder phase trains (a recipe's "autoencoder" phase)."""
    steps: int = 150_000             # planned length: the learning-rate schedule's
    batch_size: int = 8
    crop: int = 128
    lr: float = 3e-4
    warmup: int = 200
    bf16: bool = True                # bf16 autocast for the networks; codebooks, distances and losses stay fp32
    refine_share: float = 0.5        # share of samples trained at a refinement level (models with refine_levels)
    refine_lambdas: tuple[float, float] = (3e-3, 1e-4)  # rate weight of the first and last level (geometric):
                                                        # loss = MSE + lambda * refinement bits per pixel
    eval_every: int = 1000           # steps between learning-curve points (OUT/curve.jsonl); 0: none
    train: str = "all"               # "all", or "refinement": the VQ side (encoder trunk and quantized values,
                                     # codebooks) frozen; the refined values' readout, the refinement network
                                     # and the decoder side train
    dead_code_restarts: bool = True  # replace codes whose EMA use fell below 1 every 100 steps; off for a start
                                     # from a model with code costs, whose rare codes are meant to be rare
    checkpoint_minutes: float = 10.0
    init_from: str | None = None     # a trained model (shipped name or folder) to start from
    transform_weight: float | tuple = 0.0  # models with refinement: + this x the MSE of the unquantized values
                                     # decoded at the finest level's entry, on a quarter of each batch (keeps the
                                     # ceiling up); or a schedule [[step, weight], ...]: each weight from its step
    transform_from: int = 0          # the step from which a single transform_weight applies

    def __post_init__(self):
        w = self.transform_weight
        if isinstance(w, (tuple, list)):
            try:
                if not all(_number(a) and math.isfinite(a) and a == int(a) and _number(b) for a, b in w):
                    raise TypeError
                pairs = tuple((int(a), float(b)) for a, b in w)
            except (TypeError, ValueError):
                raise ValueError(f"transform_weight: a number or [[step, weight], ...], not {list(w)!r}") from None
            steps = [a for a, _ in pairs]
            if not pairs or steps != sorted(set(steps)) or steps[0] < 0 or not all(0 <= b < math.inf for _, b in pairs):
                raise ValueError("transform_weight's schedule needs rising steps from 0 up and weights >= 0")
            if self.transform_from:
                raise ValueError("transform_from goes with a single transform_weight, not with a schedule")
            object.__setattr__(self, "transform_weight", pairs)
        elif not (_number(w) and 0 <= w < math.inf):
            raise ValueError(f"transform_weight: a number >= 0 or [[step, weight], ...], not {w!r}")

    def transform_weight_at(self, step: int) -> float:
        """The weight of the unquantized reconstruction's loss at this step (0: not computed)."""
        w = self.transform_weight
        if isinstance(w, tuple):
            return next((b for a, b in reversed(w) if step >= a), 0.0)
        return float(w) if step >= self.transform_from else 0.0

    def refine_lambda(self, levels: int) -> torch.Tensor:
        """(L,) rate weight per refinement level, from refine_lambdas[0] down to refine_lambdas[1]."""
        first, last = self.refine_lambdas
        k = torch.arange(levels, dtype=torch.float64) / max(1, levels - 1)
        return (first * (last / first) ** k).float()


def sample_levels(batch: int, cfg: ModelConfig, share: float, gen: torch.Generator):
    """(levels (B,), bases (B,) or None): VQ stage counts by quantizer dropout; with refinement levels, a
    `share` of the samples at a uniform refinement level on a uniform number of VQ stages."""
    levels = sample_stage_counts(batch, cfg.num_stages, gen)
    if not cfg.refine_levels:
        return levels, None
    refined = torch.rand(batch, generator=gen) < share
    level = cfg.num_stages + torch.randint(1, cfg.refine_levels + 1, (batch,), generator=gen)
    bases = torch.randint(1, cfg.num_stages + 1, (batch,), generator=gen)
    return torch.where(refined, level, levels), bases


def psnr(mse: float) -> float:
    return float(-10 * math.log10(max(mse, 1e-12)))


@torch.no_grad()
def evaluate_autoencoder(model: VQAutoencoder, val: torch.Tensor, batch_size: int = 16) -> dict:
    """The learning curve's point: PSNR and bits per pixel of the held-out crops val (N, 3, H, W).

    VQ levels 1, S/2 and S; refinement levels 1, L/2 and L on 2 and on S/2 VQ stages. VQ bits are each stage's
    empirical (unigram) entropy over val, an upper bound of what the prior spends; refinement bits are the
    refinement's Gaussian at rounded values. "ceiling": the finest level on S/2 stages. With refinement,
    "transform_psnr": every value the encoder makes, unquantized, through the decoder at that level's entry (what
    no quality can pass; issue 30 asks for 4 dB above the top quality)."""
    cfg, was_training = model.cfg, model.training
    model.eval()
    s, n_levels = cfg.num_stages, cfg.refine_levels
    points = [(q, None) for q in sorted({1, max(1, s // 2), s})]
    points += [(s + k, b) for b in sorted({min(2, s), max(1, s // 2)}) for k in sorted({1, max(1, n_levels // 2), n_levels})
               if n_levels]
    pixels = val.shape[2] * val.shape[3]
    out, entropy = {}, None
    for level, base in points:
        mse = bits = 0.0
        idx_all = []
        for x in val.split(batch_size):
            lv = torch.full((len(x),), level)
            bases = None if base is None else torch.full((len(x),), base)
            recon, _, idx, b = model(x, lv, bases, noise=False)
            mse += float((recon.float().clamp(0, 1) - x).pow(2).mean((1, 2, 3)).sum())
            bits += float(b.sum())
            idx_all.append(idx)
        if entropy is None:  # per-stage unigram entropy of the indices (the same at every point)
            idx = torch.cat(idx_all).reshape(-1, s)
            p = [torch.bincount(idx[:, t], minlength=cfg.codebook_size).float() / len(idx) for t in range(s)]
            entropy = [float(-(q[q > 0] * q[q > 0].log2()).sum()) for q in p]
            positions = idx.shape[0] / len(val)
        vq_stages = level if base is None else base
        vq_bpp = sum(entropy[:vq_stages]) * positions / pixels
        name = f"vq{level}" if base is None else f"r{level - s}b{base}"
        out[name] = dict(psnr=round(psnr(mse / len(val)), 3), bpp=round(vq_bpp + bits / len(val) / pixels, 4),
                         refine_bpp=round(bits / len(val) / pixels, 4))
    if n_levels:
        out["ceiling_psnr"] = out[f"r{n_levels}b{max(1, s // 2)}"]["psnr"]
        mse = sum(float(unquantized_mse(model, x, bf16=False, clamp=True)) * len(x) for x in val.split(batch_size))
        out["transform_psnr"] = round(psnr(mse / len(val)), 3)
    model.train(was_training)
    if getattr(model.rvq, "frozen", False):
        model.rvq.eval()
    return out


def train_autoencoder(cfg: ModelConfig, images, out_dir: Path, settings: AutoencoderSettings, device: str = "cpu",
                      log=print, stop_at: float | None = None, slim: bool = False, copy_to: Path | None = None,
                      init: VQAutoencoder | None = None, val: torch.Tensor | None = None) -> VQAutoencoder:
    """Train (or resume) up to settings.steps, with a checkpoint every settings.checkpoint_minutes and at the end.

    stop_at (a time.time()): stop early, with a checkpoint, before a step that would end past it (each run makes
    at least one step, so that a tight limit still makes progress); the model's steps_done says how far it got.
    slim: checkpoints without the optimizer state (a resume starts Adam afresh). copy_to: a second folder for the checkpoints. init: a trained autoencoder to start from
    (`start_from`) when there is no checkpoint yet. val: held-out crops for the learning curve
    (OUT/curve.jsonl, every settings.eval_every steps).
    """
    from .quantizer import all_sum, distributed

    st = settings
    steps, batch_size, crop = st.steps, st.batch_size, st.crop
    rank, world = (torch.distributed.get_rank(), torch.distributed.get_world_size()) if distributed() else (0, 1)
    if rank != 0:
        log = lambda *a, **k: None  # noqa: E731 - only rank 0 logs, checkpoints and measures
    ckpt_path = out_dir / "autoencoder.ckpt"
    model = VQAutoencoder(cfg).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=st.lr)
    start, elapsed_before = 0, 0.0
    ck = load_checkpoint(ckpt_path, device)
    if ck is not None:
        elapsed_before = float(ck.get("elapsed_s", 0.0))
        if autoencoder_fields(ModelConfig.from_dict(ck["config"])) != autoencoder_fields(cfg):
            raise ValueError(f"{ckpt_path} was trained with another config; use another --out")
        model.load_state_dict(ck["model"])
        if "optimizer" in ck:
            opt.load_state_dict(ck["optimizer"])
        start = ck["step"]
        fresh_adam = "" if "optimizer" in ck else " (no optimizer state: fresh Adam)"
        log(f"resumed autoencoder from step {start}{fresh_adam}")
    elif init is not None:
        klt = None
        if cfg.refine_dim > init.cfg.refine_dim:
            klt = fit_klt(images, cfg.downsampling, cfg.total_dim)
            log(f"refinement values: the KLT's components {cfg.latent_dim + 1}..{cfg.total_dim}")
        start_from(model, init.to(device), klt)
        log(f"started from the trained autoencoder of {init.cfg.name}")
    elif cfg.transform == "klt-hybrid":
        basis, mean = fit_klt(images, cfg.downsampling, cfg.total_dim)
        model.set_linear_transform(basis.to(device), mean.to(device))
        log(f"linear transform: the KLT of {cfg.downsampling}x{cfg.downsampling}x3 blocks, first {cfg.total_dim} components")
    if st.transform_weight and (not cfg.refine_levels or world > 1):
        raise ValueError("transform_weight needs a model with refinement levels, and one process")
    if st.train == "refinement":
        freeze_vq_side(model)
    elif st.train != "all":
        raise ValueError(f"autoencoder train must be all or refinement, not {st.train!r}")
    seed = start + 1_000_003 * rank                   # each rank its own crops and levels
    sampler = CropSampler(images, crop, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    net = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        # codebook buffers stay in step by all-reduced statistics (quantizer.all_sum), not by broadcasting
        warnings.filterwarnings("ignore", message=".*broadcast_buffers.*")
        warnings.filterwarnings("ignore", message="Grad strides do not match")  # conv layouts under bf16
        net = DistributedDataParallel(model, broadcast_buffers=False, find_unused_parameters=True)
    device_type = "cuda" if device.startswith("cuda") else "cpu"
    scaler = torch.amp.GradScaler("cuda", enabled=False)  # bf16 needs no loss scaling
    lambdas = st.refine_lambda(cfg.refine_levels) if cfg.refine_levels else None
    model.train()
    if getattr(model.rvq, "frozen", False):
        model.rvq.eval()                              # no EMA step, no k-means
    ema_psnr, restarted, done, step_s = None, 0, start, 0.0
    t0 = last_ckpt = time.time()
    curve_path = out_dir / "curve.jsonl"

    def checkpoint(step: int) -> None:
        if rank != 0:
            return
        state = dict(config=cfg.to_dict(), model=model.state_dict(), step=step,
                     elapsed_s=elapsed_before + time.time() - t0, first_loss=first_loss)
        if not slim:
            state["optimizer"] = opt.state_dict()
        save_checkpoint(ckpt_path, state, copy_to)

    def curve_point(step: int) -> None:
        point = evaluate_autoencoder(model, val)
        wall = elapsed_before + time.time() - t0
        line = dict(step=step, wall_s=round(wall), megapixels_per_s=round(mp_done / max(train_s, 1e-9), 4), **point)
        with open(curve_path, "a") as f:
            f.write(json.dumps(line) + "\n")
        log("curve " + json.dumps(line))

    mp_done, train_s = 0.0, 0.0
    bar = tqdm(range(start, steps), initial=start, total=steps, desc="autoencoder", unit="step", mininterval=10)
    first_loss = ck.get("first_loss") if ck is not None else None   # the phase's first step, over resumes
    for step in bar:
        stop = stop_at is not None and step > start and time.time() + 2 * step_s > stop_at  # >= 1 step a run
        if world > 1:   # every rank stops at the same step
            stop = bool(all_sum(torch.tensor([float(stop)], device=device)) > 0)
        if stop:
            break
        t_step = time.time()
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, steps, st.lr, warmup=st.warmup, resumed_at=start)
        x = sampler.batch(batch_size).to(device)
        levels, bases = sample_levels(batch_size, cfg, st.refine_share, gen)
        levels, bases = levels.to(device), None if bases is None else bases.to(device)
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=st.bf16):
            recon, commit, _, bits = net(x, levels, bases)
        mse_per = (recon.float() - x).pow(2).mean((1, 2, 3))
        loss_per = mse_per
        if lambdas is not None:
            refined = levels > cfg.num_stages
            lam = torch.where(refined, lambdas.to(device)[(levels - cfg.num_stages - 1).clamp_min(0)], 0.0)
            loss_per = mse_per + lam * bits / (x.shape[2] * x.shape[3])
        loss = loss_per.mean() + 0.25 * commit
        if st.transform_weight_at(step):
            loss = loss + st.transform_weight_at(step) * unquantized_mse(model, x[:max(1, batch_size // 4)], st.bf16)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        if st.dead_code_restarts and st.train == "all" and restart_due(step, steps):
            with torch.no_grad(), torch.autocast(device_type, dtype=torch.bfloat16, enabled=st.bf16):
                flat = model._flatten(model.vq_latent(x)).float()
            restarted = model.rvq.restart_dead_codes(flat)
        full = levels == cfg.num_stages
        if full.any():
            p = float(-10 * torch.log10(mse_per.detach()[full].mean().clamp_min(1e-10)))
            ema_psnr = p if ema_psnr is None else 0.98 * ema_psnr + 0.02 * p
        bar.set_postfix(loss=f"{loss.item():.5f}", psnr_full=f"{ema_psnr or 0:.2f}", refresh=False)
        value = float(loss.detach())
        first_loss = value if first_loss is None else first_loss
        ema_loss = value if step == start else 0.95 * ema_loss + 0.05 * value
        done = step + 1
        step_s = time.time() - t_step
        mp_done += batch_size * crop * crop / 1e6
        train_s += step_s
        if rank == 0 and val is not None and st.eval_every and (done % st.eval_every == 0 or done == steps):
            curve_point(done)
        if time.time() - last_ckpt > 60 * st.checkpoint_minutes or done == steps:
            checkpoint(done)
            last_ckpt = time.time()
            log(f"step {done} loss {loss.item():.5f} psnr_full {ema_psnr or 0:.2f} restarted {restarted} "
                f"elapsed {time.time() - t0:.0f}s {mp_done / max(train_s, 1e-9):.3f} megapixels/s")
    bar.close()
    if done < steps or done == start:
        checkpoint(done)
    seconds = time.time() - t0
    log(f"autoencoder steps {start}..{done} of {steps} in {seconds:.0f}s: "
        f"{mp_done / max(train_s, 1e-9):.3f} megapixels/s")
    model.steps_done = done
    model.train_seconds = elapsed_before + seconds  # wall time over all resumed runs
    model.megapixels_per_s = world * mp_done / max(train_s, 1e-9)
    model.loss_start, model.loss_end = first_loss, (ema_loss if first_loss is not None else None)
    model.ranks_in_sync = ranks_in_sync(model) if world > 1 else None
    return model


def unquantized_mse(model: VQAutoencoder, x: torch.Tensor, bf16: bool, clamp: bool = False) -> torch.Tensor:
    """MSE of crops x decoded from every value the encoder makes, unquantized, at the decoder's entry for the
    finest refinement level on S/2 stages: the learning curve's transform_psnr (clamp: the image clamped to [0, 1]
    first, as a decoded image is) and transform_weight's loss."""
    cfg = model.cfg
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        recon = model.decode(model.encoder(x), cfg.decoder_level(cfg.refine_levels, max(1, cfg.num_stages // 2)))
    recon = recon.float().clamp(0, 1) if clamp else recon.float()
    return (recon - x).pow(2).mean()


def ranks_in_sync(model: torch.nn.Module) -> bool:
    """Whether every rank holds the same weights and codebooks (a float64 checksum of every tensor)."""
    import torch.distributed as dist

    sums = torch.stack([t.detach().double().sum() for t in model.state_dict().values() if t.is_floating_point()])
    gathered = [torch.zeros_like(sums) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, sums)
    return all(torch.equal(g, gathered[0]) for g in gathered)


# --- coarse levels ---------------------------------------------------------------------------

@torch.no_grad()
def select_coarse_codes(model: VQAutoencoder, images, count: int, crops: int = 256, crop: int = 128,
                        batch_size: int = 32, device: str = "cpu", seed: int = 3) -> torch.Tensor:
    """Stage-0 codes in greedy order -> (count,) int64; coarse level n uses the first n.

    Each next code is the one that most lowers the squared error of training latents (random crops)
    quantised to the codes chosen so far (greedy k-medoids over the trained codebook).
    """
    sampler = CropSampler(images, crop, seed=seed)
    model.eval()
    latents = []
    for _ in range(0, crops, batch_size):
        z = model.vq_latent(sampler.batch(batch_size).to(device))              # (B, D, h, w)
        latents.append(z.permute(0, 2, 3, 1).reshape(-1, z.shape[1]).float())
    z = torch.cat(latents)                                                   # (N, D)
    dist = torch.cdist(z, model.rvq.stages[0].codebook.float()).pow(2)       # (N, K)
    order = [int(dist.sum(0).argmin())]
    best = dist[:, order[0]].clone()                                         # (N,) error with the codes so far
    for _ in tqdm(range(1, count), desc="coarse codes", unit="code", mininterval=10):
        gain = (best[:, None] - dist).clamp_min(0).sum(0)                    # (K,)
        gain[order] = -1
        order.append(int(gain.argmax()))
        best = torch.minimum(best, dist[:, order[-1]])
    return torch.tensor(order, dtype=torch.int64)


# --- the prior ------------------------------------------------------------------------------

@torch.no_grad()
def collect_indices(model: VQAutoencoder, images, count: int, crop: int = 256, batch_size: int = 8,
                    device: str = "cpu", seed: int = 1) -> torch.Tensor:
    """Indices of `count` random crops under the trained autoencoder -> (count, crop/f, crop/f, S)."""
    large = [im for im in images if min(im.shape[:2]) >= crop]  # images were prepared for a smaller crop
    if not large:
        raise ValueError(f"no training image is at least {crop}x{crop} pixels")
    sampler = CropSampler(large, crop, seed=seed)
    model.eval()
    out = []
    for _ in tqdm(range(0, count, batch_size), desc="collecting indices", unit="batch"):
        x = sampler.batch(batch_size).to(device)
        out.append(model.encode_indices(x, model.cfg.num_stages).cpu())
    return torch.cat(out)[:count]


def choose_input_scale(codebooks: list[torch.Tensor], indices: torch.Tensor) -> float:
    """Largest power of two that keeps 99.9 % of the prior's inputs inside int8."""
    vecs = torch.stack([codebooks[t][indices[..., t]] for t in range(indices.shape[-1])], 0)
    cums = torch.cumsum(vecs, 0)
    q = torch.quantile(torch.cat([vecs.flatten(), cums.flatten()]).abs()[::97], 0.999).item()
    return float(2 ** math.floor(math.log2(127 / max(q, 1e-6))))


def by_stage_count(indices: torch.Tensor) -> list[tuple[int, torch.Tensor]]:
    """Held-out index grids -> [(stages coded, grids (B', h, w, S))]. (B, h, w, S): all S stages coded.
    (B, S, h, w, S): per stage count, [:, c - 1] holds the grids of files that code c stages (stages >= c
    unused); to keep the evaluation's cost that of one layout, crop i is scored at count i % S + 1 only."""
    if indices.dim() == 4:
        return [(indices.shape[-1], indices)]
    s = indices.shape[1]
    return [(c, indices[c - 1::s, c - 1]) for c in range(1, s + 1) if len(indices[c - 1::s])]


def count_mask(sel: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """sel (B', S, 1, h, w) scored positions, counts (B',) -> only the stages each grid codes."""
    stages = torch.arange(sel.shape[1], device=sel.device)
    return sel & (stages[None, :] < counts[:, None].to(sel.device))[:, :, None, None, None]


def prior_bits_per_index(prior: PriorNet, codebooks, indices: torch.Tensor, batch_size: int = 16) -> float:
    """Mean cross-entropy (bits per index) of the float or fake-quantised prior on held-out grids
    (either layout of by_stage_count; per stage count, its coded stages)."""
    total, n = 0.0, 0
    with torch.no_grad():
        for count, grids in by_stage_count(indices):
            for i in range(0, len(grids), batch_size):
                ctx, tgt, sel = training_contexts(prior, codebooks, grids[i:i + batch_size].long())
                counts = torch.full((len(ctx),), count, dtype=torch.long, device=ctx.device)
                sel = count_mask(sel, counts)
                logp = torch.log_softmax(prior(ctx, counts), dim=2)       # (B', S, K, h, w)
                nll = -logp.gather(2, tgt[:, :, None]).squeeze(2)          # (B', S, h, w)
                total += float((nll * sel[:, :, 0]).sum())
                n += int(sel.sum())
    return total / n / math.log(2)


def integer_bits_per_index(int_prior: IntegerPrior, indices: torch.Tensor) -> tuple[float, float]:
    """(ideal bits per index under the integer tables, real bits per index of the coded payloads)."""
    from .coding import IndexCoder, stream_bytes  # entropy coding (constriction) only here: the autoencoder needs none

    coder, stats, real, n = IndexCoder(int_prior), {}, 0, 0
    for count, grids in by_stage_count(indices):
        for grid in grids[..., :count]:
            real += 8 * stream_bytes(coder.encode(grid.long(), stats=stats))
            n += grid[..., :count].numel()
    return stats["ideal_bits"] / n, real / n


def random_subgrids(indices: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    """(B, h, w, S) -> (B, size, size, S): one random window (at even offsets, to keep the pass pattern) and flip."""
    b, h, w, _ = indices.shape
    y = 2 * int(torch.randint(0, (h - size) // 2 + 1, (1,), generator=gen))
    x = 2 * int(torch.randint(0, (w - size) // 2 + 1, (1,), generator=gen))
    out = indices[:, y:y + size, x:x + size]
    return out.flip(2) if torch.rand(1, generator=gen) < 0.5 and size % 2 == 0 else out


def train_prior(model: VQAutoencoder, indices: torch.Tensor, out_dir: Path, float_steps: int, qat_steps: int,
                batch_size: int = 16, grid: int = 16, lr: float = 2e-3, device: str = "cpu", log=print,
                stop_at: float | None = None, copy_to: Path | None = None, autoencoder_step: int | None = None):
    """Train the prior in float, then quantisation-aware; returns (PriorNet, IntegerPrior, report dict).

    indices: (N, h, w, S) grids of S stages, or (N, S, h, w, S) grids per stage count (by_stage_count), for a
    prior with stage-count biases: each step draws a count per grid and scores the stages it codes.

    stop_at, copy_to: as for train_autoencoder; a stop before the end saves a checkpoint and returns None.
    autoencoder_step: stored in the checkpoint; a checkpoint of another step is not resumed (its indices differ).
    """
    cfg = model.cfg
    codebooks = [vq.codebook.detach().to(device) for vq in model.rvq.stages]
    if len(indices) < 2:
        raise ValueError("the prior needs at least 2 index grids (--prior-crops)")
    held_out = max(1, len(indices) // 20)
    val, train_idx = indices[:held_out].to(device), indices[held_out:].to(device)
    ckpt_path = out_dir / "prior.ckpt"
    per_count = indices.dim() == 5
    prior = PriorNet(cfg, choose_input_scale(codebooks, (train_idx[:64, -1] if per_count else train_idx[:64]).long())).to(device)
    opt = torch.optim.Adam(prior.parameters(), lr=lr)
    start, report = 0, {}
    ck = load_checkpoint(ckpt_path, device)
    if ck is not None and ck.get("autoencoder_step") != autoencoder_step:
        log("prior.ckpt is from another autoencoder step: training the prior afresh")
        ck = None
    if ck is not None and ck.get("prior_fields", list(prior_fields(cfg))) != list(prior_fields(cfg)):
        log("prior.ckpt has another prior config: training the prior afresh")
        ck = None
    if ck is not None:
        prior.load_state_dict(ck["prior"])
        opt.load_state_dict(ck["optimizer"])
        start, report = ck["step"], json.loads(ck["report"])
        log(f"resumed prior from step {start}")
    total = float_steps + qat_steps
    gen = torch.Generator().manual_seed(start)
    bar = tqdm(range(start, total), initial=start, total=total, desc="prior", unit="step", mininterval=10)

    def checkpoint(step: int) -> None:
        state = dict(prior=prior.state_dict(), optimizer=opt.state_dict(), step=step, report=json.dumps(report),
                     autoencoder_step=autoencoder_step, prior_fields=list(prior_fields(cfg)))
        save_checkpoint(ckpt_path, state, copy_to)

    step_s = 0.0
    for step in bar:
        if stop_at is not None and step > start and time.time() + 2 * step_s > stop_at:  # >= 1 step a run
            bar.close()
            checkpoint(step)
            log(f"prior stopped at step {step} of {total}")
            return None
        t_step = time.time()
        if step == float_steps and "float_bits_per_index" not in report:
            prior.quantize = False
            report["float_bits_per_index"] = prior_bits_per_index(prior, codebooks, val)
            log(f"float prior: {report['float_bits_per_index']:.4f} bits/index")
            calib, calib_counts = train_idx[:64], None
            if per_count:   # every stage count in turn, once per pass of the longest schedule (training_contexts)
                calib_counts = torch.arange(len(calib), device=device) % cfg.num_stages + 1
                calib = calib[torch.arange(len(calib), device=device), calib_counts - 1]
                calib_counts = calib_counts.repeat(max(cfg.stage_prior(t)[1] for t in range(cfg.num_stages)))
            prior.calibrate(training_contexts(prior, codebooks, calib.long())[0], counts=calib_counts)
            report["activation_steps"] = prior.act_scales.tolist()
            prior.quantize = True  # post-training quantisation alone, before any quantisation-aware step
            report["ptq_bits_per_index"] = prior_bits_per_index(prior, codebooks, val)
            log(f"quantised without fine-tuning: {report['ptq_bits_per_index']:.4f} bits/index")
        prior.quantize = step >= float_steps
        phase_step, phase_len = (step, float_steps) if step < float_steps else (step - float_steps, qat_steps)
        for g in opt.param_groups:
            g["lr"] = cosine_lr(phase_step, phase_len, lr if step < float_steps else lr / 5, warmup=50)
        pick = torch.randint(0, len(train_idx), (batch_size,), generator=gen)
        counts = None
        if per_count:  # a stage count per grid, uniform over 1..S
            counts = torch.randint(1, cfg.num_stages + 1, (batch_size,), generator=gen)
            chosen = train_idx[pick.to(train_idx.device), (counts - 1).to(train_idx.device)].long()
            counts = counts.to(device)
        else:
            chosen = train_idx[pick.to(train_idx.device)]
        grids = random_subgrids(chosen, min(grid, train_idx.shape[-2]), gen)
        passes = torch.stack([torch.randint(0, cfg.stage_prior(t)[1], (batch_size,), generator=gen)
                              for t in range(cfg.num_stages)], 1).to(device)                  # (B, S)
        ctx, tgt, sel = training_contexts(prior, codebooks, grids, passes)
        if counts is not None:
            sel = count_mask(sel, counts)
        logp = torch.log_softmax(prior(ctx, counts), dim=2)
        nll = -logp.gather(2, tgt[:, :, None]).squeeze(2)
        loss = (nll * sel[:, :, 0]).sum() / sel.sum() / math.log(2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.set_postfix(bits=f"{loss.item():.3f}", refresh=False)
        if step % 100 == 99 or step == total - 1:
            checkpoint(step + 1)
            log(f"prior step {step + 1} bits/index {loss.item():.4f}")
        step_s = time.time() - t_step
    if "float_bits_per_index" not in report:
        prior.quantize = False
        report["float_bits_per_index"] = prior_bits_per_index(prior, codebooks, val)
    prior.quantize = True
    report["qat_bits_per_index"] = prior_bits_per_index(prior, codebooks, val)
    int_prior = IntegerPrior.from_float(prior.cpu(), [c.cpu() for c in codebooks])
    ideal, real = integer_bits_per_index(int_prior, val.cpu())
    report.update(integer_bits_per_index=ideal, coded_bits_per_index=real,
                  uniform_bits_per_index=math.log2(cfg.codebook_size), held_out_grids=len(val),
                  grid_shape=list(val.shape[1:]))
    log(json.dumps(report))
    return prior, int_prior, report
