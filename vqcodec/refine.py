"""Scalar refinement: the quality levels above the VQ stages (float model; torch).

Beside its D quantized values per position the encoder makes R more, r (B, R, h, w), which only the
refinement levels code. Refinement level k quantizes them with a step per channel, step[k, c] (learned), and
codes each value with a discretized Gaussian whose mean and scale a small network predicts from the VQ latent
zq of the stages the file codes: a hyperprior whose side information is the VQ latent the file already
carries. Keeping r apart from the quantized values keeps the refinement's pressure (to amplify fine detail
against its noise) off the vector quantizer, whose nearest-code search weighs every value alike. Training uses additive uniform noise as the proxy
for rounding and the Gaussian's probability of the noisy value as its rate.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

LOG_SCALE_MIN, LOG_SCALE_MAX = math.log(0.02), math.log(64.0)  # scale in units of the step


def gaussian_bits(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Bits of each value q (in units of its step, noisy or integer) under a zero-mean Gaussian of `scale`
    (same units) discretized to unit bins: -log2(Phi((0.5 - |q|)/s) - Phi((-0.5 - |q|)/s))."""
    v = q.abs()
    upper = torch.special.ndtr((0.5 - v) / scale)
    lower = torch.special.ndtr((-0.5 - v) / scale)
    return -torch.log2((upper - lower).clamp_min(1e-9))


class ScalarRefinement(nn.Module):
    """Levels 1..L of scalar refinement of R latent channels, conditioned on the D-channel VQ latent zq."""

    def __init__(self, levels: int, dim: int, hidden: int, cond_dim: int, first_step: float = 0.5,
                 ratio: float = 0.6):
        super().__init__()
        self.levels, self.dim = levels, dim
        steps = torch.tensor([first_step * ratio ** k for k in range(levels)])
        self.log_step = nn.Parameter(steps.log()[:, None].repeat(1, dim))   # (L, R)
        self.net = nn.Sequential(nn.Conv2d(cond_dim, hidden, 3, padding=1), nn.ReLU(inplace=True),
                                 nn.Conv2d(hidden, hidden, 3, padding=1), nn.ReLU(inplace=True),
                                 nn.Conv2d(hidden, 2 * dim, 3, padding=1))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def step(self, level: torch.Tensor) -> torch.Tensor:  # level (B,) in 1..L -> (B, R, 1, 1)
        return self.log_step[level.long() - 1].exp()[:, :, None, None]

    def mean_scale(self, zq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """zq (B, D, h, w) -> (mean, log scale) of the refined values, each (B, R, h, w), in latent units."""
        mean, log_scale = self.net(zq).float().chunk(2, dim=1)
        return mean, log_scale

    def forward(self, r: torch.Tensor, zq: torch.Tensor, level: torch.Tensor, noise: bool):
        """r (B, R, h, w), zq the VQ latent (B, D, h, w), level (B,) -> (quantized r_hat, bits (B,)).

        noise: the training proxy (r - mean)/step + U(-1/2, 1/2); else rounding (straight-through gradient)."""
        step = self.step(level)
        mean, log_scale = self.mean_scale(zq)
        u = (r.float() - mean) / step                                               # in steps
        if noise:
            q = u + torch.rand_like(u) - 0.5
        else:
            q = u + (torch.round(u) - u).detach()
        scale = (log_scale - step.log()).clamp(LOG_SCALE_MIN, LOG_SCALE_MAX).exp()  # in steps
        bits = gaussian_bits(q, scale).sum((1, 2, 3))
        return mean + q * step, bits
