"""Entropy coding of symbols with integer frequency tables (numpy + constriction; no torch).

The frequency tables come from the integer prior, so encoder and decoder hand constriction the same
numbers bit for bit: positive integers (held exactly in float64), which constriction normalises and
quantises itself, deterministically. tests/test_coding.py pins the resulting bytes.
"""
from __future__ import annotations

import constriction
import numpy as np

_MODEL = constriction.stream.model.Categorical(perfect=False)


def _table(freqs: np.ndarray) -> np.ndarray:
    """(N, K) positive integer frequencies -> C-ordered float64 (constriction 0.5 ignores strides)."""
    return np.ascontiguousarray(freqs, dtype=np.float64)


def _probabilities(freqs: np.ndarray) -> np.ndarray:
    f = np.asarray(freqs, dtype=np.float64)
    return f / f.sum(axis=1, keepdims=True)


class SymbolEncoder:
    def __init__(self):
        self._coder = constriction.stream.queue.RangeEncoder()

    def encode(self, symbols: np.ndarray, freqs: np.ndarray) -> None:
        """symbols: (N,) in 0..K-1; freqs: (N, K) integer frequencies, all >= 1."""
        if len(symbols):
            self._coder.encode(np.ascontiguousarray(symbols, dtype=np.int32), _MODEL, _table(freqs))

    def finish(self) -> bytes:
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
        return np.asarray(self._coder.decode(_MODEL, _table(freqs)), dtype=np.int64)


def cross_entropy_bits(symbols: np.ndarray, freqs: np.ndarray) -> float:
    """Ideal code length in bits of symbols under the tables (what the prior promises)."""
    p = _probabilities(freqs)
    return float(-np.log2(p[np.arange(len(symbols)), symbols]).sum())
