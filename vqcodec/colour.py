"""The colour layer (format flag bit 3; numpy + constriction, no torch): a coarse, exact correction of the
decoded image's colour.

At the low qualities a flat area can only take one of a few hundred colours per stage, so the decoded image's
mean colour drifts over large areas (experiments/colour-layer.md). The layer codes the decoded image's error
averaged over B x B blocks, per channel of the decoded mode, rounded to a step s (8-bit levels), and the
decoder adds it back, bilinearly between block centres, in integers:

    fit(original, decoded, log2_block, step) -> values (C, gh, gw): symbols q, the correction is q * step
    encode(values, step) -> (decays, stream);  decode(stream, shape, decays, step) -> values
    apply(decoded, values, log2_block, step) -> the corrected image, bit-exact on any machine

Each channel's symbols are coded with one fixed integer table, a two-sided geometric distribution whose decay
d (1..255, d / 256 per step away from 0) the encoder picks per channel and writes in the header. Everything the
decoder computes is integer arithmetic; the encoder decides per image whether the layer pays (`choose`).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import constriction
import numpy as np

from .entropy import STREAM_CHECK, SymbolDecoder, cap_probabilities

LOG2_BLOCKS = range(4, 9)        # block sides 16 .. 256 pixels
MAX_STEP = 64                    # 8-bit levels
TABLE_ONE = 1 << 16              # the frequency of symbol 0 before the cap
CANDIDATES = ((6, 4), (7, 4), (6, 8), (5, 4))   # (log2 block, step) the encoder tries
DB_PER_BPP = 40.0                # the encoder keeps a layer that gains at least this many dB per added bpp
MAX_BPP = 0.25                   # ... and tries one only where the index streams take fewer bits per pixel


def half_width(step: int) -> int:
    """T: the symbols of a step run over -T..T (a block mean of an 8-bit error is within +-255 levels)."""
    return -(-255 // step)


def grid_shape(width: int, height: int, log2_block: int) -> tuple[int, int]:
    """(gh, gw): blocks over the image (the last row and column may be partial)."""
    b = 1 << log2_block
    return -(-height // b), -(-width // b)


@lru_cache(maxsize=1024)
def table(decay: int, step: int) -> np.ndarray:
    """The integer frequencies (2T + 1,) of symbols -T..T: f(0) = 2^16, f(k) = max(1, f(k-1) * decay >> 8)
    for |k| = 1..T, then capped as every index table is (entropy.cap_probabilities)."""
    t = half_width(step)
    side = np.empty(t + 1, dtype=np.int64)
    side[0] = TABLE_ONE
    for k in range(1, t + 1):
        side[k] = max(1, (int(side[k - 1]) * decay) >> 8)
    freqs = np.concatenate([side[:0:-1], side])
    out = cap_probabilities(freqs[None].astype(np.float64))[0].copy()
    out.flags.writeable = False
    return out


def _bits_per_decay(magnitudes: np.ndarray, step: int) -> np.ndarray:
    """(255,) ideal bits of symbols with these |q| under each decay 1..255."""
    t = half_width(step)
    hist = np.bincount(magnitudes, minlength=t + 1)
    out = np.empty(255)
    for d in range(1, 256):
        f = table(d, step)
        p = f[t:] / f.sum()                          # P(0), P(1) = P(-1), ...
        out[d - 1] = -(hist * np.log2(p)).sum()
    return out


def fit(original: np.ndarray, decoded: np.ndarray, log2_block: int, step: int) -> np.ndarray:
    """(H, W, C) uint8 original and decoded -> the symbols (C, gh, gw) int64: the mean error of each block
    (the pixels of a partial block only), divided by the step, rounded, within -T..T."""
    h, w, c = original.shape
    b = 1 << log2_block
    gh, gw = grid_shape(w, h, log2_block)
    err = original.astype(np.int64) - decoded.astype(np.int64)
    sums = np.zeros((gh * b, gw * b, c), dtype=np.int64)
    sums[:h, :w] = err
    sums = sums.reshape(gh, b, gw, b, c).sum((1, 3))
    count = np.zeros((gh * b, gw * b), dtype=np.int64)
    count[:h, :w] = 1
    count = count.reshape(gh, b, gw, b).sum((1, 3))
    q = np.rint(sums / (count[..., None] * step)).astype(np.int64)
    t = half_width(step)
    return np.clip(q, -t, t).transpose(2, 0, 1).copy()


def encode(values: np.ndarray, step: int) -> tuple[tuple[int, ...], bytes]:
    """Symbols (C, gh, gw) -> (each channel's decay, the stream: channel by channel, row-major, then the check
    symbol; whole little-endian 32-bit words)."""
    t = half_width(step)
    coder = constriction.stream.queue.RangeEncoder()
    decays = []
    for ch in values:
        d = int(np.argmin(_bits_per_decay(np.abs(ch).ravel(), step))) + 1
        decays.append(d)
        model = constriction.stream.model.Categorical(table(d, step), perfect=False)
        coder.encode(np.ascontiguousarray(ch.ravel() + t, dtype=np.int32), model)
    coder.encode(np.array([STREAM_CHECK], dtype=np.int32), constriction.stream.model.Uniform(1 << 16))
    return tuple(decays), coder.get_compressed().astype("<u4").tobytes()


def decode(payload: bytes, shape: tuple[int, int, int], decays: tuple[int, ...], step: int) -> np.ndarray:
    """The stream of `encode` -> symbols (C, gh, gw) int64. ValueError unless it ends exactly where it should."""
    c, gh, gw = shape
    t = half_width(step)
    dec = SymbolDecoder(payload)
    out = np.empty((c, gh * gw), dtype=np.int64)
    for ch, d in enumerate(decays):
        model = constriction.stream.model.Categorical(table(d, step), perfect=False)
        out[ch] = np.asarray(dec._coder.decode(model, gh * gw), dtype=np.int64) - t
    dec.finish()
    return out.reshape(c, gh, gw)


def _weights(n: int, blocks: int, log2_block: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear weights between block centres along one axis, in units of 1 / (2B): pixel i lies at
    (2i + 1 - B) / (2B) blocks from the first centre -> (lower block, upper block, the upper one's weight);
    beyond the outer centres the nearest block alone (as torch's bilinear, align_corners=False)."""
    b2 = 2 << log2_block
    p = 2 * np.arange(n, dtype=np.int64) + 1 - (b2 >> 1)
    lo = np.floor_divide(p, b2)
    r = p - lo * b2
    hi = np.clip(lo + 1, 0, blocks - 1)
    lo = np.clip(lo, 0, blocks - 1)
    return lo, hi, r


