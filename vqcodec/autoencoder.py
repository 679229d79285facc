"""The VQ-VAE: convolutional encoder, residual VQ, convolutional decoder (float; torch)."""
from __future__ import annotations

import torch
import torch.nn as nn

from .config import ModelConfig
from .quantizer import ResidualVQ
from .refine import ScalarRefinement


class ResBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.ReLU(inplace=True),
                                  nn.Conv2d(c, c, 3, padding=1))

    def forward(self, x):
        return x + self.body(x)


class Encoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        c = cfg.channels
        layers: list[nn.Module] = [nn.Conv2d(3, c[0], 5, stride=2, padding=2), nn.ReLU(inplace=True)]
        for i in range(1, len(c)):
            layers += [nn.Conv2d(c[i - 1], c[i], 3, stride=2, padding=1), nn.ReLU(inplace=True)]
            layers += [ResBlock(c[i]) for _ in range(i)]
        layers += [nn.Conv2d(c[-1], cfg.total_dim, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x):  # (B, 3, H, W) in [0, 1] -> (B, D, H/f, W/f)
        return self.net(x - 0.5)


class Decoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        c = cfg.channels
        layers: list[nn.Module] = [nn.Conv2d(cfg.total_dim, c[-1], 3, padding=1), nn.ReLU(inplace=True)]
        layers += [ResBlock(c[-1]) for _ in range(len(c) - 1)]
        for i in range(len(c) - 1, 0, -1):
            layers += [nn.Conv2d(c[i], c[i - 1] * 4, 3, padding=1), nn.PixelShuffle(2), nn.ReLU(inplace=True)]
            if i > 1:
                layers += [ResBlock(c[i - 1])]
        layers += [nn.Conv2d(c[0], 3 * 4, 3, padding=1), nn.PixelShuffle(2)]
        self.net = nn.Sequential(*layers)

    def forward(self, z, film=None):  # (B, D, h, w) -> (B, 3, h*f, w*f)
        """film: None, or (gain, offset), each (B, C), on the channels of the first layer's output."""
        if film is None:
            return self.net(z) + 0.5
        h = self.net[:2](z)                                                  # first conv + ReLU: (B, C, h, w)
        h = h * film[0][:, :, None, None] + film[1][:, :, None, None]
        return self.net[2:](h) + 0.5


class StageGains(nn.Module):
    """Per number of decoded stages q (1..S): a gain and an offset on every latent value, and on every channel
    of the decoder's first layer (FiLM). The decoder then knows how coarse its input is: one model for all
    rates. Gains 1 and offsets 0 (the init) change nothing."""

    def __init__(self, stages: int, latent_dim: int, channels: int):
        super().__init__()
        self.latent_gain = nn.Parameter(torch.ones(stages, latent_dim))
        self.latent_offset = nn.Parameter(torch.zeros(stages, latent_dim))
        self.film_gain = nn.Parameter(torch.ones(stages, channels))
        self.film_offset = nn.Parameter(torch.zeros(stages, channels))

    def forward(self, z, stages: torch.Tensor):  # z (B, D [+ R], h, w), stages (B,) in 1..levels -> (z', film)
        q = stages.long() - 1
        d = self.latent_gain.shape[1]                # the quantized values only; refined ones pass as they are
        zd = z[:, :d] * self.latent_gain[q][:, :, None, None] + self.latent_offset[q][:, :, None, None]
        z = zd if z.shape[1] == d else torch.cat([zd, z[:, d:]], 1)
        return z, (self.film_gain[q], self.film_offset[q])


class PostFilter(nn.Module):
    """A small residual filter on the decoded image at full resolution (the decoder's last layer works at
    half resolution and its linear path block by block): conv3x3 -> ReLU -> conv3x3 -> ReLU -> conv3x3, the
    hidden channels scaled and shifted per number of decoded stages, the last layer zero at init."""

    def __init__(self, stages: int, channels: int):
        super().__init__()
        self.inp = nn.Conv2d(3, channels, 3, padding=1)
        self.mid = nn.Conv2d(channels, channels, 3, padding=1)
        self.out = nn.Conv2d(channels, 3, 3, padding=1)
        self.gain = nn.Parameter(torch.ones(stages, channels))
        self.offset = nn.Parameter(torch.zeros(stages, channels))
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x, stages: torch.Tensor):  # x (B, 3, H, W), stages (B,) in 1..S -> (B, 3, H, W)
        q = stages.long() - 1
        h = torch.relu(self.inp(x - 0.5))                                     # (B, C, H, W)
        h = torch.relu(self.mid(h) * self.gain[q][:, :, None, None] + self.offset[q][:, :, None, None])
        return x + self.out(h)


