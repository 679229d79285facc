"""Index grids <-> payload bytes: the integer prior's tables driving the range coder (the exact part).

Order: stage 0..q-1; within a stage, the passes of its schedule (ModelConfig.stage_prior); within a pass, row-major positions.
The prior is evaluated once per (stage, pass): q * passes evaluations, whatever the image size.

The same tables also drive a seeded sampler (IndexCoder.sample): indices drawn from the prior, in the decoder's
order, with integer arithmetic only, so that a seed gives the same indices on every machine.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from .container import FormatError
from .entropy import SymbolDecoder, SymbolEncoder, cap_probabilities, cross_entropy_bits
from .prior import IntegerPrior, build_context, known_before, stage_masks
from .refine import IntegerRefinement
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


_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on uint64 (wrapping arithmetic): a fixed, portable hash of each value."""
    with np.errstate(over="ignore"):
        z = (np.asarray(x, np.uint64) + np.uint64(0x9E3779B97F4A7C15)) & _M64
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def sample_keys(seed: int, stage: int, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """The random 64-bit word of each (stage, grid position) for `seed`: splitmix64(splitmix64(seed) +
    (stage << 48 | y << 24 | x)). It depends on nothing else, so a position's draw is the same whatever the
    order, the tiling or the machine."""
    base = splitmix64(np.array([seed & 0xFFFFFFFFFFFFFFFF], np.uint64))[0]
    where = (np.uint64(stage) << np.uint64(48)) | (ys.astype(np.uint64) << np.uint64(24)) | xs.astype(np.uint64)
    with np.errstate(over="ignore"):
        return splitmix64(base + where)


def draw(freqs: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """(N, K) integer frequency tables (capped as the coder caps them) and (N,) uint64 random words -> (N,)
    symbols: symbol j where the cumulative frequencies pass key mod (row total). Integers only."""
    f = cap_probabilities(freqs).astype(np.int64)              # exact: integers below 2**53
    cum = np.cumsum(f, axis=1)                                  # (N, K), below 2**62
    u = (keys % cum[:, -1].astype(np.uint64)).astype(np.int64)  # (N,) in 0..total-1
    return (cum <= u[:, None]).sum(1)


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

    def sample(self, h: int, w: int, stages: int, seed: int, given: torch.Tensor | None = None, tiles=None,
               count: int | None = None) -> torch.Tensor:
        """Indices (h, w, stages) int16 drawn from the prior, tile by tile in the decoder's order: the first
        given.shape[2] stages are `given` (a file's decoded stages, full codes), the rest drawn with the
        prior told that the file codes `count` stages (None: `stages`). Deterministic per seed."""
        k = 0 if given is None else given.shape[2]
        count = stages if count is None else count
        out = torch.zeros(h, w, stages, dtype=torch.int16)
        if k:
            out[..., :k] = given[..., :stages]
        tiles = tiles or [(0, 0, h, w)]
        for y0, x0, y1, x1 in tiles:
            tick("sampling", len(tiles))
            out[y0:y1, x0:x1] = self._sample_tile(out[y0:y1, x0:x1], k, seed, y0, x0, count)
        return out

    def _sample_tile(self, tile: torch.Tensor, k: int, seed: int, y0: int, x0: int, count: int) -> torch.Tensor:
        h, w, q = tile.shape
        schedule = self._schedule(h, w)
        out = tile.clone()
        prev = torch.zeros(self.prior.cfg.latent_dim, h, w, dtype=torch.int64, device=self.device)
        for s in range(q):
            stage = out[..., s].to(self.device, torch.int64)
            if s >= k:
                masks, known = schedule[s]
                for p in range(masks.shape[0]):
                    freqs = self._tables(s, prev, self.prior.input_vectors(s, stage), known[p], masks[p], count)
                    ys, xs = (t.cpu().numpy() for t in torch.nonzero(masks[p], as_tuple=True))   # row-major
                    symbols = draw(freqs, sample_keys(seed, s, ys + y0, xs + x0))
                    stage[masks[p]] = torch.from_numpy(symbols).to(self.device)
                out[..., s] = stage.cpu().to(torch.int16)
            prev = prev + self.prior.input_vectors(s, stage)
        return out


class RefinementCoder:
    """A refinement level's values <-> one range-coded stream per tile.

    A tile's tables come from the integer refinement network on the tile's own VQ latent (the sum of its b
    stages' integer codebook vectors, zero outside the tile), so each tile decodes alone, like the indices."""

    def __init__(self, refine: IntegerRefinement, prior: IntegerPrior):
        self.refine, self.prior = refine, prior

    def _tables(self, indices: torch.Tensor, level: int):
        """indices (th, tw, b) of one tile -> (mean, table), each (C, th, tw) int64."""
        b = indices.shape[2]
        v = sum(self.prior.input_vectors(t, indices[..., t].to(self.prior.t["codebooks"].device).long())
                for t in range(b)).cpu()                                                 # (D, th, tw)
        mean, table = self.refine.mean_table(self.prior.to_input(v)[None], b, level)
        return mean[0], table[0]

    def encode(self, r: torch.Tensor, indices: torch.Tensor, level: int, tiles=None, stats: dict | None = None):
        """r (C, h, w): the values to refine (the D quantized values' residual after b stages, then the R others);
        indices (h, w, b) -> (streams[tile], r_hat (C, h, w) float32: what the decoder will rebuild)."""
        c, h, w = r.shape
        tiles = tiles or [(0, 0, h, w)]
        r_hat = torch.zeros(c, h, w)
        streams = []
        for y0, x0, y1, x1 in tiles:
            mean, table = self._tables(indices[y0:y1, x0:x1], level)
            q = self.refine.quantize(r[None, :, y0:y1, x0:x1].cpu(), mean[None], table[None], level)[0]
            sym, tab = q.numpy().ravel(), table.numpy().ravel()
            streams.append(self.refine.table_set.encode(sym, tab))
            if stats is not None:
                stats["refine_bits"] = stats.get("refine_bits", 0.0) + self.refine.table_set.bits(sym, tab)
            r_hat[:, y0:y1, x0:x1] = self.refine.dequantize(q[None], mean[None], level)[0]
            tick("refinement coding", len(tiles))
        return streams, r_hat

    def decode(self, streams: list[bytes], indices: torch.Tensor, level: int, tiles=None) -> torch.Tensor:
        """streams[tile], indices (h, w, b) -> r_hat (C, h, w) float32. FormatError if a stream does not decode
        to exactly its tile's values and its check symbol."""
        h, w = indices.shape[:2]
        tiles = tiles or [(0, 0, h, w)]
        r_hat = torch.zeros(self.refine.dim, h, w)
        for stream, (y0, x0, y1, x1) in zip(streams, tiles):
            mean, table = self._tables(indices[y0:y1, x0:x1], level)
            try:
                sym = self.refine.table_set.decode(stream, table.numpy().ravel())
            except Exception:
                raise FormatError("corrupt .vq payload (a refinement stream does not decode)") from None
            q = torch.from_numpy(sym).reshape(table.shape)
            r_hat[:, y0:y1, x0:x1] = self.refine.dequantize(q[None], mean[None], level)[0]
            tick("refinement decoding", len(tiles))
        return r_hat