def apply(decoded: np.ndarray, values: np.ndarray, log2_block: int, step: int, band: int = 256) -> np.ndarray:
    """(H, W, C) uint8 decoded image + the layer -> the corrected image (a new array), in integers: each
    pixel gets round(bilinear(q * step)) added (halves up), then is clipped to 0..255. In bands of rows, so
    a large image needs little more than itself."""
    h, w, c = decoded.shape
    _, gh, gw = values.shape
    b2 = 2 << log2_block
    v = values.transpose(1, 2, 0).astype(np.int64) * step                 # (gh, gw, C)
    xl, xh, xr = _weights(w, gw, log2_block)
    rows = (v[:, xl] * (b2 - xr)[None, :, None] + v[:, xh] * xr[None, :, None])   # (gh, W, C), x 2B
    yl, yh, yr = _weights(h, gh, log2_block)
    out = np.empty_like(decoded)
    den = b2 * b2
    for y0 in range(0, h, band):
        y1 = min(h, y0 + band)
        num = rows[yl[y0:y1]] * (b2 - yr[y0:y1])[:, None, None] + rows[yh[y0:y1]] * yr[y0:y1][:, None, None]
        corr = np.floor_divide(num + den // 2, den)
        out[y0:y1] = np.clip(decoded[y0:y1].astype(np.int64) + corr, 0, 255)
    return out


@dataclass(frozen=True)
class Layer:
    log2_block: int
    step: int
    decays: tuple[int, ...]
    stream: bytes
    values: np.ndarray

    @property
    def cost_bytes(self) -> int:
        """What the layer adds to a file: block and step, a decay per channel, the stream's length (a varint of
        1 to 3 bytes) and CRC-32, the stream."""
        words = len(self.stream) // 4
        return 2 + len(self.decays) + (1 if words < 128 else 2 if words < 16384 else 3) + 4 + len(self.stream)


def choose(original: np.ndarray, decoded: np.ndarray, candidates=CANDIDATES, db_per_bpp: float = DB_PER_BPP):
    """The encoder's decision: the candidate layer with the best gain in dB less db_per_bpp x its added bits
    per pixel, if that is positive; else None (no layer)."""
    h, w, _ = original.shape
    ref = original.astype(np.int64)
    sse0 = float(((ref - decoded) ** 2).sum())
    if sse0 == 0:
        return None
    best, best_score = None, 0.0
    for log2_block, step in candidates:
        values = fit(original, decoded, log2_block, step)
        if not values.any():
            continue
        decays, stream = encode(values, step)
        layer = Layer(log2_block, step, decays, stream, values)
        sse1 = float(((ref - apply(decoded, values, log2_block, step)) ** 2).sum())
        gain_db = 10 * np.log10(sse0 / max(sse1, 1e-9))
        score = gain_db - db_per_bpp * 8 * layer.cost_bytes / (h * w)
        if score > best_score:
            best, best_score = layer, score
    return best
