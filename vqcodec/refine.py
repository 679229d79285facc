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

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

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


# --- the exported refinement: integers only ------------------------------------------------------
# The decoder must compute each refined value's table exactly as the encoder did. IntegerRefinement does, with
# the integer prior's arithmetic (int8 weights per output channel, uint8 activations, requantisation by multiply
# and shift), evaluated as float64 convolutions over integers whose every partial sum is below 2**53: exact in any
# summation order, on any device. Its input is the VQ latent from the integer codebooks of the prior (the
# sum of b stages' vectors, in 1/input_scale units); its outputs are each value's mean in 1/MEAN_ONE latent units
# and its log-scale in 1/LOG_ONE nat. A value's table is chosen by its log-scale in units of the level's step,
# log-scale + base bias[b] - log step[k], all integers: table (log-scale - SCALE_LO), clamped to the tables.
MEAN_ONE = 256                      # mean outputs: integers in 1/256 latent units
LOG_ONE = 16                        # log-scales and log-steps: integers in 1/16 nat
SCALE_LO = round(LOG_ONE * LOG_SCALE_MIN)   # -63: the first table's log-scale (0.0195 steps)
SCALE_HI = round(LOG_ONE * LOG_SCALE_MAX)   # 67: the last table's (65.8 steps)
TABLE_TAIL = 10                     # a table covers +-(TABLE_TAIL x its scale) steps, and at least +-2
TABLE_TOTAL = 1 << 20               # each table's frequencies sum to about this
REFINE_CAP_BITS = 12                # no refined value is more probable than 1 - 2**-12: each costs bits
REQUANT_SHIFT = 24
_ACC_LIMIT = 1 << 52                # a layer whose accumulators could pass this is refused (float64 exactness)


def gaussian_tables() -> tuple[np.ndarray, np.ndarray]:
    """The coding tables, data stored with the model: (frequencies (sum of widths,) int64, half-widths (tables,)
    int64). Table t is a zero-mean Gaussian of scale exp((SCALE_LO + t) / LOG_ONE) steps, discretized to unit
    bins over -T..T (T its half-width; the tails folded into the end bins), as positive integers; the largest is
    capped at (sum of the others) x (2**REFINE_CAP_BITS - 1)."""
    freqs, halves = [], []
    for lg in range(SCALE_LO, SCALE_HI + 1):
        s = math.exp(lg / LOG_ONE)
        t = max(2, math.ceil(TABLE_TAIL * s))
        edges = (np.arange(-t, t + 2) - 0.5) / s                       # bin edges in units of the scale
        cdf = np.array([0.5 * math.erfc(-e / math.sqrt(2)) for e in edges])
        cdf[0], cdf[-1] = 0.0, 1.0
        f = np.maximum(1, np.round(np.diff(cdf) * TABLE_TOTAL)).astype(np.int64)
        top = int(f.argmax())
        f[top] = min(f[top], (f.sum() - f[top]) * ((1 << REFINE_CAP_BITS) - 1))
        freqs.append(f)
        halves.append(t)
    return np.concatenate(freqs), np.array(halves, dtype=np.int64)


