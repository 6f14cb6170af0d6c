"""PSNR / SSIM / Y conversion against scikit-image on the same arrays, hand values and the published
bicubic Y-PSNR figures."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage import data as skdata
from skimage.color import rgb2ycbcr
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from course_lib.degradation import BicubicDownsample, BlurDownsample, gaussian_kernel, imresize, mod_crop, quantize_8bit
from course_lib.metrics import gradient_energy, lr_psnr, psnr, rgb_to_y, ssim


def _pair(shape=(3, 40, 48), seed=0, noise=0.05):
    g = torch.Generator().manual_seed(seed)
    hr = torch.rand(*shape, dtype=torch.float64, generator=g)
    hr = torch.nn.functional.avg_pool2d(hr.reshape(-1, 1, *shape[-2:]), 3, 1, 1).reshape(shape)  # some structure
    sr = (hr + noise * torch.randn(*shape, dtype=torch.float64, generator=g)).clamp(0, 1)
    return sr, hr


def _hwc(img: torch.Tensor) -> np.ndarray:
    return img.permute(1, 2, 0).numpy()


def test_rgb_to_y_matches_skimage():
    _, hr = _pair()
    expected = rgb2ycbcr(_hwc(hr))[..., 0]
    np.testing.assert_allclose(rgb_to_y(hr)[0].numpy(), expected, rtol=0, atol=1e-10)
    batch = torch.stack([hr, hr.flip(-1)])
    assert rgb_to_y(batch).shape == (2, 1, 40, 48)
    # black and white map to 16 and 235 (BT.601 studio range)
    assert rgb_to_y(torch.zeros(3, 1, 1)).item() == pytest.approx(16.0)
    assert rgb_to_y(torch.ones(3, 1, 1, dtype=torch.float64)).item() == pytest.approx(235.0)


@pytest.mark.parametrize("shave", [0, 4])
def test_psnr_matches_skimage(shave):
    sr, hr = _pair(seed=1)
    crop = (slice(shave, -shave or None),) * 2
    rgb_expected = peak_signal_noise_ratio(_hwc(hr)[crop], _hwc(sr)[crop], data_range=1.0)
    assert psnr(sr, hr, shave=shave, y_channel=False) == pytest.approx(rgb_expected, abs=1e-9)
    y_hr, y_sr = rgb2ycbcr(_hwc(hr))[crop][..., 0], rgb2ycbcr(_hwc(sr))[crop][..., 0]
    y_expected = peak_signal_noise_ratio(y_hr, y_sr, data_range=255)
    assert psnr(sr, hr, shave=shave) == pytest.approx(y_expected, abs=1e-9)
    # inputs on the 0-255 scale give the same numbers with data_range=255
    assert psnr(sr * 255, hr * 255, shave=shave, data_range=255) == pytest.approx(y_expected, abs=1e-9)


def test_psnr_by_hand():
    hr = torch.full((3, 16, 16), 0.5, dtype=torch.float64)
    d = 0.01
    assert psnr(hr + d, hr, y_channel=False) == pytest.approx(10 * math.log10(1 / d**2), abs=1e-9)
    # Y changes by d * (65.481 + 128.553 + 24.966) = 219 d on the 0-255 scale
    assert psnr(hr + d, hr) == pytest.approx(10 * math.log10(255**2 / (219 * d) ** 2), abs=1e-9)
    assert psnr(hr, hr) == math.inf


@pytest.mark.parametrize("shave", [0, 3])
def test_ssim_matches_skimage(shave):
    """skimage filters with mirrored borders, then averages the map over the interior, cropping the
    window radius (5 px) from each side: exactly MATLAB's 'valid' region, so the means agree."""
    sr, hr = _pair(seed=2, noise=0.1)
    crop = (slice(shave, -shave or None),) * 2
    options = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    y_hr = rgb2ycbcr(_hwc(hr))[crop][..., 0]
    y_sr = rgb2ycbcr(_hwc(sr))[crop][..., 0]
    expected_y = structural_similarity(y_hr, y_sr, data_range=255, **options)
    assert ssim(sr, hr, shave=shave) == pytest.approx(expected_y, abs=1e-10)
    expected_rgb = structural_similarity(_hwc(hr)[crop], _hwc(sr)[crop], data_range=1.0, channel_axis=2, **options)
    assert ssim(sr, hr, shave=shave, y_channel=False) == pytest.approx(expected_rgb, abs=1e-10)


