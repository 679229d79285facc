"""The realistic decoder (issue 28): a texture head on the fidelity decoder's image, trained adversarially.

VQ-GAN's idea (taming-transformers) for the same files: a decoder trained against a discriminator draws plausible
texture where one trained on squared error averages it away. Here the fidelity decoder stays as it is and a small
residual network on its output (TextureHead, about 0.3 M parameters, its own weights file beside the model) is
trained with
- a PatchGAN discriminator and the hinge loss, as in VQ-GAN;
- the adaptive weight of VQ-GAN: the GAN term scaled so its gradient at the head's last layer matches the
  faithfulness term's;
- faithfulness with no pretrained network (no LPIPS or VGG here): L1 on pixels, and squared error of 4x4 block
  means (the colours and smooth shading must stay the photo's; the texture inside a block is free).
It is trained on the indices the codec writes, at qualities 1..max_quality, and serves those where it measured
well on the held-out photos; files do not change: any .vq file decodes either way.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .train import cosine_lr, load_checkpoint, save_checkpoint


class TextureHead(nn.Module):
    """x (B, 3, H, W) the fidelity decoder's image in [0, 1], H and W even; stages (B,) decoded -> the realistic
    image: x plus a residual from residual blocks at half resolution (pixel-unshuffled), their input scaled and
    shifted per stage count. The last layer starts at zero: at init the head is the identity."""

    def __init__(self, stages: int, channels: int = 64, blocks: int = 4):
        super().__init__()
        self.inp = nn.Conv2d(12, channels, 3, padding=1)
        self.blocks = nn.ModuleList(nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.LeakyReLU(0.2),
                                                  nn.Conv2d(channels, channels, 3, padding=1))
                                    for _ in range(blocks))
        self.out = nn.Conv2d(channels, 12, 3, padding=1)
        self.gain = nn.Parameter(torch.ones(stages, channels))
        self.offset = nn.Parameter(torch.zeros(stages, channels))
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, stages: torch.Tensor) -> torch.Tensor:
        q = stages.long() - 1
        h = self.inp(F.pixel_unshuffle(x - 0.5, 2))                                    # (B, C, H/2, W/2)
        h = F.leaky_relu(h * self.gain[q][:, :, None, None] + self.offset[q][:, :, None, None], 0.2)
        for block in self.blocks:
            h = h + block(h)
        return x + F.pixel_shuffle(self.out(h), 2)


class PatchDiscriminator(nn.Module):
    """VQ-GAN's PatchGAN (pix2pix's NLayerDiscriminator): 4x4 convolutions, stride 2 then 1, batch norm,
    leaky ReLU; one logit per overlapping patch (70 x 70 pixels with 3 layers)."""

    def __init__(self, channels: int = 32, layers: int = 3):
        super().__init__()
        seq = [nn.Conv2d(3, channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        c = channels
        for n in range(1, layers + 1):
            c_out = channels * min(2 ** n, 8)
            seq += [nn.Conv2d(c, c_out, 4, 2 if n < layers else 1, 1, bias=False), nn.BatchNorm2d(c_out),
                    nn.LeakyReLU(0.2)]
            c = c_out
        seq.append(nn.Conv2d(c, 1, 4, 1, 1))
        self.net = nn.Sequential(*seq)

    def forward(self, x):   # (B, 3, H, W) in [0, 1] -> (B, 1, h, w) logits
        return self.net(2 * x - 1)


def hinge_d_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1 - real).mean() + F.relu(1 + fake).mean())


def adaptive_weight(rec: torch.Tensor, gan: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    """VQ-GAN's lambda: |grad rec| / |grad gan| at the last layer's weight, clamped to [0, 1e4], detached."""
    g_rec = torch.autograd.grad(rec, last, retain_graph=True)[0]
    g_gan = torch.autograd.grad(gan, last, retain_graph=True)[0]
    return (g_rec.norm() / (g_gan.norm() + 1e-4)).clamp(0, 1e4).detach()


def faithfulness(out: torch.Tensor, x: torch.Tensor, pool: int, low_weight: float) -> torch.Tensor:
    """L1 on pixels + low_weight x squared error of pool x pool block means (x 100: on the scale of L1)."""
    low = F.mse_loss(F.avg_pool2d(out, pool), F.avg_pool2d(x, pool))
    return F.l1_loss(out, x) + low_weight * 100 * low


@dataclass(frozen=True)
class RealisticSettings:
    """A recipe's "realistic" phase: the texture head trained against a PatchGAN on the codec's own indices."""
    steps: int = 6000
    crops: int = 2048
    crop: int = 128
    batch_size: int = 8
    lr: float = 2e-4
    disc_lr: float = 2e-4
    max_quality: int = 6            # trained on qualities 1..max_quality
    # served (decompress uses the head) at each quality at which, on the held-out crops after training, the
    # head's median detail ratio is at most max_detail and its PSNR at most max_psnr_drop dB below the fidelity
    # decoder's; at the others, the fidelity image
    max_detail: float = 1.25
    max_psnr_drop: float = 3.0
    qualities_per_crop: int = 2
    gan_weight: float = 0.5         # times the adaptive weight
    disc_warmup: int = 300          # steps of the faithfulness term alone while the discriminator learns
    low_pool: int = 4
    low_weight: float = 1.0
    channels: int = 64
    blocks: int = 4
    disc_channels: int = 32
    eval_every: int = 500
    checkpoint_minutes: float = 10.0
    init_from: str | None = None    # a trained model whose autoencoder to use, instead of the run's


def head_config(st: RealisticSettings, qualities: list[int] | None = None) -> dict:
    """The head's file config: its shape, and the qualities it serves (None: all it was trained on)."""
    return {"channels": st.channels, "blocks": st.blocks,
            "qualities": list(range(1, st.max_quality + 1)) if qualities is None else list(qualities)}


