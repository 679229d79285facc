"""The learned prior over residual-VQ indices, trained in float and evaluated exactly in integers.

For stage s and position (i, j) the prior sees, in a k x k neighbourhood (k = prior_kernel, 3 or 5; stage 0
may have its own window and schedule, ModelConfig.stage_prior),
  * the sum of the codebook vectors of stages < s (coarser residual stages), and
  * stage s's own vectors at neighbours decoded in earlier passes of a fixed schedule (pass_masks).
Each stage has its own small network: conv kxk -> ReLU -> conv1x1 -> ReLU -> conv1x1 (K logits).
With ModelConfig.prior_stage_count, the first layer and the logits also get a bias chosen by the number of
stages the file codes (1..S, the header's stages): a quality's own indices (the beam search over its stages)
are not the prefix of a longer quality's, and their statistics depend on where the file stops.
The number of network evaluations per image is num_stages * prior_passes, whatever the image size.

Training (PriorNet) simulates the integer arithmetic (fake quantisation with straight-through
gradients). Export (PriorNet.to_integer) produces IntegerPrior, whose evaluation uses only integers:
int8 weights, uint8 activations, int64 accumulators and requantisation by multiply and shift, logits
in 1/16 nat, and a softmax through a fixed table of integer exponentials. The convolutions run as
float32 matrix products in which every value and partial sum is an integer below 2**24 in magnitude,
so the result is exact whatever the summation order, thread count or device (see IntegerPrior._dense).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ModelConfig

PASS_ORDER = ((0, 0), (1, 1), (0, 1), (1, 0))  # (row parity, column parity) decoded in each pass
ACT_SCALE = 1 / 32          # uint8 activations represent 0 .. 255/32
LOGIT_SCALE = 1 / 16        # integer logits are in 1/16 nat
INPUT_FRAC_BITS = 4         # extra fractional bits of the integer codebooks
REQUANT_SHIFT = 24
EXP_TABLE_ONE = 1 << 16     # exp(0) in the softmax table


def pass_masks(h: int, w: int, passes: int) -> torch.Tensor:
    """(passes, h, w) bool: which positions each pass decodes. passes must be 1, 2, 4 or 6.

    4: the 2x2 schedule, (row % 2, col % 2) = (0,0), (1,1), (0,1), (1,0).
    6: the (0,0) positions of the 2x2 schedule split over a 4x4 lattice first, (row % 4, col % 4) =
    (0,0); (2,2); (0,2) and (2,0) together; then (1,1), (0,1), (1,0) modulo 2. Only 1/16 of the positions
    are decoded with no neighbour of their own stage known (1/4 with the 2x2 schedule); with a 5x5
    context the passes of the 4x4 lattice see their neighbours two positions away.
    """
    i = torch.arange(h)[:, None] % 4
    j = torch.arange(w)[None, :] % 4
    if passes == 1:
        return torch.ones(1, h, w, dtype=torch.bool)
    if passes == 2:
        return torch.stack([(i + j) % 2 == 0, (i + j) % 2 == 1])
    if passes == 4:
        return torch.stack([(i % 2 == a) & (j % 2 == b) for a, b in PASS_ORDER])
    if passes == 6:
        lattice = [(i == 0) & (j == 0), (i == 2) & (j == 2), ((i == 0) & (j == 2)) | ((i == 2) & (j == 0))]
        return torch.stack(lattice + [(i % 2 == a) & (j % 2 == b) for a, b in PASS_ORDER[1:]])
    raise ValueError(f"prior_passes must be 1, 2, 4 or 6, not {passes}")


def exp_table() -> np.ndarray:
    """EXP[d] = round(2**16 * exp(-d/16)), down to 1. Stored with the model, so it is data, not math."""
    vals, d = [], 0
    while True:
        v = max(1, round(EXP_TABLE_ONE * math.exp(-d * LOGIT_SCALE)))
        vals.append(v)
        if v == 1:
            return np.array(vals, dtype=np.int64)
        d += 1


def _ste_round(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.round(x) - x).detach()


def weight_scale(w: torch.Tensor) -> torch.Tensor:
    """Per-output-channel step of symmetric int8 weights: max |w| / 127, shape (C_out,)."""
    return w.detach().abs().flatten(1).amax(1).clamp_min(1e-8) / 127


def _fake_quant_weight(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-output-channel symmetric int8. Returns (dequantised weight, scale (C_out,))."""
    scale = weight_scale(w)
    shape = (-1,) + (1,) * (w.dim() - 1)
    return _ste_round(w / scale.view(shape)).clamp(-127, 127) * scale.view(shape), scale