def test_ssim_by_hand():
    sr, hr = _pair(seed=3)
    assert ssim(hr, hr) == pytest.approx(1.0, abs=1e-12)
    # constant images a, b: SSIM = (2ab + C1) / (a^2 + b^2 + C1) (variances vanish)
    a, b = 0.3, 0.5
    c1 = (0.01 * 1.0) ** 2
    value = ssim(torch.full((1, 20, 20), a, dtype=torch.float64), torch.full((1, 20, 20), b, dtype=torch.float64),
                 y_channel=False)
    assert value == pytest.approx((2 * a * b + c1) / (a**2 + b**2 + c1), abs=1e-12)


def test_batches_return_per_image_tensors():
    sr1, hr1 = _pair(seed=4)
    sr2, hr2 = _pair(seed=5, noise=0.2)
    sr, hr = torch.stack([sr1, sr2]), torch.stack([hr1, hr2])
    for metric in (psnr, ssim):
        values = metric(sr, hr, shave=2)
        assert isinstance(values, torch.Tensor) and values.shape == (2,)
        single = metric(sr1, hr1, shave=2)
        assert isinstance(single, float)
        assert values[0].item() == pytest.approx(single, abs=1e-12)
        assert values[1].item() == pytest.approx(metric(sr2, hr2, shave=2), abs=1e-12)
    assert psnr(sr.float(), hr.float(), shave=2)[0].item() == pytest.approx(psnr(sr1, hr1, shave=2), abs=1e-4)


# The bicubic down-then-up Y-PSNR figures of the reference document (photos in skimage.data)
FIGURES = [("astronaut", 2, 31.7127), ("astronaut", 4, 26.8439), ("chelsea", 2, 35.2586), ("chelsea", 4, 31.4758)]


@pytest.mark.parametrize("name, scale, expected", FIGURES)
def test_bicubic_y_psnr_figures(name, scale, expected):
    hr = mod_crop(torch.from_numpy(np.array(getattr(skdata, name)(), dtype=np.float64)).permute(2, 0, 1) / 255, scale)
    lr = quantize_8bit(imresize(hr, 1 / scale))
    sr = quantize_8bit(imresize(lr, scale))
    assert psnr(sr, hr, shave=scale) == pytest.approx(expected, abs=1e-3)
    assert psnr(sr[None], hr[None], shave=scale)[0].item() == pytest.approx(expected, abs=1e-3)


def test_lr_psnr():
    _, hr = _pair(shape=(3, 32, 32), seed=6)
    lr = imresize(hr, 0.25)
    assert lr_psnr(hr, lr, 4) == math.inf
    d = 0.02  # the bicubic weights sum to 1, so a constant offset passes through unchanged
    assert lr_psnr(hr + d, lr, 4) == pytest.approx(10 * math.log10(1 / d**2), abs=1e-8)
    assert lr_psnr(hr + d, lr, 4, y_channel=True) == pytest.approx(10 * math.log10(255**2 / (219 * d) ** 2), abs=1e-8)
    with pytest.raises(ValueError, match="scale=2 times lr"):
        lr_psnr(hr, lr, 2)
    with pytest.raises(ValueError, match="exactly one of scale"):
        lr_psnr(hr, lr)


def test_lr_psnr_takes_the_operator():
    """With an operator, LR-PSNR measures consistency under that A: exact (inf) for A's own output,
    and the bicubic default is BicubicDownsample."""
    _, hr = _pair(shape=(3, 32, 32), seed=7)
    blur = BlurDownsample(gaussian_kernel(8, 1.2).double(), 2, "symmetric")
    lr = blur.A(hr)
    assert lr_psnr(hr, lr, operator=blur) == math.inf
    assert lr_psnr(hr, lr, 2) < 45  # the bicubic operator is not the one that made lr
    assert lr_psnr(hr, imresize(hr, 0.5), operator=BicubicDownsample(2)) == math.inf
    with pytest.raises(ValueError, match="exactly one of scale"):
        lr_psnr(hr, lr, 2, operator=blur)
    with pytest.raises(TypeError, match="LinearOperator"):
        lr_psnr(hr, lr, operator=lambda x: x)
    with pytest.raises(ValueError, match="the operator maps sr"):
        lr_psnr(hr, lr[..., :-1], operator=blur)


