"""Scalar refinement: the quality levels above the VQ stages (float model; torch).

Beside its D quantized values per position the encoder makes R more, which only the refinement levels code.
A refinement level on b VQ stages codes D + R values per position, r (B, D + R, h, w): the residual of the D
values after the b stages (z - zq_b), then the R values. Level k quantizes them with a step per channel,
step[k, c] (learned), and codes each with a discretized Gaussian whose mean and scale a small network predicts
from zq_b, the VQ latent the file already carries (a hyperprior whose side information is free), plus a learned
log-scale bias per b. Keeping the R values apart from the quantized ones keeps the refinement's pressure (to
amplify fine detail against its noise) off the vector quantizer, whose nearest-code search weighs every value
alike. Training uses additive uniform noise as the proxy for rounding and the Gaussian's probability of the
noisy value as its rate.
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
    """Levels 1..L of scalar refinement of `dim` latent channels, conditioned on the D-channel VQ latent zq of
    b stages (1..`bases`)."""

    def __init__(self, levels: int, dim: int, hidden: int, cond_dim: int, bases: int, first_step: float = 0.5,
                 ratio: float = 0.6):
        super().__init__()
        self.levels, self.dim = levels, dim
        steps = torch.tensor([first_step * ratio ** k for k in range(levels)])
        self.log_step = nn.Parameter(steps.log()[:, None].repeat(1, dim))   # (L, D + R)
        self.base_log_scale = nn.Parameter(torch.zeros(bases, dim))         # (S, D + R)
        self.net = nn.Sequential(nn.Conv2d(cond_dim, hidden, 3, padding=1), nn.ReLU(inplace=True),
                                 nn.Conv2d(hidden, hidden, 3, padding=1), nn.ReLU(inplace=True),
                                 nn.Conv2d(hidden, 2 * dim, 3, padding=1))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def step(self, level: torch.Tensor) -> torch.Tensor:  # level (B,) in 1..L -> (B, R, 1, 1)
        return self.log_step[level.long() - 1].exp()[:, :, None, None]

    def mean_scale(self, zq: torch.Tensor, base: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """zq (B, D, h, w), base (B,) in 1..S -> (mean, log scale) of the refined values, each (B, D + R, h, w),
        in latent units."""
        mean, log_scale = self.net(zq).float().chunk(2, dim=1)
        return mean, log_scale + self.base_log_scale[base.long() - 1][:, :, None, None]

    def forward(self, r: torch.Tensor, zq: torch.Tensor, level: torch.Tensor, base: torch.Tensor, noise: bool):
        """r (B, D + R, h, w), zq the VQ latent of `base` stages (B, D, h, w), level (B,) and base (B,)
        -> (quantized r_hat, bits (B,)).

        noise: the training proxy (r - mean)/step + U(-1/2, 1/2); else rounding (straight-through gradient)."""
        step = self.step(level)
        mean, log_scale = self.mean_scale(zq, base)
        u = (r.float() - mean) / step                                               # in steps
        if noise:
            q = u + torch.rand_like(u) - 0.5
        else:
            q = u + (torch.round(u) - u).detach()
        scale = (log_scale - step.log()).clamp(LOG_SCALE_MIN, LOG_SCALE_MAX).exp()  # in steps
        bits = gaussian_bits(q, scale).sum((1, 2, 3))
        return mean + q * step, bits