class HybridEncoder(nn.Module):
    """A linear block transform (f x f x 3 pixels -> D values; the KLT at init) + the conv encoder as a branch
    whose last layer starts at zero: at init the latent is exactly the KLT's first D coefficients."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        f = cfg.downsampling
        self.linear = nn.Conv2d(3, cfg.total_dim, f, stride=f)
        self.branch = Encoder(cfg)
        nn.init.zeros_(self.branch.net[-1].weight)
        nn.init.zeros_(self.branch.net[-1].bias)

    def forward(self, x):  # (B, 3, H, W) in [0, 1] -> (B, D, H/f, W/f)
        with torch.autocast(x.device.type, enabled=False):   # the linear path in fp32 under bf16 autocast
            linear = self.linear(x.float())
        return linear + self.branch(x)


class HybridDecoder(nn.Module):
    """The linear synthesis (the KLT's basis at init) + the conv decoder as a branch that starts at zero."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        f = cfg.downsampling
        self.linear = nn.ConvTranspose2d(cfg.total_dim, 3, f, stride=f)
        self.branch = Decoder(cfg)
        last = [m for m in self.branch.net if isinstance(m, nn.Conv2d)][-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(self, z, film=None):  # (B, D, h, w) -> (B, 3, h*f, w*f)
        with torch.autocast(z.device.type, enabled=False):   # fp32: the finest stages' small vectors survive
            linear = self.linear(z.float())
        return linear + self.branch(z, film) - 0.5  # the branch adds 0.5 (a conv decoder's mid-grey)


class VQAutoencoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        hybrid = cfg.transform == "klt-hybrid"
        self.encoder = HybridEncoder(cfg) if hybrid else Encoder(cfg)
        self.rvq = ResidualVQ(cfg.num_stages, cfg.codebook_size, cfg.latent_dim)
        self.decoder = HybridDecoder(cfg) if hybrid else Decoder(cfg)
        levels = cfg.decoder_levels
        self.gains = StageGains(levels, cfg.latent_dim, cfg.channels[-1]) if cfg.stage_gains else None
        self.postfilter = PostFilter(levels, cfg.postfilter) if cfg.postfilter else None
        self.refine = (ScalarRefinement(cfg.refine_levels, cfg.total_dim, cfg.refine_hidden, cond_dim=cfg.latent_dim,
                                        bases=cfg.num_stages)
                       if cfg.refine_levels else None)

    def decode(self, z: torch.Tensor, stages: torch.Tensor | int | None = None,
               postfilter: bool = True) -> torch.Tensor:
        """The decoder on latents z (B, D or D + R, h, w) that sum `stages` residual stages (an int, or (B,) per sample;
        None: unquantized, taken as all stages). Only stage gains and the post-filter use `stages`.
        postfilter=False: the image before the post-filter (what the filter is trained on)."""
        if z.shape[1] < self.cfg.total_dim:   # the quantized values alone: the refined ones at zero
            z = torch.cat([z, z.new_zeros(z.shape[0], self.cfg.total_dim - z.shape[1], *z.shape[2:])], 1)
        if self.gains is None and self.postfilter is None:
            return self.decoder(z)
        stages = torch.as_tensor(self.cfg.num_stages if stages is None else stages, device=z.device)
        stages = stages.expand(z.shape[0])
        film = None
        if self.gains is not None:
            z, film = self.gains(z, stages)
        x = self.decoder(z, film)
        return x if self.postfilter is None or not postfilter else self.postfilter(x, stages)

    @torch.no_grad()
    def set_linear_transform(self, basis: torch.Tensor, mean: torch.Tensor) -> None:
        """basis: (D + R, 3*f*f) orthonormal rows over blocks flattened as (channel, row, column); mean: (3,)
        per-channel pixel mean. The hybrid's linear paths become z = basis (x - mean), x = basis^T z + mean."""
        f, d = self.cfg.downsampling, self.cfg.total_dim
        w = basis.reshape(d, 3, f, f).float()
        self.encoder.linear.weight.copy_(w)
        self.encoder.linear.bias.copy_(-(w * mean.float().view(1, 3, 1, 1)).sum((1, 2, 3)))
        self.decoder.linear.weight.copy_(w)
        self.decoder.linear.bias.copy_(mean.float())

    def vq_latent(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> the D values per position the quantizer codes (B, D, h, w)."""
        return self.encoder(x)[:, :self.cfg.latent_dim]

    @staticmethod
    def _flatten(z):  # (B, D, h, w) -> (B*h*w, D)
        return z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])

    @staticmethod
    def _unflatten(v, b, h, w):  # (B*h*w, D) -> (B, D, h, w)
        return v.reshape(b, h, w, -1).permute(0, 3, 1, 2)

    def forward(self, x: torch.Tensor, levels: torch.Tensor, bases: torch.Tensor | None = None,
                noise: bool = True):
        """Training pass. x: (B, 3, H, W); levels: (B,) in 1..S (that many VQ stages: quantizer dropout), or
        S + k for refinement level k on the first bases[i] stages (bases: (B,) in 1..S; None: all S).
        noise: refinement by additive noise (training), else by rounding.

        Returns (reconstruction, commitment loss, indices (B, h, w, S), refinement bits (B,), 0 where none).
        """
        z_all = self.encoder(x)
        z = z_all[:, :self.cfg.latent_dim]                            # (B, D, h, w): the quantized values
        b, d, h, w = z.shape
        s = self.cfg.num_stages
        flat = self._flatten(z)
        quantized, indices = self.rvq(flat)
        stacked = torch.stack(quantized, 0)  # (S, N, D)
        refined = levels > s
        vq_count = torch.where(refined, s if bases is None else bases, levels)                    # (B,)
        keep = (torch.arange(len(quantized), device=x.device)[:, None] <
                vq_count.repeat_interleave(h * w)[None]).to(stacked.dtype)
        partial = (stacked * keep[..., None]).sum(0)  # (N, D)
        commit = (flat - stacked.sum(0).detach()).pow(2).mean()
        zq = self._unflatten(flat + (partial - flat).detach(), b, h, w)  # straight-through
        bits = z.new_zeros(b, dtype=torch.float32)
        if self.refine is not None:
            extra = torch.zeros_like(z_all[:, d:])                                                # (B, R, h, w)
            if bool(refined.any()):
                i = refined.nonzero().squeeze(1)
                cond = self._unflatten(partial, b, h, w)[i]                                      # (B', D, h, w)
                r = torch.cat([z_all[i, :d] - cond, z_all[i, d:]], 1)                           # (B', D + R, h, w)
                r_hat, bits_i = self.refine(r, cond.detach(), levels[i] - s, vq_count[i], noise)
                r_hat = r_hat.to(zq.dtype)
                zq = zq.index_copy(0, i, zq[i] + r_hat[:, :d])               # the D values: zq_b + their residual
                extra = extra.index_copy(0, i, r_hat[:, d:])
                bits = bits.index_copy(0, i, bits_i)
            zq = torch.cat([zq, extra], 1)
        dec = levels if not bool(refined.any()) else torch.where(
            refined, self.cfg.decoder_level(levels - s, vq_count), levels)   # the decoder knows (k, b)
        recon = self.decode(zq, dec)
        return recon, commit, indices.reshape(b, h, w, -1), bits

    @torch.no_grad()
    def encode_indices(self, x: torch.Tensor, num_stages: int, first_codes: torch.Tensor | None = None,
                       beam: int = 1) -> torch.Tensor:
        """x: (B, 3, H, W), H and W multiples of f -> indices (B, h, w, q) int64.

        first_codes: (M,) the only codes stage 0 may use (a coarse quality level); None = all.
        beam: the residual quantizer's search (ResidualVQ.encode): 1 = greedy nearest codes.
        """
        return self.encode_with_values(x, num_stages, first_codes, beam)[0]

    @torch.no_grad()
    def encode_with_values(self, x: torch.Tensor, num_stages: int, first_codes: torch.Tensor | None = None,
                           beam: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """encode_indices, and the encoder's values it quantized, from one run of the encoder -> (indices
        (B, h, w, q) int64, all the encoder's values (B, D + R, h, w): the quantized ones, then the refined ones)."""
        z_all = self.encoder(x)
        z = z_all[:, :self.cfg.latent_dim]
        b, _, h, w = z.shape
        return self.rvq.encode(self._flatten(z), num_stages, first_codes, beam).reshape(b, h, w, num_stages), z_all

    @torch.no_grad()
    def decode_indices(self, indices: torch.Tensor, refined: torch.Tensor | None = None, level: int = 0) -> torch.Tensor:
        """indices: (B, h, w, q) -> image (B, 3, h*f, w*f), clamped to [0, 1]. refined: (B, D + R, h, w), the
        values of refinement level `level` on these q stages (the D values' residual, then the R others)."""
        b, h, w, q = indices.shape
        z = self._unflatten(self.rvq.decode(indices.reshape(-1, q)), b, h, w)
        if refined is None:
            return self.decode(z, q).clamp(0, 1)
        d = self.cfg.latent_dim
        refined = refined.to(z.dtype)
        z = torch.cat([z + refined[:, :d], refined[:, d:]], 1)
        return self.decode(z, self.cfg.decoder_level(level, q)).clamp(0, 1)
