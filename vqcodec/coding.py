"""Index grids <-> payload bytes: the integer prior's tables driving the range coder (the exact part).

Order: stage 0..q-1; within a stage, the passes of the 2x2 schedule; within a pass, row-major positions.
The prior is evaluated once per (stage, pass): q * passes evaluations, whatever the image size.
"""
from __future__ import annotations

import time
from contextlib import contextmanager

import torch

from .container import FormatError
from .entropy import SymbolDecoder, SymbolEncoder, cross_entropy_bits
from .prior import IntegerPrior, build_context, pass_masks


@contextmanager
def timer(timings: dict, key: str):
    t = time.perf_counter()
    try:
        yield
    finally:
        timings[key] = timings.get(key, 0.0) + time.perf_counter() - t


class IndexCoder:
    def __init__(self, prior: IntegerPrior):
        self.prior = prior
        self.device = prior.t["exp_table"].device

    def _schedule(self, h: int, w: int):
        masks = pass_masks(h, w, self.prior.cfg.prior_passes).to(self.device)  # (P, h, w)
        known = (torch.cumsum(masks.long(), 0) - masks.long())[:, None]         # (P, 1, h, w)
        return masks, known

    def _tables(self, stage: int, prev: torch.Tensor, cur: torch.Tensor, known: torch.Tensor, mask: torch.Tensor):
        ctx = build_context(self.prior.to_input(prev), self.prior.to_input(cur), known)
        return self.prior.frequencies(stage, ctx, mask)

    def encode(self, indices: torch.Tensor, timings: dict | None = None, stats: dict | None = None) -> bytes:
        """indices: (h, w, q) int64 -> payload. stats, if given, accumulates the ideal code length."""
        timings = {} if timings is None else timings
        h, w, q = indices.shape
        indices = indices.to(self.device)
        masks, known = self._schedule(h, w)
        enc = SymbolEncoder()
        prev = torch.zeros(self.prior.cfg.latent_dim, h, w, dtype=torch.int64, device=self.device)
        for s in range(q):
            cur = self.prior.input_vectors(s, indices[..., s])
            for p in range(masks.shape[0]):
                with timer(timings, "prior_s"):
                    freqs = self._tables(s, prev, cur, known[p], masks[p])
                    symbols = indices[..., s][masks[p]].cpu().numpy()
                with timer(timings, "entropy_s"):
                    enc.encode(symbols, freqs)
                if stats is not None:
                    stats["ideal_bits"] = stats.get("ideal_bits", 0.0) + cross_entropy_bits(symbols, freqs)
            prev = prev + cur
        with timer(timings, "entropy_s"):
            return enc.finish()

    def decode(self, payload: bytes, h: int, w: int, q: int, timings: dict | None = None) -> torch.Tensor:
        """payload -> indices (h, w, q) int64. Raises FormatError if the payload does not decode."""
        timings = {} if timings is None else timings
        masks, known = self._schedule(h, w)
        try:
            dec = SymbolDecoder(payload)
        except Exception as e:
            raise FormatError(f"corrupt .vq payload ({e})") from None
        out = torch.zeros(h, w, q, dtype=torch.int64, device=self.device)
        prev = torch.zeros(self.prior.cfg.latent_dim, h, w, dtype=torch.int64, device=self.device)
        for s in range(q):
            stage = torch.zeros(h, w, dtype=torch.int64, device=self.device)
            for p in range(masks.shape[0]):
                with timer(timings, "prior_s"):
                    freqs = self._tables(s, prev, self.prior.input_vectors(s, stage), known[p], masks[p])
                with timer(timings, "entropy_s"):
                    try:
                        symbols = dec.decode(freqs)
                    except Exception:
                        raise FormatError("corrupt .vq payload (entropy decoding failed)") from None
                stage[masks[p]] = torch.from_numpy(symbols).to(self.device)
            out[..., s] = stage
            prev = prev + self.prior.input_vectors(s, stage)
        return out
