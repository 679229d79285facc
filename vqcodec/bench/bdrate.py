"""Bjontegaard delta rate (BD-rate) with PCHIP interpolation, the JVET common-test-conditions method.

Each rate-distortion curve is turned into log-rate as a function of quality (PSNR or MS-SSIM in dB),
interpolated with a monotone piecewise cubic Hermite spline (PCHIP, Fritsch-Carlson, as
scipy.interpolate.PchipInterpolator), integrated exactly over the quality range both curves cover,
and the mean log-rate difference is turned into a percentage: negative = the test codec needs fewer
bits than the anchor for the same quality.
"""
from __future__ import annotations

import math
import warnings

import numpy as np

MIN_OVERLAP = 0.5  # warn when the shared quality range is less than this fraction of the shorter curve's


class BDRateWarning(UserWarning):
    pass


def pchip_slopes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Derivatives at the knots of the shape-preserving PCHIP interpolant (x strictly increasing)."""
    h = np.diff(x)
    delta = np.diff(y) / h
    if len(x) == 2:
        return np.array([delta[0], delta[0]])
    d = np.zeros_like(y)
    # interior: weighted harmonic mean of the neighbouring secants, 0 at local extrema
    w1, w2 = 2 * h[1:] + h[:-1], h[1:] + 2 * h[:-1]
    same_sign = delta[:-1] * delta[1:] > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        harmonic = (w1 + w2) / (w1 / delta[:-1] + w2 / delta[1:])
    d[1:-1] = np.where(same_sign, harmonic, 0.0)
    # ends: one-sided three-point estimate, kept shape-preserving
    d[0] = _end_slope(h[0], h[1], delta[0], delta[1])
    d[-1] = _end_slope(h[-1], h[-2], delta[-1], delta[-2])
    return d


def _end_slope(h0, h1, delta0, delta1) -> float:
    d = ((2 * h0 + h1) * delta0 - h0 * delta1) / (h0 + h1)
    if np.sign(d) != np.sign(delta0):
        return 0.0
    if np.sign(delta0) != np.sign(delta1) and abs(d) > abs(3 * delta0):
        return 3 * delta0
    return d


def pchip_integral(x: np.ndarray, y: np.ndarray, lo: float, hi: float) -> float:
    """Exact integral of the PCHIP interpolant of (x, y) over [lo, hi], a sub-range of [x0, xn]."""
    d = pchip_slopes(x, y)
    total = 0.0
    for k in range(len(x) - 1):
        a, b = max(lo, x[k]), min(hi, x[k + 1])
        if b <= a:
            continue
        h = x[k + 1] - x[k]
        total += _hermite_antiderivative((b - x[k]) / h, h, y[k], y[k + 1], d[k], d[k + 1])
        total -= _hermite_antiderivative((a - x[k]) / h, h, y[k], y[k + 1], d[k], d[k + 1])
    return total


def _hermite_antiderivative(t, h, y0, y1, d0, d1) -> float:
    """Integral from x_k to x_k + t*h of the cubic Hermite segment (values y0, y1, slopes d0, d1)."""
    t2, t3, t4 = t * t, t ** 3, t ** 4
    return h * (y0 * (t4 / 2 - t3 + t)
                + h * d0 * (t4 / 4 - 2 * t3 / 3 + t2 / 2)
                + y1 * (-t4 / 2 + t3)
                + h * d1 * (t4 / 4 - t3 / 3))


def _curve(rates, qualities, label: str) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (quality, log rate) arrays of one curve, validated."""
    r = np.asarray(rates, dtype=np.float64)
    q = np.asarray(qualities, dtype=np.float64)
    if r.shape != q.shape or r.ndim != 1:
        raise ValueError(f"{label}: rates and qualities must be 1-D lists of equal length")
    if len(r) < 2:
        raise ValueError(f"{label}: need at least 2 rate-quality points, got {len(r)}")
    if not (np.all(np.isfinite(r)) and np.all(np.isfinite(q)) and np.all(r > 0)):
        raise ValueError(f"{label}: rates must be positive and all values finite")
    order = np.argsort(q)
    q, r = q[order], r[order]
    if np.any(np.diff(q) <= 0):
        raise ValueError(f"{label}: quality values must be distinct")
    return q, np.log(r)


def bd_rate_with_overlap(anchor_rates, anchor_qualities, test_rates, test_qualities) -> tuple[float, float]:
    """(BD-rate in percent of test vs anchor, overlap fraction). Overlap = the shared quality range
    divided by the shorter of the two curves' ranges (1 = one curve lies fully inside the other)."""
    qa, la = _curve(anchor_rates, anchor_qualities, "anchor")
    qt, lt = _curve(test_rates, test_qualities, "test")
    lo, hi = max(qa[0], qt[0]), min(qa[-1], qt[-1])
    if hi <= lo:
        raise ValueError("the two curves share no quality range; BD-rate is undefined")
    overlap = (hi - lo) / min(qa[-1] - qa[0], qt[-1] - qt[0])
    mean_diff = (pchip_integral(qt, lt, lo, hi) - pchip_integral(qa, la, lo, hi)) / (hi - lo)
    return (math.exp(mean_diff) - 1.0) * 100.0, float(overlap)


def bd_rate(anchor_rates, anchor_qualities, test_rates, test_qualities) -> float:
    """BD-rate in percent of the test curve against the anchor (-50 = half the bits at equal quality).
    Warns with BDRateWarning when the curves overlap on less than MIN_OVERLAP of their range."""
    percent, overlap = bd_rate_with_overlap(anchor_rates, anchor_qualities, test_rates, test_qualities)
    if overlap < MIN_OVERLAP:
        warnings.warn(f"BD-rate over a small quality overlap ({overlap:.0%} of the shorter curve); "
                      "treat it as unreliable", BDRateWarning, stacklevel=2)
    return percent
