"""Known-answer tests for the benchmark metrics (PSNR, MS-SSIM) and BD-rate."""
import math
import warnings

import numpy as np
import pytest

from vqcodec.bench.bdrate import BDRateWarning, bd_rate, bd_rate_with_overlap, pchip_integral
from vqcodec.bench.metrics import ms_ssim, ms_ssim_scales, msssim_db, psnr


def structured_image(h, w, seed=0, noise=8.0):
    """Gradients, stripes and a square plus noise: enough structure for SSIM to mean something."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:h, :w]
    img = np.stack([x * 255 / w, y * 255 / h, 128 + 100 * np.sin(x / 5.0) * np.cos(y / 7.0)], axis=-1)
    img[h // 4: h // 2, w // 4: w // 2] = (30, 200, 90)
    return np.clip(img + rng.normal(0, noise, img.shape), 0, 255).astype(np.uint8)


def degrade(img, sigma, seed=1):
    rng = np.random.default_rng(seed)
    return np.clip(img + rng.normal(0, sigma, img.shape), 0, 255).astype(np.uint8)


# --- PSNR -------------------------------------------------------------------------------------

def test_psnr_of_known_mse():
    a = np.full((16, 24, 3), 100, np.uint8)
    assert psnr(a, a + 5) == pytest.approx(10 * math.log10(255 ** 2 / 25))  # MSE 25
    b = a.copy()
    b[:8] += 10  # half the pixels off by 10: MSE 50
    assert psnr(a, b) == pytest.approx(10 * math.log10(255 ** 2 / 50))


def test_psnr_is_computed_in_float_not_uint8():
    a = np.zeros((4, 4, 3), np.uint8)
    b = np.full((4, 4, 3), 255, np.uint8)  # uint8 arithmetic would wrap around
    assert psnr(a, b) == pytest.approx(0.0)


def test_psnr_identical_is_inf_and_shapes_must_match():
    a = structured_image(20, 30)
    assert psnr(a, a) == math.inf
    with pytest.raises(ValueError):
        psnr(a, a[:-1])


# --- MS-SSIM ----------------------------------------------------------------------------------

def test_ms_ssim_of_identical_images_is_one():
    a = structured_image(192, 200)
    assert ms_ssim(a, a) == pytest.approx(1.0, abs=1e-12)


def test_ms_ssim_falls_with_distortion():
    a = structured_image(176, 176)
    values = [ms_ssim(a, degrade(a, s)) for s in (2, 8, 30)]
    assert 1 > values[0] > values[1] > values[2] > 0


def test_ms_ssim_db():
    assert msssim_db(0.9) == pytest.approx(10.0)
    assert msssim_db(0.99) == pytest.approx(20.0)
    assert msssim_db(1.0) == math.inf
    assert math.isnan(msssim_db(math.nan))


def test_small_images_use_fewer_scales_and_tiny_ones_give_nan():
    assert ms_ssim_scales(161, 500) == 5
    assert ms_ssim_scales(160, 192) == 4
    assert ms_ssim_scales(11, 11) == 1
    assert ms_ssim_scales(10, 64) == 0
    a = structured_image(160, 192)
    assert 0 < ms_ssim(a, degrade(a, 10)) < 1
    tiny = structured_image(8, 8)
    assert math.isnan(ms_ssim(tiny, tiny))


@pytest.mark.parametrize("kind, h, w, sigma", [("structured", 161, 162, 10), ("structured", 163, 171, 25),
                                                ("noise", 162, 165, 40)])
def test_ms_ssim_matches_pytorch_msssim(kind, h, w, sigma):
    """Even and odd sizes (odd sides exercise the padded average pooling); the reference computes in
    float64 too, but with a float32 window, hence the small tolerance."""
    torch = pytest.importorskip("torch")
    reference = pytest.importorskip("pytorch_msssim")
    if kind == "noise":
        a = np.random.default_rng(h).integers(0, 256, (h, w, 3), dtype=np.uint8)
    else:
        a = structured_image(h, w, seed=h)
    b = degrade(a, sigma, seed=w)

    def t(x):
        return torch.from_numpy(x).permute(2, 0, 1)[None].double().contiguous()

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only add contention on busy CI machines
    try:
        expected = reference.ms_ssim(t(a), t(b), data_range=255).item()
    finally:
        torch.set_num_threads(threads)
    assert ms_ssim(a, b) == pytest.approx(expected, abs=1e-5)


# --- BD-rate ----------------------------------------------------------------------------------

RATES = [0.1, 0.2, 0.4, 0.8, 1.6]
PSNRS = [27.0, 30.0, 33.5, 36.0, 39.0]


def test_bd_rate_identical_curves_is_zero():
    assert bd_rate(RATES, PSNRS, RATES, PSNRS) == pytest.approx(0.0, abs=1e-9)


def test_bd_rate_half_and_double_rate():
    assert bd_rate(RATES, PSNRS, [r / 2 for r in RATES], PSNRS) == pytest.approx(-50.0)
    assert bd_rate(RATES, PSNRS, [r * 2 for r in RATES], PSNRS) == pytest.approx(100.0)


def test_bd_rate_ignores_point_order_and_sampling():
    # the same smooth curve (rate = exp(q / 4)) sampled at different qualities: close to 0 %
    qa, qt = np.linspace(26, 40, 6), np.linspace(27, 39, 9)
    value = bd_rate(np.exp(qa / 4)[::-1], qa[::-1], np.exp(qt / 4), qt)
    assert abs(value) < 0.5


def test_bd_rate_small_overlap_warns_and_no_overlap_raises():
    with pytest.warns(BDRateWarning):
        bd_rate(RATES, PSNRS, RATES, [p + 10 for p in PSNRS])  # overlap 2 dB of 12
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bd_rate(RATES, PSNRS, RATES, [p + 1 for p in PSNRS])  # large overlap: no warning
    with pytest.raises(ValueError):
        bd_rate(RATES, PSNRS, RATES, [p + 20 for p in PSNRS])
    _, overlap = bd_rate_with_overlap(RATES, PSNRS, RATES, [p + 6 for p in PSNRS])
    assert overlap == pytest.approx(0.5)


@pytest.mark.parametrize("rates, quals", [([0.1], [30.0]), ([0.1, 0.2], [30.0]), ([0.0, 0.2], [30.0, 32.0]),
                                          ([0.1, 0.2], [30.0, 30.0]), ([0.1, math.nan], [30.0, 32.0])])
def test_bd_rate_rejects_bad_curves(rates, quals):
    with pytest.raises(ValueError):
        bd_rate(RATES, PSNRS, rates, quals)


def test_pchip_integral_of_a_line_is_exact():
    x = np.array([0.0, 1.0, 3.0, 4.0])
    assert pchip_integral(x, 2 * x + 1, 0.5, 3.5) == pytest.approx(  # integral of 2x+1 over [0.5, 3.5]
        (3.5 ** 2 + 3.5) - (0.5 ** 2 + 0.5))


def test_pchip_integral_matches_scipy():
    interpolate = pytest.importorskip("scipy.interpolate")
    rng = np.random.default_rng(0)
    for n in (2, 3, 5, 8):
        x = np.sort(rng.uniform(20, 40, n))
        y = rng.normal(0, 1, n)
        lo, hi = x[0] + 0.1 * (x[-1] - x[0]), x[-1] - 0.2 * (x[-1] - x[0])
        expected = interpolate.PchipInterpolator(x, y).integrate(lo, hi)
        assert pchip_integral(x, y, lo, hi) == pytest.approx(expected, abs=1e-12)


def test_detail_ratio_sees_blur_and_noise():
    from PIL import Image, ImageFilter

    from vqcodec.bench.metrics import detail_power, detail_ratio
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 256, (64, 80, 3), dtype=np.uint8))
    assert detail_ratio(photo, photo) == 1.0
    assert detail_ratio(photo.filter(ImageFilter.GaussianBlur(2)), photo) < 0.05
    flat = Image.new("RGB", (80, 64), (90, 120, 200))
    assert detail_power(flat) < 1e-9
    # a sinusoid of 1/4 cycle per pixel is all detail; one of 1/16 has none above 1/8
    x = np.arange(80)[None, :].repeat(64, 0)
    fine, coarse = (np.uint8(128 + 100 * np.sin(2 * np.pi * x * f)) for f in (1 / 4, 1 / 16))
    assert detail_power(coarse) < 1e-3 * detail_power(fine)