def _int_conv(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Exact integer 3x3 convolution (zero padding): x (B, C, h, w) int64, w (O, C, 3, 3) integer-valued float32
    or float64 -> int64. Exact when every partial sum is an integer below 2**24 (float32) or 2**53 (float64) in
    magnitude, whatever the summation order: IntegerRefinement picks the type per layer from its weights."""
    with torch.autocast(x.device.type, enabled=False):
        return F.conv2d(x.to(w.dtype), w, padding=w.shape[-1] // 2).to(torch.int64)


class IntegerRefinement:
    """The exported ScalarRefinement (integer tensors only). tensors: conv{1,2,3}.{weight,bias,mult},
    base_log_scale (S, C), log_step (L, C), table_freqs, table_halves (gaussian_tables)."""

    LAYERS = ("conv1", "conv2", "conv3")

    def __init__(self, tensors: dict[str, torch.Tensor]):
        self.t = {k: v.to(torch.int64) for k, v in tensors.items()}
        self.dim = int(self.t["log_step"].shape[1])
        self.levels, self.bases = int(self.t["log_step"].shape[0]), int(self.t["base_log_scale"].shape[0])
        if int(self.t["conv3.weight"].shape[0]) != 2 * self.dim or tuple(self.t["base_log_scale"].shape)[1] != self.dim:
            raise ValueError("refinement tensors disagree on the number of refined values")
        self.w = {}
        for name, max_input in zip(self.LAYERS, (127, 255, 255)):
            w = self.t[f"{name}.weight"]
            partial = int(w.abs().flatten(1).sum(1).max()) * max_input   # the largest |partial sum| of the conv
            bound = partial + int(self.t[f"{name}.bias"].abs().max())
            if bound * int(self.t[f"{name}.mult"].abs().max()) >= 1 << 62 or bound >= _ACC_LIMIT:
                raise ValueError(f"refinement {name}: weights too large for exact evaluation")
            self.w[name] = w.float() if partial < 1 << 24 else w.double()
        freqs, halves = self.t["table_freqs"].cpu().numpy(), self.t["table_halves"].cpu().numpy()
        ends = np.cumsum(2 * halves + 1)
        if len(halves) != SCALE_HI - SCALE_LO + 1 or ends[-1] != len(freqs) or (freqs < 1).any():
            raise ValueError("refinement tables are malformed")
        from .entropy import TableSet   # the coder (constriction) only where files are coded, not in training

        self.table_set = TableSet([freqs[e - 2 * h - 1:e] for e, h in zip(ends, halves)])

    @classmethod
    def from_float(cls, refine: ScalarRefinement, input_scale: float, calibration: torch.Tensor,
                   quantile: float = 0.9999) -> "IntegerRefinement":
        """refine: the trained float model; input_scale: integer inputs are round(zq x input_scale) (the prior's);
        calibration: float VQ latents (N, D, h, w) of training crops, for the activations' steps."""
        t, x = {}, torch.clamp(torch.round(calibration.double() * input_scale), -127, 127)
        in_scale = 1.0 / input_scale
        convs = [refine.net[0], refine.net[2], refine.net[4]]
        dim = refine.dim
        for i, (name, conv) in enumerate(zip(cls.LAYERS, convs)):
            w = conv.weight.detach().double()
            w_scale = w.abs().flatten(1).amax(1).clamp_min(1e-12) / 127
            w_int = torch.round(w / w_scale[:, None, None, None]).clamp(-127, 127)
            bias = torch.round(conv.bias.detach().double() / (w_scale * in_scale))
            if i < 2:     # uint8 activations: the float activations' top quantile is 255
                y = F.relu(F.conv2d(x * in_scale, w_int * w_scale[:, None, None, None], conv.bias.detach().double(),
                                    padding=1))
                top = float(torch.quantile(y.flatten()[::max(1, y.numel() // 1_000_000)].float(), quantile))
                out_scale = torch.full_like(w_scale, max(top / 255, 1e-6))
            else:         # means in 1/MEAN_ONE latent units, log-scales in 1/LOG_ONE nat
                out_scale = torch.cat([torch.full((dim,), 1 / MEAN_ONE), torch.full((dim,), 1 / LOG_ONE)]).double()
            mult = torch.round(w_scale * in_scale / out_scale * (1 << REQUANT_SHIFT))
            t[f"{name}.weight"], t[f"{name}.bias"], t[f"{name}.mult"] = w_int, bias, mult
            if i < 2:
                acc = F.conv2d(x, w_int, padding=1) + bias[None, :, None, None]
                x = torch.clamp(torch.floor((acc * mult[None, :, None, None] + (1 << (REQUANT_SHIFT - 1)))
                                            / (1 << REQUANT_SHIFT)), 0, 255)
                in_scale = float(out_scale[0])
        t["base_log_scale"] = torch.round(refine.base_log_scale.detach().double() * LOG_ONE)
        t["log_step"] = torch.round(refine.log_step.detach().double() * LOG_ONE)
        freqs, halves = gaussian_tables()
        t["table_freqs"], t["table_halves"] = torch.from_numpy(freqs), torch.from_numpy(halves)
        return cls({k: v.to(torch.int64) for k, v in t.items()})

    @property
    def halves(self) -> np.ndarray:
        """(tables,) each table's half-width T: its symbols are -T..T."""
        return self.table_set.halves

    def tensors(self) -> dict[str, torch.Tensor]:
        return dict(self.t)

    def _layer(self, x: torch.Tensor, name: str, lo: int, hi: int) -> torch.Tensor:
        acc = _int_conv(x, self.w[name]) + self.t[f"{name}.bias"][None, :, None, None]
        mult = self.t[f"{name}.mult"][None, :, None, None]
        return torch.clamp((acc * mult + (1 << (REQUANT_SHIFT - 1))) >> REQUANT_SHIFT, lo, hi)

    def mean_table(self, zq_input: torch.Tensor, base: int, level: int) -> tuple[torch.Tensor, torch.Tensor]:
        """zq_input: (B, D, h, w) int64, the VQ latent of `base` stages as the prior's int8-range inputs; level
        1..L -> (mean (B, C, h, w) int64 in 1/MEAN_ONE latent units, table (B, C, h, w) int64 in 0..tables-1)."""
        if not (1 <= base <= self.bases and 1 <= level <= self.levels):
            raise ValueError(f"refinement level {level} on {base} stages is not in this model")
        x = self._layer(zq_input.to(torch.int64), "conv1", 0, 255)
        x = self._layer(x, "conv2", 0, 255)
        y = self._layer(x, "conv3", -(1 << 24), 1 << 24)
        mean, log_scale = y[:, :self.dim], y[:, self.dim:]
        shift = (self.t["base_log_scale"][base - 1] - self.t["log_step"][level - 1])[None, :, None, None]
        table = torch.clamp(log_scale + shift - SCALE_LO, 0, len(self.halves) - 1)
        return mean, table

    def step(self, level: int) -> torch.Tensor:
        """(C,) float64: level's quantizer step per refined value, in latent units."""
        return torch.exp(self.t["log_step"][level - 1].double() / LOG_ONE)

    def quantize(self, r: torch.Tensor, mean: torch.Tensor, table: torch.Tensor, level: int) -> torch.Tensor:
        """r (B, C, h, w) float: the values to refine -> symbols (B, C, h, w) int64, each in its table's -T..T."""
        step = self.step(level).to(r.device)[None, :, None, None]
        q = torch.round((r.double() - mean.double() / MEAN_ONE) / step).to(torch.int64)
        half = torch.from_numpy(self.halves).to(r.device)[table]
        return torch.maximum(torch.minimum(q, half), -half)

    def dequantize(self, q: torch.Tensor, mean: torch.Tensor, level: int) -> torch.Tensor:
        """symbols (B, C, h, w) -> refined values (float32, latent units): mean + q x step."""
        step = self.step(level).to(q.device)[None, :, None, None]
        return (mean.double() / MEAN_ONE + q.double() * step).float()


@torch.no_grad()
def integer_refinement(model, crops: torch.Tensor, input_scale: float) -> IntegerRefinement:
    """The exported refinement of a trained VQAutoencoder: its activation steps calibrated on the VQ latents
    of 1, S/2 and S stages of crops (N, 3, H, W) of training photos. input_scale: the prior's (a power of two)."""
    cfg = model.cfg
    z = model.vq_latent(crops)
    b, d, h, w = z.shape
    idx = model.rvq.encode(z.permute(0, 2, 3, 1).reshape(-1, d), cfg.num_stages)               # (N, S)
    latents = [model.rvq.decode(idx[:, :s]).reshape(b, h, w, d).permute(0, 3, 1, 2)
               for s in sorted({1, max(1, cfg.num_stages // 2), cfg.num_stages})]
    return IntegerRefinement.from_float(model.refine, input_scale, torch.cat(latents))
