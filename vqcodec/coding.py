"""Index grids <-> payload bytes: the integer prior's tables driving the range coder (the exact part).

Order: stage 0..q-1; within a stage, the passes of its schedule (ModelConfig.stage_prior); within a pass, row-major positions.
The prior is evaluated once per (stage, pass): q * passes evaluations, whatever the image size.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from .container import FormatError
from .entropy import SymbolDecoder, SymbolEncoder, cross_entropy_bits
from .prior import IntegerPrior, build_context, known_before, stage_masks
from .progress import tick


@contextmanager
def timer(timings: dict, key: str):
    t = time.perf_counter()
    try:
        yield
    finally:
        timings[key] = timings.get(key, 0.0) + time.perf_counter() - t


@dataclass(frozen=True)
class CoarseAlphabet:
    """Stage 0 of a coarse quality level: only `codes` may occur, coded as their positions 0..M-1.

    Every code of the codebook belongs to the cell of its nearest allowed code, and a cell's frequency
    is the sum of its members' integer frequencies: the full prior's tables, merged exactly.
    """
    codes: torch.Tensor   # (M,) int64: symbol j stands for stage-0 code codes[j]
    cells: torch.Tensor   # (K,) int64: the symbol of every code's nearest allowed code
    by_cell: np.ndarray   # (K,) the codes sorted by cell
    starts: np.ndarray    # (M,) where each cell begins in by_cell (no cell is empty)

    @classmethod
    def build(cls, int_codebook: torch.Tensor, codes: torch.Tensor) -> "CoarseAlphabet":
        """int_codebook: (K, D) the prior's integer vectors of stage 0; codes: (M,) distinct allowed codes.

        Nearest means the smallest integer squared distance (ties: the lower symbol), so every machine
        builds the same cells.
        """
        cb, codes = int_codebook.cpu().to(torch.int64), codes.cpu().to(torch.int64)
        k = cb.shape[0]
        if codes.dim() != 1 or len(codes) < 2 or len(codes.unique()) != len(codes) or codes.min() < 0 or codes.max() >= k:
            raise ValueError(f"coarse codes must be at least 2 distinct indices below {k}")
        cells = (cb[:, None, :] - cb[codes][None]).pow(2).sum(2).argmin(1)      # (K,)
        cells[codes] = torch.arange(len(codes))
        by_cell = np.argsort(cells.numpy(), kind="stable")
        starts = np.searchsorted(cells.numpy()[by_cell], np.arange(len(codes)))
        return cls(codes, cells, by_cell, starts)

    def merge(self, freqs: np.ndarray) -> np.ndarray:
        """(N, K) integer frequencies -> (N, M): each cell's sum, exact (integers below 2**53 in float64).

        A plain reduction, not a BLAS product: BLAS threads would compete with torch's for the cores.
        """
        return np.add.reduceat(freqs[:, self.by_cell], self.starts, axis=1)


def stream_bytes(streams: list[list[bytes]]) -> int:
    """Total bytes of the streams of IndexCoder.encode."""
    return sum(len(s) for stage in streams for s in stage)


class IndexCoder:
    """Index grids <-> one range-coded stream per (stage, tile).

    Each tile is coded on its own: the prior's context stops at the tile's edges as at the image's, so a
    decoder holds one tile's tables at a time and memory does not grow with the image.
    """

    def __init__(self, prior: IntegerPrior):
        self.prior = prior
        self.device = prior.t["exp_table"].device

    def _schedule(self, h: int, w: int):
        """Per stage: (masks (P_s, h, w) bool, known (P_s, 1, h, w) int64 before each pass)."""
        out = []
        for masks in stage_masks(self.prior.cfg, h, w):
            masks = masks.to(self.device)
            out.append((masks, known_before(masks)[:, None].long()))
        return out

    def _tables(self, stage: int, prev: torch.Tensor, cur: torch.Tensor, known: torch.Tensor, mask: torch.Tensor,
                count: int | None = None):
        ctx = build_context(self.prior.to_input(prev), self.prior.to_input(cur), known)
        return self.prior.frequencies(stage, ctx, mask, count)

    def encode(self, indices: torch.Tensor, tiles=None, timings: dict | None = None, stats: dict | None = None,
               coarse: CoarseAlphabet | None = None) -> list[list[bytes]]:
        """indices: (h, w, q) int -> streams[stage][tile]. tiles: (y0, x0, y1, x1) boxes covering the grid
        (None: one tile, the whole grid).

        stats, if given, accumulates the ideal code length ("ideal_bits"). coarse: stage 0 uses only
        coarse.codes and is coded in that alphabet (a coarse quality level). The stage count a prior with
        stage-count biases sees is q, the stages coded.
        """
        timings = {} if timings is None else timings
        q = indices.shape[2]
        if coarse is not None:
            stage0 = indices[..., 0].cpu().long()
            if not bool((coarse.codes[coarse.cells[stage0]] == stage0).all()):
                raise ValueError("stage 0 holds codes outside the coarse alphabet")
        streams: list[list[bytes]] = [[] for _ in range(q)]
        tiles = tiles or [(0, 0, indices.shape[0], indices.shape[1])]
        for y0, x0, y1, x1 in tiles:
            tile = indices[y0:y1, x0:x1].to(self.device, torch.int64)
            for s, stream in enumerate(self._encode_tile(tile, timings, stats, coarse)):
                streams[s].append(stream)
            tick("entropy coding", len(tiles))
        return streams

    def _encode_tile(self, indices, timings, stats, coarse):
        h, w, q = indices.shape
        schedule = self._schedule(h, w)
        prev = torch.zeros(self.prior.cfg.latent_dim, h, w, dtype=torch.int64, device=self.device)
        for s in range(q):
            enc = SymbolEncoder()
            cur = self.prior.input_vectors(s, indices[..., s])
            masks, known = schedule[s]
            for p in range(masks.shape[0]):
                with timer(timings, "prior_s"):
                    freqs = self._tables(s, prev, cur, known[p], masks[p], q)
                    symbols = indices[..., s][masks[p]].cpu()
                    if coarse is not None and s == 0:
                        freqs, symbols = coarse.merge(freqs), coarse.cells[symbols]
                    symbols = symbols.numpy()
                with timer(timings, "entropy_s"):
                    enc.encode(symbols, freqs)
                if stats is not None:
                    stats["ideal_bits"] = stats.get("ideal_bits", 0.0) + cross_entropy_bits(symbols, freqs)
            prev = prev + cur
            with timer(timings, "entropy_s"):
                yield enc.finish()

    def decode(self, streams: list[list[bytes]], h: int, w: int, tiles=None, timings: dict | None = None,
               coarse: CoarseAlphabet | None = None, count: int | None = None) -> torch.Tensor:
        """streams[stage][tile] -> indices (h, w, q) int16 on the CPU. Raises FormatError if a stream does
        not decode to exactly its tile's indices and its check symbol.

        count: the stages the file codes (its header's), when only the first q = len(streams) are decoded (a
        lower quality); None: q. A prior with stage-count biases needs it, the others ignore it."""
        timings = {} if timings is None else timings
        q = len(streams)
        count = q if count is None else count
        out = torch.zeros(h, w, q, dtype=torch.int16)
        tiles = tiles or [(0, 0, h, w)]
        for t, (y0, x0, y1, x1) in enumerate(tiles):
            tick("entropy decoding", len(tiles))
            out[y0:y1, x0:x1] = self._decode_tile([stage[t] for stage in streams], y1 - y0, x1 - x0, timings, coarse,
                                                  count)
        return out

    def _decode_tile(self, streams, h, w, timings, coarse, count) -> torch.Tensor:
        schedule = self._schedule(h, w)
        q = len(streams)
        out = torch.zeros(h, w, q, dtype=torch.int16)
        prev = torch.zeros(self.prior.cfg.latent_dim, h, w, dtype=torch.int64, device=self.device)
        for s in range(q):
            try:
                dec = SymbolDecoder(streams[s])
            except Exception as e:
                raise FormatError(f"corrupt .vq payload ({e})") from None
            stage = torch.zeros(h, w, dtype=torch.int64, device=self.device)
            masks, known = schedule[s]
            for p in range(masks.shape[0]):
                with timer(timings, "prior_s"):
                    freqs = self._tables(s, prev, self.prior.input_vectors(s, stage), known[p], masks[p], count)
                    if coarse is not None and s == 0:
                        freqs = coarse.merge(freqs)
                with timer(timings, "entropy_s"):
                    try:
                        symbols = torch.from_numpy(dec.decode(freqs))
                    except Exception:
                        raise FormatError("corrupt .vq payload (entropy decoding failed)") from None
                if coarse is not None and s == 0:
                    symbols = coarse.codes[symbols]
                stage[masks[p]] = symbols.to(self.device)
            with timer(timings, "entropy_s"):
                try:
                    dec.finish()
                except Exception:
                    raise FormatError(f"corrupt .vq payload (stage {s + 1} does not end where it should)") from None
            out[..., s] = stage.cpu().to(torch.int16)
            prev = prev + self.prior.input_vectors(s, stage)
        return out
