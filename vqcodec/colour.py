"""The colour layer (format flag bit 3; numpy + constriction, no torch): a coarse, exact correction of the
decoded image's colour.

At the low qualities a flat area can only take one of a few hundred colours per stage, so the decoded image's
mean colour drifts over large areas (experiments/colour-layer.md). The layer codes one value per B x B block
and channel of the decoded mode, a multiple of a step s (8-bit levels), and the decoder adds them back,
bilinearly between block centres, in integers; the encoder picks the values (least squares) so that this
surface follows the decoded image's error:

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
BAND_SAMPLES = 1 << 18           # work in bands of rows of about this many samples: memory stays small
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


def _band_rows(h: int, w: int, c: int) -> int:
    return max(1, BAND_SAMPLES // (w * c))


def fit(original: np.ndarray, decoded: np.ndarray, log2_block: int, step: int) -> np.ndarray:
    """(H, W, C) uint8 original and decoded -> the symbols (C, gh, gw) int64: per channel, the least-squares
    values of the decoder's bilinear surface for the error (original - decoded), divided by the step, rounded,
    within -T..T. Separable: with Wy (H, gh) and Wx (W, gw) the bilinear weights along each axis, the values V
    minimise |E - Wy V Wx^T|^2, so Gy V Gx = Wy^T E Wx with the tridiagonal Gram matrices G = W^T W. A constant
    error gives the constant (the weights of a pixel sum to 1). The sums run in bands of rows; the encoder alone
    computes this (in float64), the decoder only adds the values back."""
    h, w, c = original.shape
    gh, gw = grid_shape(w, h, log2_block)
    ax, ay = _axis_weights(w, gw, log2_block), _axis_weights(h, gh, log2_block)
    rhs = np.zeros((gh, gw, c))
    band = _band_rows(h, w, c)
    for y0 in range(0, h, band):
        y1 = min(h, y0 + band)
        err = (original[y0:y1].astype(np.int32) - decoded[y0:y1]).astype(np.float64)   # (rows, W, C)
        per_row = _to_blocks(err, *ax, gw, axis=1)                                      # (rows, gw, C)
        rhs += _to_blocks(per_row, *(a[y0:y1] for a in ay), gh, axis=0)
    v = _solve_gram(ay, gh, rhs)                                          # Gy^-1 (Wy^T E Wx), along y
    v = _solve_gram(ax, gw, v.transpose(1, 0, 2)).transpose(1, 0, 2)      # ... Gx^-1, along x
    t = half_width(step)
    return np.clip(np.rint(v / step), -t, t).astype(np.int64).transpose(2, 0, 1).copy()


def _axis_weights(n: int, blocks: int, log2_block: int):
    """The decoder's bilinear weights along one axis as floats: (lower block, upper block, their weights); a
    pixel beyond the outer centres has its whole weight on the one block."""
    lo, hi, r = _weights(n, blocks, log2_block)
    w_hi = np.where(lo == hi, 0.0, r / (2 << log2_block))
    return lo, hi, 1.0 - w_hi, w_hi


def _to_blocks(a: np.ndarray, lo, hi, w_lo, w_hi, blocks: int, axis: int) -> np.ndarray:
    """W^T a along axis: each pixel's values, weighted, summed into its two blocks (lo and hi are sorted)."""
    shape = [1] * a.ndim
    shape[axis] = -1
    out_shape = list(a.shape)
    out_shape[axis] = blocks
    out = np.zeros(out_shape)
    for idx, wt in ((lo, w_lo), (hi, w_hi)):
        starts = np.flatnonzero(np.r_[True, idx[1:] != idx[:-1]])
        sel = [slice(None)] * a.ndim
        sel[axis] = idx[starts]
        out[tuple(sel)] += np.add.reduceat(a * wt.reshape(shape), starts, axis=axis)
    return out


