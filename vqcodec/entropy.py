"""Entropy coding of symbols with integer frequency tables (numpy + constriction; no torch).

The frequency tables come from the integer prior, so encoder and decoder hand constriction the same
numbers bit for bit: positive integers (held exactly in float64), which constriction normalises and
quantises itself, deterministically. tests/test_coding.py pins the resulting bytes.
"""
from __future__ import annotations

import constriction
import numpy as np

from .container import PROB_CAP_BITS, STREAM_CHECK_BITS

_MODEL = constriction.stream.model.Categorical(perfect=False)
_CHECK_MODEL = constriction.stream.model.Uniform(1 << STREAM_CHECK_BITS)
STREAM_CHECK = 0xA55A   # the last symbol of every stream: the decoder must find it where the encoder put it


def cap_probabilities(freqs: np.ndarray) -> np.ndarray:
    """(N, K) positive integer frequencies -> the same, with each row's largest lowered (if needed) to
    (sum of the others) * (2**PROB_CAP_BITS - 1): no symbol is more probable than 1 - 2**-PROB_CAP_BITS,
    so every coded index costs bits and a stream's length bounds its number of indices. Integers only
    (exact in float64); rows that need no cap, almost all of them, are not copied."""
    f = np.ascontiguousarray(freqs, dtype=np.float64)
    if not len(f):
        return f
    top = f.max(1)
    rest = f.sum(1) - top
    over = np.nonzero(top > rest * ((1 << PROB_CAP_BITS) - 1))[0]
    if len(over):
        f = f.copy()
        cols = f[over].argmax(1)
        f[over, cols] = rest[over] * ((1 << PROB_CAP_BITS) - 1)
    return f


def _probabilities(freqs: np.ndarray) -> np.ndarray:
    f = np.asarray(freqs, dtype=np.float64)
    return f / f.sum(axis=1, keepdims=True)


class SymbolEncoder:
    def __init__(self):
        self._coder = constriction.stream.queue.RangeEncoder()

    def encode(self, symbols: np.ndarray, freqs: np.ndarray) -> None:
        """symbols: (N,) in 0..K-1; freqs: (N, K) integer frequencies, all >= 1."""
        if len(symbols):
            self._coder.encode(np.ascontiguousarray(symbols, dtype=np.int32), _MODEL, cap_probabilities(freqs))

    def finish(self) -> bytes:
        """Close the stream with its check symbol -> whole little-endian 32-bit words."""
        self._coder.encode(np.array([STREAM_CHECK], dtype=np.int32), _CHECK_MODEL)
        return self._coder.get_compressed().astype("<u4").tobytes()


class SymbolDecoder:
    def __init__(self, payload: bytes):
        if len(payload) % 4:
            raise ValueError("payload length is not a whole number of 32-bit words")
        words = np.frombuffer(payload, dtype="<u4").astype(np.uint32)
        self._coder = constriction.stream.queue.RangeDecoder(words)

    def decode(self, freqs: np.ndarray) -> np.ndarray:
        """freqs: (N, K) -> symbols (N,) int64."""
        if len(freqs) == 0:
            return np.zeros(0, dtype=np.int64)
        return np.asarray(self._coder.decode(_MODEL, cap_probabilities(freqs)), dtype=np.int64)

    def decode_with(self, model, n: int) -> np.ndarray:
        """n symbols of one fixed constriction model (a table that does not change from symbol to symbol)."""
        return np.asarray(self._coder.decode(model, n), dtype=np.int64)

    def finish(self) -> None:
        """Raise ValueError unless the stream ends exactly here: its check symbol, then no more data."""
        check = int(self._coder.decode(_CHECK_MODEL, 1)[0])
        if check != STREAM_CHECK or not self._coder.maybe_exhausted():
            raise ValueError("the stream does not end where its encoder ended")


def cross_entropy_bits(symbols: np.ndarray, freqs: np.ndarray) -> float:
    """Ideal code length in bits of symbols under the (capped) tables."""
    p = _probabilities(cap_probabilities(freqs))
    return float(-np.log2(p[np.arange(len(symbols)), symbols]).sum())


class TableSet:
    """Fixed coding tables, each a 1-D array of positive integer frequencies over symbols -T..T (T = its
    half-width): the refinement's Gaussians. One stream codes many values, grouped by table, tables in
    ascending order and values in their given order within a table; the decoder, knowing every value's
    table first, decodes the same groups."""

    def __init__(self, tables: list[np.ndarray]):
        self.tables = tables
        self.halves = np.array([(len(t) - 1) // 2 for t in tables], dtype=np.int64)
        self._models: dict[int, object] = {}

    def _model(self, t: int):
        if t not in self._models:
            self._models[t] = constriction.stream.model.Categorical(
                np.ascontiguousarray(self.tables[t], dtype=np.float64), perfect=False)
        return self._models[t]

    @staticmethod
    def _groups(table: np.ndarray):
        order = np.argsort(table, kind="stable")
        ts, starts = np.unique(table[order], return_index=True)
        return order, ts, np.append(starts, len(order))

    def encode(self, symbols: np.ndarray, table: np.ndarray) -> bytes:
        """symbols (N,) each within its table's -T..T; table (N,) table numbers -> the stream (whole 32-bit words)."""
        coder = constriction.stream.queue.RangeEncoder()
        order, ts, bounds = self._groups(table)
        for i, t in enumerate(ts):
            sel = order[bounds[i]:bounds[i + 1]]
            coder.encode(np.ascontiguousarray(symbols[sel] + self.halves[t], dtype=np.int32), self._model(int(t)))
        coder.encode(np.array([STREAM_CHECK], dtype=np.int32), _CHECK_MODEL)
        return coder.get_compressed().astype("<u4").tobytes()

    def decode(self, payload: bytes, table: np.ndarray) -> np.ndarray:
        """The stream of `encode` and the same table numbers -> symbols (N,) int64. ValueError if the stream does
        not end exactly where its encoder ended."""
        dec = SymbolDecoder(payload)
        out = np.zeros(len(table), dtype=np.int64)
        order, ts, bounds = self._groups(table)
        for i, t in enumerate(ts):
            n = int(bounds[i + 1] - bounds[i])
            got = dec.decode_with(self._model(int(t)), n)
            out[order[bounds[i]:bounds[i + 1]]] = got - self.halves[t]
        dec.finish()
        return out

    def bits(self, symbols: np.ndarray, table: np.ndarray) -> float:
        """Ideal code length of the symbols under their tables."""
        total = 0.0
        order, ts, bounds = self._groups(table)
        for i, t in enumerate(ts):
            f = self.tables[t]
            sel = order[bounds[i]:bounds[i + 1]]
            total -= float(np.log2(f[symbols[sel] + self.halves[t]] / f.sum()).sum())
        return total
