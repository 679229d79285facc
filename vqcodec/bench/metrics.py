"""Distortion metrics on 8-bit RGB images: PSNR and MS-SSIM, in float64 numpy.

MS-SSIM follows Wang, Simoncelli & Bovik (2003) exactly as pytorch-msssim (and so CompressAI's
published numbers) computes it: 11-tap Gaussian window with sigma 1.5 applied without padding
("valid"), K1=0.01, K2=0.03, data range 255, 5 scales with weights
(0.0448, 0.2856, 0.3001, 0.2363, 0.1333), 2x2 average pooling between scales (an odd side is
zero-padded by one pixel, as pytorch-msssim does), negative contrast-structure terms clamped to 0,
computed per RGB channel and averaged over the channels.

Small images: the 5-scale definition needs a shorter side of at least 161 px. Smaller images use
as many scales as fit (the first L weights, renormalised to sum to 1; L=1 is plain SSIM), which is
NOT comparable with the 5-scale figure; `ms_ssim_scales(h, w)` tells how many are used. Images with
a side below 11 px (no full window) give NaN.
"""
from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
WINDOW_SIZE = 11
WINDOW_SIGMA = 1.5
K1, K2 = 0.01, 0.03
DATA_RANGE = 255.0


def _as_array(image) -> np.ndarray:
    """PIL image or array (H, W[, C]) -> float64 array (H, W, C)."""
    a = np.asarray(image, dtype=np.float64)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3:
        raise ValueError(f"expected an image of shape (H, W) or (H, W, C), got {a.shape}")
    return a


def _pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    a, b = _as_array(a), _as_array(b)
    if a.shape != b.shape:
        raise ValueError(f"images differ in size: {a.shape} vs {b.shape}")
    return a, b


def mse(a, b) -> float:
    a, b = _pair(a, b)
    return float(np.mean((a - b) ** 2))


def psnr(a, b, max_value: float = DATA_RANGE) -> float:
    """PSNR in dB over all pixels and channels; inf for identical images."""
    err = mse(a, b)
    return math.inf if err == 0 else 10.0 * math.log10(max_value ** 2 / err)


def ms_ssim_scales(height: int, width: int) -> int:
    """Number of scales used for an image of this size (5 = the standard definition, 0 = too small)."""
    side = min(height, width)
    levels = 0
    while levels < len(MS_SSIM_WEIGHTS) and side > (WINDOW_SIZE - 1) * 2 ** levels:
        levels += 1
    return levels


def _gaussian_window() -> np.ndarray:
    x = np.arange(WINDOW_SIZE, dtype=np.float64) - WINDOW_SIZE // 2
    g = np.exp(-(x ** 2) / (2 * WINDOW_SIGMA ** 2))
    return g / g.sum()


def _blur(a: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable Gaussian filter over the last two axes, no padding ("valid")."""
    a = sliding_window_view(a, len(g), axis=-2) @ g
    return sliding_window_view(a, len(g), axis=-1) @ g


def _avg_pool2(a: np.ndarray) -> np.ndarray:
    """2x2 average pooling over the last two axes; an odd side gets one zero row/column in front,
    counted in the average (torch avg_pool2d with padding=side%2, as pytorch-msssim uses)."""
    pad = [(0, 0)] * (a.ndim - 2) + [(a.shape[-2] % 2, 0), (a.shape[-1] % 2, 0)]
    a = np.pad(a, pad)
    return (a[..., 0::2, 0::2] + a[..., 1::2, 0::2] + a[..., 0::2, 1::2] + a[..., 1::2, 1::2]) / 4


def _ssim_and_cs(x: np.ndarray, y: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean SSIM and mean contrast-structure term of (C, H, W) arrays, each of shape (C,)."""
    c1, c2 = (K1 * DATA_RANGE) ** 2, (K2 * DATA_RANGE) ** 2
    mu_x, mu_y, xx, yy, xy = _blur(np.stack([x, y, x * x, y * y, x * y]), g)
    var_x, var_y, cov = xx - mu_x ** 2, yy - mu_y ** 2, xy - mu_x * mu_y
    cs_map = (2 * cov + c2) / (var_x + var_y + c2)
    ssim_map = (2 * mu_x * mu_y + c1) / (mu_x ** 2 + mu_y ** 2 + c1) * cs_map
    return ssim_map.mean(axis=(1, 2)), cs_map.mean(axis=(1, 2))


def ms_ssim(a, b) -> float:
    """MS-SSIM in [0, 1] of two 8-bit images (PIL or uint8 arrays), averaged over channels."""
    a, b = _pair(a, b)
    levels = ms_ssim_scales(a.shape[0], a.shape[1])
    if levels == 0:
        return math.nan
    weights = np.array(MS_SSIM_WEIGHTS[:levels])
    if levels < len(MS_SSIM_WEIGHTS):
        weights = weights / weights.sum()  # (the standard 5 weights are used as published; they sum to 1.0001)
    x, y = a.transpose(2, 0, 1), b.transpose(2, 0, 1)
    g = _gaussian_window()
    terms = []
    for level in range(levels):
        ssim, cs = _ssim_and_cs(x, y, g)
        if level < levels - 1:
            terms.append(np.maximum(cs, 0.0))
            x, y = _avg_pool2(x), _avg_pool2(y)
    terms.append(np.maximum(ssim, 0.0))
    per_channel = np.prod(np.stack(terms) ** weights[:, None], axis=0)
    return float(per_channel.mean())


def msssim_db(value: float) -> float:
    """MS-SSIM on a dB scale, -10 log10(1 - v): spreads out values close to 1 (inf at v = 1)."""
    if value is None or math.isnan(value):
        return math.nan
    return math.inf if value >= 1.0 else -10.0 * math.log10(1.0 - value)


def detail_power(image, cutoff: float = 1 / 8) -> float:
    """Fine detail: the power of the image's luma (BT.601 weights) above `cutoff` cycles per pixel of radial
    frequency, after removing the mean and applying a 2-D Hann window. Compare two images of one size."""
    a = _as_array(image)
    y = a[..., 0] if a.shape[2] < 3 else a[..., 0] * 0.299 + a[..., 1] * 0.587 + a[..., 2] * 0.114
    h, w = y.shape
    spectrum = np.abs(np.fft.fft2((y - y.mean()) * np.outer(np.hanning(h), np.hanning(w)))) ** 2
    radius = np.hypot(np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :])
    return float(spectrum[radius > cutoff].sum())


def detail_ratio(decoded, original, cutoff: float = 1 / 8) -> float:
    """detail_power of the decoded image relative to the original's: 1.0 is as much fine detail as the
    original, below 1 smoother, above 1 more (noise or invented texture)."""
    _pair(decoded, original)
    return detail_power(decoded, cutoff) / detail_power(original, cutoff)