def _solve_gram(weights, blocks: int, rhs: np.ndarray) -> np.ndarray:
    """G^-1 rhs along axis 0, G = W^T W tridiagonal (symmetric, positive definite: every block has pixels of
    positive weight), by the Thomas algorithm, vectorised over the other axes (a side of at most 65535
    pixels has at most 4096 blocks: a few milliseconds of loop)."""
    lo, hi, w_lo, w_hi = weights
    diag = (np.bincount(lo, w_lo * w_lo, minlength=blocks) + np.bincount(hi, w_hi * w_hi, minlength=blocks))
    off = np.bincount(lo, w_lo * w_hi, minlength=blocks)[:blocks - 1]                 # G[j, j + 1]
    d, b = rhs.astype(np.float64).copy(), diag.copy()
    for i in range(1, blocks):
        m = off[i - 1] / b[i - 1]
        b[i] -= m * off[i - 1]
        d[i] -= m * d[i - 1]
    d[-1] /= b[-1]
    for i in range(blocks - 2, -1, -1):
        d[i] = (d[i] - off[i] * d[i + 1]) / b[i]
    return d


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
    out = np.empty((c, gh * gw), dtype=np.int64)
    try:
        dec = SymbolDecoder(payload)
        for ch, d in enumerate(decays):
            model = constriction.stream.model.Categorical(table(d, step), perfect=False)
            out[ch] = np.asarray(dec.decode_with(model, gh * gw), dtype=np.int64) - t
        dec.finish()
    except MemoryError:
        raise
    except Exception as e:   # constriction raises AssertionError on data no encoder wrote
        raise ValueError(f"the colour layer's stream does not decode ({type(e).__name__})") from None
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


def _corrected_bands(decoded: np.ndarray, values: np.ndarray, log2_block: int, step: int, band: int | None = None):
    """Yields (y0, y1, the corrected rows y0..y1 as int32): each sample gets round(bilinear(q * step)) added
    (halves up), clipped to 0..255. int32 is exact: |q x s| <= 318 and the weights' product is at most (2B)^2 =
    2^18, so every sum stays below 2^27."""
    h, w, c = decoded.shape
    _, gh, gw = values.shape
    b2 = 2 << log2_block
    v = values.transpose(1, 2, 0).astype(np.int32) * step                 # (gh, gw, C)
    xl, xh, xr = _weights(w, gw, log2_block)
    yl, yh, yr = _weights(h, gh, log2_block)
    xr, yr = xr.astype(np.int32), yr.astype(np.int32)
    den = b2 * b2
    band = band or _band_rows(h, w, c)
    for y0 in range(0, h, band):
        y1 = min(h, y0 + band)
        a0, a1 = int(yl[y0]), int(yh[y1 - 1]) + 1                            # the block rows this band needs
        sub = v[a0:a1]
        rows = sub[:, xl] * (b2 - xr)[None, :, None] + sub[:, xh] * xr[None, :, None]   # (k, W, C), x 2B
        num = (rows[yl[y0:y1] - a0] * (b2 - yr[y0:y1])[:, None, None]
               + rows[yh[y0:y1] - a0] * yr[y0:y1][:, None, None])
        corr = np.floor_divide(num + den // 2, den)
        yield y0, y1, np.clip(decoded[y0:y1] + corr, 0, 255)


def apply(decoded: np.ndarray, values: np.ndarray, log2_block: int, step: int, band: int | None = None) -> np.ndarray:
    """(H, W, C) uint8 decoded image + the layer -> the corrected image (a new array), in integers. In bands of
    about BAND_SAMPLES samples, so a large image needs little more than itself and its output."""
    out = np.empty_like(decoded)
    for y0, y1, rows in _corrected_bands(decoded, values, log2_block, step, band):
        out[y0:y1] = rows
    return out


def _sse(original: np.ndarray, decoded: np.ndarray, values: np.ndarray | None = None, log2_block: int = 0,
         step: int = 0) -> float:
    """Squared error of the decoded image against the original, with the layer if values are given; in bands."""
    h, w, c = original.shape
    total = 0
    if values is None:
        band = _band_rows(h, w, c)
        for y0 in range(0, h, band):
            e = original[y0:y0 + band].astype(np.int32) - decoded[y0:y0 + band]
            total += int(np.einsum("ijk,ijk->", e, e, dtype=np.int64))
        return float(total)
    for y0, y1, rows in _corrected_bands(decoded, values, log2_block, step):
        e = original[y0:y1].astype(np.int32) - rows
        total += int(np.einsum("ijk,ijk->", e, e, dtype=np.int64))
    return float(total)


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
    sse0 = _sse(original, decoded)
    if sse0 == 0:
        return None
    best, best_score = None, 0.0
    for log2_block, step in candidates:
        values = fit(original, decoded, log2_block, step)
        if not values.any():
            continue
        decays, stream = encode(values, step)
        layer = Layer(log2_block, step, decays, stream, values)
        sse1 = _sse(original, decoded, values, log2_block, step)
        gain_db = 10 * np.log10(sse0 / max(sse1, 1e-9))
        score = gain_db - db_per_bpp * 8 * layer.cost_bytes / (h * w)
        if score > best_score:
            best, best_score = layer, score
    return best