class PriorNet(nn.Module):
    """All stages' prior networks, run together as grouped convolutions (float, for training)."""

    def __init__(self, cfg: ModelConfig, input_scale: float = 8.0):
        super().__init__()
        self.cfg = cfg
        s, d, hdn, k = cfg.num_stages, cfg.latent_dim, cfg.prior_hidden, cfg.codebook_size
        self.in_ch = 2 * d + 1
        kernels = cfg.prior_kernels
        kernel = max(kernels)
        self.conv1 = nn.Conv2d(s * self.in_ch, s * hdn, kernel, padding=kernel // 2, groups=s)
        mask = None
        if len(set(kernels)) > 1:  # stages with a smaller window: the centre of the largest, the rest held at 0
            mask = torch.zeros(s, hdn, 1, kernel, kernel)
            for t, kt in enumerate(kernels):
                o = (kernel - kt) // 2
                mask[t, :, :, o:o + kt, o:o + kt] = 1
            mask = mask.reshape(s * hdn, 1, kernel, kernel)
            with torch.no_grad():
                self.conv1.weight.mul_(mask)
        self.register_buffer("conv1_mask", mask)   # None (no entry in the state dict) when all windows agree
        self.conv2 = nn.Conv2d(s * hdn, s * hdn, 1, groups=s)
        self.conv3 = nn.Conv2d(s * hdn, s * k, 1, groups=s)
        if cfg.prior_stage_count:  # (stage, stage count - 1, channel), added before the activation / to the logits
            self.count_bias1 = nn.Parameter(torch.zeros(s, s, hdn))
            self.count_bias3 = nn.Parameter(torch.zeros(s, s, k))
        else:
            self.register_parameter("count_bias1", None)
            self.register_parameter("count_bias3", None)
        # integer input = round(vector * input_scale), a power of two chosen from the codebooks
        self.register_buffer("input_scale", torch.tensor(float(input_scale)))
        # uint8 activation step of the two hidden layers (calibrated before quantisation-aware training)
        self.register_buffer("act_scales", torch.full((2,), ACT_SCALE))
        self.quantize = True

    def quantize_input(self, v: torch.Tensor) -> torch.Tensor:
        return torch.clamp(torch.round(v * self.input_scale), -127, 127)

    def weight(self, conv: nn.Conv2d) -> torch.Tensor:
        """A layer's float weight; conv1's with the windows of ModelConfig.stage_prior applied."""
        if conv is self.conv1 and self.conv1_mask is not None:
            return conv.weight * self.conv1_mask
        return conv.weight

    def _conv(self, x, conv):
        w = self.weight(conv)
        if self.quantize:
            w, _ = _fake_quant_weight(w)
        return F.conv2d(x, w, conv.bias, padding=conv.padding, groups=conv.groups)

    def _count_bias(self, table: torch.Tensor | None, counts: torch.Tensor | None, b: int):
        """table (S, S, C), counts (B,) stages coded (None: all S) -> (B, S*C, 1, 1), or 0 without count biases."""
        if table is None:
            return 0
        s = table.shape[0]
        if counts is None:
            counts = torch.full((b,), s, dtype=torch.long, device=table.device)
        return table[:, counts.long() - 1].permute(1, 0, 2).reshape(b, -1, 1, 1)

    def _act(self, y, layer: int):
        if not self.quantize:
            return F.relu(y)
        scale = self.act_scales[layer]
        return _ste_round(F.relu(y) / scale).clamp(0, 255) * scale

    @torch.no_grad()
    def calibrate(self, inputs: torch.Tensor, quantile: float = 0.9999, counts: torch.Tensor | None = None) -> None:
        """Set each hidden layer's activation step so that the float activations' top quantile is 255."""
        quantize, self.quantize = self.quantize, False
        b, s, c, h, w = inputs.shape
        x = inputs.reshape(b, s * c, h, w)
        for layer, conv in enumerate((self.conv1, self.conv2)):
            x = F.relu(self._conv(x, conv) + (self._count_bias(self.count_bias1, counts, b) if layer == 0 else 0))
            top = torch.quantile(x.flatten()[::max(1, x.numel() // 1_000_000)], quantile)
            self.act_scales[layer] = max(float(top) / 255, 1e-4)
        self.quantize = quantize

    def forward(self, inputs: torch.Tensor, counts: torch.Tensor | None = None) -> torch.Tensor:
        """inputs: (B, S, 2D+1, h, w) integer-valued context; counts: (B,) the stages each grid codes (1..S; None:
        all, and ignored without ModelConfig.prior_stage_count) -> logits (B, S, K, h, w) in nats."""
        b, s, c, h, w = inputs.shape
        y = self._conv(inputs.reshape(b, s * c, h, w), self.conv1) + self._count_bias(self.count_bias1, counts, b)
        x = self._act(y, 0)
        x = self._act(self._conv(x, self.conv2), 1)
        y = self._conv(x, self.conv3) + self._count_bias(self.count_bias3, counts, b)
        if self.quantize:
            y = _ste_round(y / LOGIT_SCALE) * LOGIT_SCALE
        return y.reshape(b, s, -1, h, w)


def build_context(prev_sum_q: torch.Tensor, cur_q: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Context tensor of one or more stages.

    prev_sum_q: (..., D, h, w) integer inputs of the stages below; cur_q: (..., D, h, w) this stage's
    integer inputs; known: (..., 1, h, w) 1 where this stage's index is already decoded.
    -> (..., 2D+1, h, w)
    """
    return torch.cat([prev_sum_q, cur_q * known, known * 64], dim=-3)


def stage_masks(cfg: ModelConfig, h: int, w: int) -> list[torch.Tensor]:
    """Each stage's pass masks, (P_s, h, w) bool: stage 0 may have a schedule of its own."""
    return [pass_masks(h, w, cfg.stage_prior(t)[1]) for t in range(cfg.num_stages)]


def known_before(masks: torch.Tensor) -> torch.Tensor:
    """(P, h, w) pass masks -> (P, h, w) bool: decoded in an earlier pass."""
    return (torch.cumsum(masks.int(), 0) - masks.int()).bool()


def training_contexts(prior: PriorNet, codebooks: list[torch.Tensor], indices: torch.Tensor,
                      pass_index: torch.Tensor | None = None):
    """indices: (B, h, w, S) -> (contexts (B', S, 2D+1, h, w), targets (B', S, h, w), scored (B', S, 1, h, w)).

    With pass_index (B, S), each sample appears once, stage t at pass pass_index[:, t]; without it, once per
    pass of the longest schedule (B' = B * P_max), a stage with fewer passes scoring nothing in those it lacks.
    Positions of earlier passes are known; the positions of the pass itself are scored.
    """
    b, h, w, s = indices.shape
    vecs = torch.stack([codebooks[t][indices[..., t]] for t in range(s)], 1)  # (B, S, h, w, D)
    vecs = vecs.permute(0, 1, 4, 2, 3)                                        # (B, S, D, h, w)
    prev = torch.cumsum(vecs, 1) - vecs                                        # exclusive prefix sum
    prev_q, cur_q = prior.quantize_input(prev), prior.quantize_input(vecs)
    masks = [m.to(indices.device) for m in stage_masks(prior.cfg, h, w)]       # S x (P_s, h, w)
    known = [known_before(m) for m in masks]
    targets = indices.permute(0, 3, 1, 2)                                      # (B, S, h, w)
    if pass_index is not None:
        kn = torch.stack([known[t][pass_index[:, t]] for t in range(s)], 1)    # (B, S, h, w)
        sel = torch.stack([masks[t][pass_index[:, t]] for t in range(s)], 1)
        return build_context(prev_q, cur_q, kn[:, :, None].to(vecs.dtype)), targets, sel[:, :, None]
    ctx, scored = [], []
    for p in range(max(len(m) for m in masks)):
        kn = torch.stack([known[t][min(p, len(known[t]) - 1)] for t in range(s)])  # (S, h, w)
        sel = torch.stack([masks[t][p] if p < len(masks[t]) else torch.zeros_like(masks[t][0]) for t in range(s)])
        ctx.append(build_context(prev_q, cur_q, kn[:, None].to(vecs.dtype).expand(b, s, 1, h, w)))
        scored.append(sel[:, None].expand(b, s, 1, h, w))
    return torch.cat(ctx), targets.repeat(len(ctx), 1, 1, 1), torch.cat(scored)


class IntegerPrior:
    """The exported prior: integer tensors only, evaluated exactly (float32 GEMMs over small integers)."""

    def __init__(self, cfg: ModelConfig, tensors: dict[str, torch.Tensor]):
        self.cfg = cfg
        self.t = {k: v.to(torch.int64) for k, v in tensors.items()}
        s = cfg.num_stages
        if cfg.prior_stage_count != ("conv1.count_bias" in self.t) or cfg.prior_stage_count != ("conv3.count_bias" in self.t):
            raise ValueError("the prior's weights and the model config disagree on its stage-count biases")
        if cfg.prior_stage_count:
            for name in ("conv1", "conv3"):
                if tuple(self.t[f"{name}.count_bias"].shape) != (s, s, self.t[f"{name}.bias"].shape[-1]):
                    raise ValueError(f"prior {name}.count_bias must have shape (stages, stages, channels)")
        self.exp = self.t["exp_table"]
        self.exp_f64 = self.exp.double()  # integers below 2**17: exact
        self.exp_np = self.exp_f64.cpu().numpy()
        self.w_gemm, self.fast = {}, {}
        self.bias_tables = {name: self.biases(name) for name in ("conv1", "conv2", "conv3")}
        for name, max_input in (("conv1", 127), ("conv2", 255), ("conv3", 255)):
            w = [wt.flatten(1) for wt in self.stage_weights(name)]         # S x (C_out, C_in*k*k)
            bound = max(int(wt.abs().sum(1).max()) for wt in w) * max_input  # largest possible |partial sum|
            self.w_gemm[name] = [wt.float() if bound < 2 ** 24 else wt.double() for wt in w]
            # the fast path (frequencies): requantisation in float64, exact while every (acc + bias) * mult
            # + 2**23 is an integer below 2**53; its largest logit tells whether the clamp can bind
            bias, mult = self.bias_tables[name], self.t[f"{name}.mult"]        # (S, counts, C_out), (S, C_out)
            top = (bound + int(bias.abs().max())) * int(mult.abs().max()) + (1 << (REQUANT_SHIFT - 1))
            if bound < 2 ** 24 and top < 2 ** 53:
                w32 = [wt.t().contiguous() if name == "conv3" else wt for wt in self.w_gemm[name]]  # float32 here
                step = 2.0 ** -REQUANT_SHIFT                               # exact: a power of two
                offset = (bias * mult[:, None] + (1 << (REQUANT_SHIFT - 1))).double() * step
                self.fast[name] = (w32, mult.double() * step, offset, top >> REQUANT_SHIFT)
        if len(self.fast) < 3:
            self.fast = {}

    def biases(self, name: str) -> torch.Tensor:
        """A layer's integer biases (S, counts, C_out), column count_index(count): with stage-count biases, S
        columns, the layer's bias plus each count's (conv2, which has none, repeats its own); without, one."""
        bias = self.t[f"{name}.bias"][:, None]
        extra = self.t.get(f"{name}.count_bias")
        if extra is not None:
            return bias + extra
        return bias.expand(-1, self.cfg.num_stages, -1) if self.cfg.prior_stage_count else bias

    def count_index(self, count: int | None) -> int:
        """The stages the file codes (1..S) -> the column of biases(); 0 for a prior without count biases."""
        if not self.cfg.prior_stage_count:
            return 0
        if count is None or not 1 <= count <= self.cfg.num_stages:
            raise ValueError(f"this prior needs the number of stages coded (1 to {self.cfg.num_stages}), not {count}")
        return count - 1

    def stage_weights(self, name: str) -> list[torch.Tensor]:
        """Each stage's integer weights (C_out, C_in, k, k) of one layer; conv1 cut to the stage's own window
        (a stage whose window is smaller than the stored one must have zeros around it)."""
        w = self.t[f"{name}.weight"]                                     # (S, C_out, C_in, k, k)
        if name != "conv1":
            return list(w)
        out = []
        for t, k in enumerate(self.cfg.prior_kernels):
            o = (w.shape[-1] - k) // 2
            if o < 0 or w[t].abs().sum() != w[t, :, :, o:o + k, o:o + k].abs().sum():
                raise ValueError(f"prior stage {t}: weights outside its {k}x{k} window")
            out.append(w[t, :, :, o:o + k, o:o + k])
        return out

    @classmethod
    def from_float(cls, prior: PriorNet, codebooks: list[torch.Tensor]) -> "IntegerPrior":
        cfg, t = prior.cfg, {}
        s = cfg.num_stages
        one = 1 << INPUT_FRAC_BITS
        t["codebooks"] = torch.stack([torch.round(cb.double() * prior.input_scale.double() * one)
                                      for cb in codebooks]).to(torch.int64)       # (S, K, D)
        in_scale = 1.0
        act1, act2 = (float(v) for v in prior.act_scales.double())
        for name, out_scale in (("conv1", act1), ("conv2", act2), ("conv3", LOGIT_SCALE)):
            conv = getattr(prior, name)
            w = prior.weight(conv).detach().double()
            w_scale = weight_scale(w)
            w_int = torch.round(w / w_scale.view(-1, *(1,) * (w.dim() - 1))).clamp(-127, 127)
            t[f"{name}.weight"] = w_int.to(torch.int64).reshape(s, -1, *w.shape[1:])
            t[f"{name}.bias"] = torch.round(conv.bias.detach().double() / (w_scale * in_scale)).to(torch.int64).reshape(s, -1)
            count_bias = {"conv1": prior.count_bias1, "conv3": prior.count_bias3}.get(name)
            if count_bias is not None:                                      # (S, S, C_out) in the same units
                step = (w_scale * in_scale).reshape(s, 1, -1)
                t[f"{name}.count_bias"] = torch.round(count_bias.detach().double() / step).to(torch.int64)
            t[f"{name}.mult"] = torch.round(w_scale * in_scale / out_scale * (1 << REQUANT_SHIFT)).to(torch.int64).reshape(s, -1)
            in_scale = out_scale
        t["exp_table"] = torch.from_numpy(exp_table())
        return cls(cfg, t)

    def to(self, device) -> "IntegerPrior":
        return IntegerPrior(self.cfg, {k: v.to(device) for k, v in self.t.items()})

    def tensors(self) -> dict[str, torch.Tensor]:
        return dict(self.t)

    # --- exact evaluation -------------------------------------------------------------------
    def input_vectors(self, stage: int, indices: torch.Tensor) -> torch.Tensor:
        """indices: (h, w) of one stage -> its integer codebook vectors (D, h, w), high precision."""
        return self.t["codebooks"][stage][indices].permute(2, 0, 1)

    @staticmethod
    def to_input(v: torch.Tensor) -> torch.Tensor:
        """High-precision integer vectors -> int8-range network inputs (round half up, clamp)."""
        half = 1 << (INPUT_FRAC_BITS - 1)
        return torch.clamp((v + half) >> INPUT_FRAC_BITS, -127, 127)

    def _requant(self, acc: torch.Tensor, name: str, stage: int, lo: int, hi: int) -> torch.Tensor:
        mult = self.t[f"{name}.mult"][stage][:, None]
        return torch.clamp((acc * mult + (1 << (REQUANT_SHIFT - 1))) >> REQUANT_SHIFT, lo, hi)

    def _dense(self, x: torch.Tensor, name: str, stage: int, count: int = 0) -> torch.Tensor:
        """x: (C_in*k*k, N) integer columns -> accumulators (C_out, N) int64, computed exactly.

        The product runs in float32 when the layer's largest possible partial sum, (sum of |weights| of
        an output) x (largest input, 127 or 255), is below 2**24: weights are in [-127, 127], inputs in
        [-127, 255], so every partial sum is an integer represented exactly, in any summation order, with
        or without FMA, on CPU or GPU (TF32 rounds inputs to 11 significant bits, which these integers
        also fit). No rounding ever happens. A layer whose weights could exceed that bound runs in
        float64 instead (exact below 2**53). The choice depends on the weights only (see __init__).
        """
        w = self.w_gemm[name][stage]                            # (C_out, C_in*k*k)
        with torch.autocast(x.device.type, enabled=False):
            acc = (w @ x.to(w.dtype)).to(torch.int64)
        return acc + self.bias_tables[name][stage, count][:, None]

    @staticmethod
    def gather_columns(context: torch.Tensor, positions: torch.Tensor, k: int = 3) -> torch.Tensor:
        """im2col of the k x k zero-padded windows at the given positions only.

        context: (C, h, w); positions: (h, w) bool -> (C*k*k, N), N positions in row-major order.
        A pass that is a stride-2 or stride-4 lattice has strided slices for windows.
        """
        c, h, w = context.shape
        r = k // 2
        padded = F.pad(context, (r, r, r, r))
        ys, xs = positions.nonzero(as_tuple=True)
        if ys.numel() == 0:
            return context.new_zeros(c * k * k, 0)
        for st in (2, 4):
            a, b = int(ys[0]) % st, int(xs[0]) % st
            rows, cols = (h - a + st - 1) // st, (w - b + st - 1) // st
            if ys.numel() == rows * cols and bool(positions[a::st, b::st].all()):
                win = [padded[:, a + dy:a + dy + st * (rows - 1) + 1:st, b + dx:b + dx + st * (cols - 1) + 1:st]
                       for dy in range(k) for dx in range(k)]                 # k*k x (C, rows, cols)
                break
        else:
            win = [padded[:, ys + dy, xs + dx] for dy in range(k) for dx in range(k)]  # any other pattern
        return torch.stack(win, 1).reshape(c * k * k, -1)

    def frequencies(self, stage: int, context: torch.Tensor, positions: torch.Tensor, count: int | None = None) -> np.ndarray:
        """context: (2D+1, h, w) int64; positions: (h, w) bool; count: the stages the file codes (needed by a
        prior with stage-count biases, ignored otherwise) -> (N, K) frequencies (exact integers, float64).

        The fast path computes exactly what frequencies_reference does, with fewer passes over memory:
        activations stay float32 (integers of at most 8 bits), and the requantisation
        floor((acc + bias) * mult + 2**23) / 2**24) is one float64 multiply-add and a floor, on integers below
        2**53 (checked per layer from the weights in __init__): exact, with or without FMA. The logits come
        out (N, K), already in the coder's row order.
        """
        if not self.fast:
            return self.frequencies_reference(stage, context, positions, count)
        c = self.count_index(count)
        x = self.gather_columns(context.float(), positions, self.cfg.stage_prior(stage)[0])  # (C*k*k, N) float32
        for name in ("conv1", "conv2"):
            w, mult, offset, _ = self.fast[name]
            with torch.autocast(x.device.type, enabled=False):
                acc = (w[stage] @ x).double()                                    # (C_out, N), exact
            x = torch.addcmul(offset[stage, c][:, None], acc, mult[stage][:, None]).floor_().clamp_(0, 255).float()
        w, mult, offset, top = self.fast["conv3"]
        with torch.autocast(x.device.type, enabled=False):
            acc = (x.t() @ w[stage]).double()                                    # (N, K), exact
        logits = torch.addcmul(offset[stage, c], acc, mult[stage]).floor_()
        if top >= 1 << 20:
            logits.clamp_(-(1 << 20), 1 << 20)
        d = (logits.amax(1, keepdim=True) - logits).clamp_max_(len(self.exp) - 1)
        return self.exp_np[d.long().cpu().numpy()]                              # (N, K)

    def frequencies_reference(self, stage: int, context: torch.Tensor, positions: torch.Tensor,
                              count: int | None = None) -> np.ndarray:
        """The integer definition of the tables (int64 accumulators, shifts), used where the fast path's
        float64 bound does not hold, and by the tests as its reference."""
        c = self.count_index(count)
        x = self.gather_columns(context, positions, self.cfg.stage_prior(stage)[0])  # (C*k*k, N)
        a = self._requant(self._dense(x, "conv1", stage, c), "conv1", stage, 0, 255)
        a = self._requant(self._dense(a, "conv2", stage, c), "conv2", stage, 0, 255)
        logits = self._requant(self._dense(a, "conv3", stage, c), "conv3", stage, -(1 << 20), 1 << 20)  # (K, N)
        d = (logits.max(0, keepdim=True).values - logits).clamp_max_(len(self.exp) - 1)
        return self.exp_f64[d.t()].cpu().numpy()                         # (N, K)