def serving_qualities(scores: dict, st: RealisticSettings) -> list[int]:
    """evaluate()'s scores at qualities 1..max_quality -> those whose detail ratio is <= max_detail and whose
    PSNR drop is <= max_psnr_drop."""
    return [q for q in range(1, st.max_quality + 1) if f"q{q}" in scores
            and scores[f"q{q}"]["detail_realistic"] <= st.max_detail
            and scores[f"q{q}"]["psnr_fidelity"] - scores[f"q{q}"]["psnr_realistic"] <= st.max_psnr_drop]


@torch.no_grad()
def fidelity_pairs(model, coarse_codes, crops: torch.Tensor, st: RealisticSettings, seed: int = 5, batch: int = 32):
    """Each crop at st.qualities_per_crop random qualities of 1..max_quality, encoded as the codec encodes (beam
    search) and decoded by the fidelity decoder -> (rows (P,), stages (P,), decoded images (P, 3, H, W) fp16)."""
    from .finetune import BEAM, quality_plans

    plans = quality_plans(model.cfg, coarse_codes)[:st.max_quality]
    gen = torch.Generator().manual_seed(seed)
    pairs = [(r, int(p)) for r in range(len(crops)) for p in torch.randperm(len(plans), generator=gen)[:st.qualities_per_crop]]
    rows = torch.tensor([r for r, _ in pairs])
    plan_ids = torch.tensor([p for _, p in pairs])
    decoded = torch.zeros(len(pairs), *crops.shape[1:], dtype=torch.float16)
    for p, (stages, first) in enumerate(plans):
        members = (plan_ids == p).nonzero()[:, 0]
        for i in range(0, len(members), batch):
            chunk = members[i:i + batch]
            idx = model.encode_indices(crops[rows[chunk]], stages, first, beam=BEAM)
            decoded[chunk] = model.decode_indices(idx).half()
    stages = torch.tensor([plans[p][0] for p in plan_ids.tolist()])
    return rows, stages, decoded


@torch.no_grad()
def evaluate(head: TextureHead, model, coarse_codes, val: torch.Tensor, qualities=(1, 3, 4, 6)) -> dict:
    """Held-out crops at each quality: PSNR and detail ratio (bench.metrics) of the fidelity and realistic images."""
    import numpy as np

    from .bench.metrics import detail_ratio, psnr
    from .finetune import BEAM, quality_plans

    plans = quality_plans(model.cfg, coarse_codes)
    out = {}
    head.eval()
    for q in qualities:
        if q > len(plans):
            continue
        stages, first = plans[q - 1]
        fid = model.decode_indices(model.encode_indices(val, stages, first, beam=BEAM))
        real = head(fid, torch.full((len(val),), stages)).clamp(0, 1)
        to8 = lambda t: (t.permute(0, 2, 3, 1) * 255).round().byte().numpy()
        x8, f8, r8 = to8(val), to8(fid), to8(real)
        out[f"q{q}"] = {k: round(float(np.median([m(a[i], x8[i]) for i in range(len(val))])), 3)
                        for k, m, a in (("psnr_fidelity", psnr, f8), ("psnr_realistic", psnr, r8),
                                        ("detail_fidelity", detail_ratio, f8), ("detail_realistic", detail_ratio, r8))}
    head.train()
    return out