def test_metric_errors():
    a = torch.rand(3, 32, 32)
    with pytest.raises(ValueError, match=r"sr \(3, 32, 32\) and hr \(3, 32, 30\)"):
        psnr(a, torch.rand(3, 32, 30))
    with pytest.raises(ValueError, match="shave=16"):
        psnr(a, a, shave=16)
    with pytest.raises(ValueError, match="shave=11"):
        ssim(a, a, shave=11)  # 10x10 left: smaller than the 11x11 window
    with pytest.raises(ValueError, match="shave"):
        psnr(a, a, shave=-1)
    with pytest.raises(ValueError, match="3 channels"):
        psnr(torch.rand(1, 32, 32), torch.rand(1, 32, 32))
    assert psnr(torch.rand(1, 32, 32), torch.rand(1, 32, 32), y_channel=False) > 0  # grayscale: RGB variant
    with pytest.raises(ValueError, match="3 \\(RGB\\) channels"):
        rgb_to_y(torch.rand(4, 8, 8))
    with pytest.raises(ValueError, match="non-finite"):
        ssim(a, torch.full_like(a, math.nan))
    with pytest.raises(ValueError, match=r"\(C, H, W\) or \(N, C, H, W\)"):
        psnr(a[0], a[0])
    with pytest.raises(TypeError, match="floating-point"):
        psnr(a.to(torch.uint8), a.to(torch.uint8))
    with pytest.raises(TypeError, match="torch.Tensor"):
        ssim(a.numpy(), a.numpy())
    with pytest.raises(ValueError, match="data_range"):
        psnr(a, a, data_range=0)


def _energy_numpy(a: np.ndarray) -> float:
    """Independent reference: numpy differences of a (C, H, W) array."""
    return float((np.diff(a, axis=-2) ** 2).mean() + (np.diff(a, axis=-1) ** 2).mean())


def test_gradient_energy_against_numpy():
    sr, hr = _pair()
    assert float(gradient_energy(hr)) == pytest.approx(_energy_numpy(hr.numpy()), rel=1e-12)
    # Y channel with a shave: skimage's rgb2ycbcr for the luma, numpy for the differences
    y = rgb2ycbcr(_hwc(hr))[..., 0][None, 4:-4, 4:-4]
    assert float(gradient_energy(hr, shave=4, y_channel=True)) == pytest.approx(_energy_numpy(y), rel=1e-9)
    # batches: one value per image, over any leading dimensions
    stack = torch.stack([sr, hr])
    per_image = gradient_energy(stack)
    assert per_image.shape == (2,)
    assert per_image.tolist() == pytest.approx([float(gradient_energy(sr)), float(gradient_energy(hr))])
    assert gradient_energy(stack[None]).shape == (1, 2)


def test_gradient_energy_falls_with_blur_and_rises_with_noise():
    _, hr = _pair(noise=0.0)
    blurred = torch.nn.functional.avg_pool2d(hr[None], 3, 1, 1)[0]
    sr, _ = _pair(noise=0.05)
    assert gradient_energy(blurred) < gradient_energy(hr) < gradient_energy(sr)
    assert float(gradient_energy(torch.full((3, 8, 8), 0.5))) == 0.0


def test_gradient_energy_errors():
    with pytest.raises(ValueError, match=r"\(\.\.\., C, H, W\)"):
        gradient_energy(torch.rand(8, 8))
    with pytest.raises(TypeError, match="floating-point"):
        gradient_energy(torch.zeros(3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="shave=3"):
        gradient_energy(torch.rand(3, 7, 7), shave=3)
    with pytest.raises(ValueError, match="shave"):
        gradient_energy(torch.rand(3, 8, 8), shave=-1)
    with pytest.raises(ValueError, match="3 \\(RGB\\) channels"):
        gradient_energy(torch.rand(1, 8, 8), y_channel=True)