def train_realistic(model, coarse_codes, crops: torch.Tensor, st: RealisticSettings, out_dir: Path, val=None,
                    log=print, stop_at: float | None = None) -> tuple[TextureHead, int]:
    """Train a TextureHead for `model` (its fidelity decoder frozen) on `crops` (N, 3, H, W), resuming from
    out_dir/realistic.ckpt; the learning curve (held-out `val` crops) in out_dir/curve.jsonl. -> (head, steps)."""
    model.eval()
    pairs_path = out_dir / "pairs.pt"
    if pairs_path.exists():
        rows, stages, decoded = torch.load(pairs_path, weights_only=True)
    else:
        t0 = time.time()
        rows, stages, decoded = fidelity_pairs(model, coarse_codes, crops, st)
        torch.save((rows, stages, decoded), pairs_path)
        log(f"fidelity decodes of {len(rows)} crop-quality pairs in {time.time() - t0:.0f}s")
    head = TextureHead(model.cfg.num_stages, st.channels, st.blocks)
    disc = PatchDiscriminator(st.disc_channels)
    opt_g = torch.optim.Adam(head.parameters(), lr=st.lr, betas=(0.5, 0.9))
    opt_d = torch.optim.Adam(disc.parameters(), lr=st.disc_lr, betas=(0.5, 0.9))
    ckpt_path, curve_path = out_dir / "realistic.ckpt", out_dir / "curve.jsonl"
    start = 0
    ck = load_checkpoint(ckpt_path, "cpu")
    if ck is not None:
        head.load_state_dict(ck["head"])
        disc.load_state_dict(ck["disc"])
        opt_g.load_state_dict(ck["opt_g"])
        opt_d.load_state_dict(ck["opt_d"])
        start = ck["step"]
        log(f"resumed the realistic decoder from step {start}")
    gen = torch.Generator().manual_seed(7 + start)
    t0 = last = time.time()
    step_s, done = 0.0, start
    autocast = torch.autocast("cpu", dtype=torch.bfloat16)

    def checkpoint(step: int) -> None:
        save_checkpoint(ckpt_path, dict(head=head.state_dict(), disc=disc.state_dict(), opt_g=opt_g.state_dict(),
                                        opt_d=opt_d.state_dict(), step=step))

    if start == 0 and val is not None:
        with curve_path.open("a") as f:
            f.write(json.dumps({"step": 0, **evaluate(head, model, coarse_codes, val)}) + "\n")
    from tqdm import tqdm

    bar = tqdm(range(start, st.steps), initial=start, total=st.steps, desc="realistic", unit="step", mininterval=10)
    for step in bar:
        if stop_at is not None and step > start and time.time() + 2 * step_s > stop_at:  # >= 1 step a run
            break
        t_step = time.time()
        for opt, lr in ((opt_g, st.lr), (opt_d, st.disc_lr)):
            for g in opt.param_groups:
                g["lr"] = cosine_lr(step, st.steps, lr, warmup=50, resumed_at=start)
        pick = torch.randint(len(rows), (st.batch_size,), generator=gen)
        x, y, s = crops[rows[pick]], decoded[pick].float(), stages[pick]
        # the discriminator: real crops against the head's images
        with autocast:
            fake = head(y, s)
            d_loss = hinge_d_loss(disc(x), disc(fake.detach().float()))
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        # the head: faithful, and (after the warm-up) judged real
        with autocast:
            rec = faithfulness(fake.float(), x, st.low_pool, st.low_weight)
            loss = rec
            weight = torch.zeros(())
            if step >= st.disc_warmup:
                g_loss = -disc(fake.float()).mean()
                weight = st.gan_weight * adaptive_weight(rec, g_loss, head.out.weight)
                loss = rec + weight * g_loss
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        opt_g.step()
        done = step + 1
        step_s = time.time() - t_step
        bar.set_postfix(d_loss=f"{float(d_loss):.3f}", rec=f"{float(rec):.4f}", w=f"{float(weight):.3f}", refresh=False)
        if val is not None and st.eval_every and (done % st.eval_every == 0 or done == st.steps):
            row = {"step": done, "wall_s": round(time.time() - t0), "d_loss": round(float(d_loss), 4),
                   "rec": round(float(rec), 5), "gan_weight": round(float(weight), 4),
                   **evaluate(head, model, coarse_codes, val)}
            with curve_path.open("a") as f:
                f.write(json.dumps(row) + "\n")
            log(f"realistic step {done}: {json.dumps(row)}")
        if time.time() - last > 60 * st.checkpoint_minutes:
            checkpoint(done)
            last = time.time()
    bar.close()
    checkpoint(done)
    return head.eval(), done


def save_head(head: TextureHead, config: dict, path: Path) -> None:
    """The head's weights in 16 bits, with its config (head_config), as a safetensors file (no pickle)."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().half().contiguous() for k, v in head.state_dict().items()}
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata={"config": json.dumps(config)})
    tmp.replace(path)


def load_head(path: Path, stages: int) -> tuple[TextureHead, dict]:
    """A realistic.safetensors -> (the head in float32, eval mode; its config)."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        config = json.loads(f.metadata()["config"])
        tensors = {k: f.get_tensor(k).float() for k in f.keys()}
    head = TextureHead(stages, config["channels"], config["blocks"])
    head.load_state_dict(tensors)
    return head.eval(), config
