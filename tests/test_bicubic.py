"""MATLAB-compatible bicubic resize: published MATLAB-convention values, hand-derived facts, errors.

The reference arrays and photo figures come from an independent implementation of MATLAB's
``imresize`` that was validated against MATLAB outputs; values are given to 6 decimals (4 for the
photo figures), hence the tolerances.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage import data as skdata
from skimage.color import rgb2ycbcr
from skimage.metrics import peak_signal_noise_ratio
from sklearn.datasets import load_sample_image

from course_lib.degradation import bicubic_downscale, cubic, imresize, mod_crop, quantize_8bit

# ---------------------------------------------------------------------------- reference arrays
RAMP_HALF = [
    [0.064174, 0.09654, 0.128658, 0.161024],
    [0.323103, 0.355469, 0.387587, 0.419953],
    [0.580047, 0.612413, 0.644531, 0.676897],
    [0.838976, 0.871342, 0.90346, 0.935826],
]
RAMP_QUARTER = [[0.196568, 0.263997], [0.736003, 0.803432]]
DELTA_HALF = [
    [0.000412, -0.003983, -0.015244, 0.001236],
    [-0.005081, 0.049118, 0.188004, -0.015244],
    [-0.001328, 0.012833, 0.049118, -0.003983],
    [0.000137, -0.001328, -0.005081, 0.000412],
]
CHECKER_X2 = [
    [-0.205078, 0.175293, 0.936035, 0.908203, 0.091797, 0.063965, 0.824707, 1.205078],
    [0.175293, 0.350464, 0.700806, 0.687988, 0.312012, 0.299194, 0.649536, 0.824707],
    [0.936035, 0.700806, 0.230347, 0.247559, 0.752441, 0.769653, 0.299194, 0.063965],
    [0.908203, 0.687988, 0.247559, 0.263672, 0.736328, 0.752441, 0.312012, 0.091797],
    [0.091797, 0.312012, 0.752441, 0.736328, 0.263672, 0.247559, 0.687988, 0.908203],
    [0.063965, 0.299194, 0.769653, 0.752441, 0.247559, 0.230347, 0.700806, 0.936035],
    [0.824707, 0.649536, 0.299194, 0.312012, 0.687988, 0.700806, 0.350464, 0.175293],
    [1.205078, 0.824707, 0.063965, 0.091797, 0.908203, 0.936035, 0.175293, -0.205078],
]
CHECKER_X4_ROW0 = [
    -0.261841, -0.184692, -0.005081, 0.363785, 0.780869, 1.072586, 1.064148, 0.726624,
    0.273376, -0.064148, -0.072586, 0.219131, 0.636215, 1.005081, 1.184692, 1.261841,
]
ATOL = 1e-6  # the references are rounded to 6 decimals


def _ramp():
    return torch.arange(64, dtype=torch.float64).reshape(1, 8, 8) / 63


def _checkerboard():
    i, j = np.indices((4, 4))
    return torch.from_numpy(((i + j) % 2).astype(np.float64))[None]


def _close(actual: torch.Tensor, expected, atol=ATOL):
    np.testing.assert_allclose(actual.numpy(), np.asarray(expected), rtol=0, atol=atol)


def test_ramp_downscale_matches_reference():
    _close(imresize(_ramp(), 0.5)[0], RAMP_HALF)
    _close(imresize(_ramp(), 0.25)[0], RAMP_QUARTER)


def test_delta_downscale_matches_reference():
    delta = torch.zeros(1, 8, 8, dtype=torch.float64)
    delta[0, 3, 4] = 1.0
    _close(imresize(delta, 0.5)[0], DELTA_HALF)


def test_checkerboard_upscale_matches_reference():
    _close(imresize(_checkerboard(), 2)[0], CHECKER_X2)
    _close(imresize(_checkerboard(), 4)[0, 0], CHECKER_X4_ROW0)


def test_float32_and_output_shape_give_the_same_values():
    _close(imresize(_ramp().float(), 0.5)[0].double(), RAMP_HALF, atol=1e-5)
    _close(imresize(_checkerboard(), output_shape=(8, 8))[0], CHECKER_X2)


# ---------------------------------------------------------------------------- photo figures
def _photo(name: str) -> torch.Tensor:
    array = load_sample_image("china.jpg") if name == "china" else getattr(skdata, name)()
    return torch.from_numpy(np.array(array, dtype=np.float64)).permute(2, 0, 1)  # [0, 255]


# (photo, scale, crop, Y-PSNR dB, LR mean, LR[0, 0]) from the reference document
PHOTO_FIGURES = [
    ("astronaut", 2, (512, 512), 31.7127, 114.6035, (145, 139, 147)),
    ("astronaut", 4, (512, 512), 26.8439, 114.6219, (153, 149, 157)),
    ("coffee", 2, (400, 600), 30.5966, 98.6151, (21, 13, 8)),
    ("coffee", 4, (400, 600), 27.2921, 98.6169, (21, 13, 8)),
    ("chelsea", 2, (300, 450), 35.2586, 115.2784, (144, 121, 105)),
    ("chelsea", 4, (300, 448), 31.4758, 115.2237, (145, 122, 107)),
    ("china", 2, (426, 640), 24.3495, 143.9108, (173, 200, 230)),
    ("china", 4, (424, 640), 22.4249, 144.3372, (174, 201, 231)),
]


@pytest.mark.parametrize("name, scale, crop, psnr_db, lr_mean, lr_00", PHOTO_FIGURES)
def test_photo_down_up_figures(name, scale, crop, psnr_db, lr_mean, lr_00):
    hr = mod_crop(_photo(name), scale)[:, : crop[0], : crop[1]] / 255
    assert tuple(hr.shape[-2:]) == crop
    lr = bicubic_downscale(hr, scale, quantize=True)
    sr = quantize_8bit(imresize(lr, scale))
    assert (lr * 255).mean().item() == pytest.approx(lr_mean, abs=1e-4)
    assert (lr[:, 0, 0] * 255).round().tolist() == list(lr_00)
    # Y-PSNR computed independently of course_lib.metrics: scikit-image's BT.601 Y and PSNR
    y_sr = rgb2ycbcr(sr.permute(1, 2, 0).numpy())[scale:-scale, scale:-scale, 0]
    y_hr = rgb2ycbcr(hr.permute(1, 2, 0).numpy())[scale:-scale, scale:-scale, 0]
    assert peak_signal_noise_ratio(y_hr, y_sr, data_range=255) == pytest.approx(psnr_db, abs=1e-3)


# ---------------------------------------------------------------------------- hand-derived facts
def test_cubic_kernel_values():
    x = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 2.5])
    expected = [1.0, 0.5625, 0.0, -0.0625, 0.0, 0.0]  # Keys (1981) with a = -0.5, by hand
    np.testing.assert_allclose(cubic(x), expected, atol=1e-15)
    np.testing.assert_allclose(cubic(-x), expected, atol=1e-15)
    torch.testing.assert_close(cubic(torch.from_numpy(x)), torch.tensor(expected, dtype=torch.float64))


def test_cubic_partition_of_unity():
    t = np.random.default_rng(0).uniform(0, 1, size=50)
    total = sum(cubic(t - n) for n in range(-3, 4))
    np.testing.assert_allclose(total, 1.0, atol=1e-14)


def test_scale_one_is_identity():
    x = torch.rand(2, 3, 7, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(imresize(x, 1), x, rtol=0, atol=1e-14)


@pytest.mark.parametrize("scale", [0.5, 1 / 3, 0.37, 2, 3.5, (0.5, 1.7)])
def test_constant_image_stays_constant(scale):
    x = torch.full((3, 12, 15), 0.3, dtype=torch.float64)
    out = imresize(x, scale)
    torch.testing.assert_close(out, torch.full_like(out, 0.3), rtol=0, atol=1e-14)


@pytest.mark.parametrize("scale", [0.5, 1 / 3, 0.25, 1.7, 3.0])
def test_linear_ramp_follows_matlab_coordinate_mapping(scale):
    """Away from the borders a linear ramp is reproduced at u = x/scale + 0.5(1 - 1/scale) (1-based).

    Exact when the sampled kernel is symmetric about u: upscaling (Keys' kernel reproduces linear
    functions) and downscaling by an integer factor."""
    n = 40
    ramp = torch.arange(n, dtype=torch.float64).repeat(1, 3, 1)  # value = 0-based column index
    out = imresize(ramp, (1.0, scale))[0, 0]
    x = torch.arange(1, out.shape[0] + 1, dtype=torch.float64)
    u = x / scale + 0.5 * (1 - 1 / scale) - 1  # 0-based input coordinate
    reach = 2 / min(scale, 1) + 1
    interior = (u > reach) & (u < n - 1 - reach)
    assert interior.sum() >= 5
    torch.testing.assert_close(out[interior], u[interior], rtol=0, atol=1e-12)


def test_no_antialias_halving_uses_plain_cubic_weights():
    x = torch.rand(1, 1, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    out = imresize(x, (1.0, 0.5), antialias=False)[0, 0]
    v = x[0, 0]
    # output j sits at 2j + 0.5: weights cubic(1.5), cubic(0.5), cubic(0.5), cubic(1.5)
    expected = torch.stack([-0.0625 * v[2 * j - 1] + 0.5625 * (v[2 * j] + v[2 * j + 1]) - 0.0625 * v[2 * j + 2]
                            for j in range(1, 7)])
    torch.testing.assert_close(out[1:7], expected, rtol=0, atol=1e-14)


def test_symmetric_boundary():
    """Upscaling x2, output 0 sits at 0-based u = -0.25; its taps -2, -1 are mirrored to 1, 0."""
    v = torch.tensor([[[0.0, 1.0, 4.0, 9.0, 16.0, 25.0]]], dtype=torch.float64)
    out = imresize(v, (1.0, 2.0))[0, 0, 0]
    u = -0.25
    positions = np.array([-2, -1, 0, 1])
    weights = cubic(u - positions)
    values = np.array([1.0, 0.0, 0.0, 1.0])  # x[-2] = x[1], x[-1] = x[0], x[0], x[1]
    assert out.item() == pytest.approx(float((weights * values).sum() / weights.sum()), abs=1e-14)


def test_output_size_is_matlab_ceil():
    x = torch.rand(1, 7, 9)
    assert imresize(x, 0.5).shape == (1, 4, 5)
    assert imresize(torch.rand(1, 300, 30), 1 / 3).shape == (1, 100, 10)
    assert imresize(x, (2, 0.5)).shape == (1, 14, 5)
    assert imresize(x, output_shape=(3, 20)).shape == (1, 3, 20)


def test_batch_rank_dtype_and_gradient():
    g = torch.Generator().manual_seed(2)
    batch = torch.rand(2, 3, 10, 12, generator=g)
    out = imresize(batch, 0.5)
    assert out.shape == (2, 3, 5, 6) and out.dtype == torch.float32
    torch.testing.assert_close(out[1], imresize(batch[1], 0.5))
    x = torch.rand(1, 6, 5, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: imresize(t, 0.5), (x,))
    assert torch.autograd.gradcheck(lambda t: imresize(t, 1.5), (x,))


def test_no_clamping_inside_imresize():
    assert imresize(_checkerboard(), 2).min() < 0  # the negative lobes survive


# ---------------------------------------------------------------------------- helpers
def test_bicubic_downscale_and_quantize():
    x = torch.rand(3, 16, 24, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(bicubic_downscale(x, 4), imresize(x, 0.25))
    q = bicubic_downscale(x, 2, quantize=True)
    levels = q * 255
    torch.testing.assert_close(levels, levels.round(), rtol=0, atol=1e-4)
    assert q.min() >= 0 and q.max() <= 1
    # MATLAB's uint8 rounds halves away from zero: 0.5/255 -> 1/255
    values = torch.tensor([[[0.5 / 255, 1.2, -0.1]]], dtype=torch.float64)
    assert quantize_8bit(values).tolist() == [[[1 / 255, 1.0, 0.0]]]
    with pytest.raises(ValueError, match="17x24 is not divisible by scale 2"):
        bicubic_downscale(torch.rand(3, 17, 24), 2)


def test_mod_crop():
    x = torch.rand(2, 3, 17, 22)
    assert mod_crop(x, 4).shape == (2, 3, 16, 20)
    torch.testing.assert_close(mod_crop(x, 4), x[..., :16, :20])
    assert mod_crop(x, 1).shape == x.shape
    with pytest.raises(ValueError, match="smaller than scale"):
        mod_crop(torch.rand(3, 3, 8), 4)


# ---------------------------------------------------------------------------- errors
@pytest.mark.parametrize("scale", [0, -0.5, math.nan, math.inf])
def test_bad_scale_value(scale):
    with pytest.raises(ValueError, match="scale"):
        imresize(torch.rand(3, 8, 8), scale)


@pytest.mark.parametrize("scale", ["2", True, None])
def test_bad_scale_type(scale):
    with pytest.raises((TypeError, ValueError), match="scale"):
        imresize(torch.rand(3, 8, 8), scale)


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"\(C, H, W\) or \(N, C, H, W\)"):
        imresize(torch.rand(8, 8), 0.5)
    with pytest.raises(ValueError, match=r"\(C, H, W\) or \(N, C, H, W\)"):
        imresize(torch.rand(1, 1, 1, 8, 8), 0.5)
    with pytest.raises(TypeError, match="floating-point"):
        imresize(torch.zeros(3, 8, 8, dtype=torch.uint8), 0.5)
    with pytest.raises(TypeError, match="torch.Tensor"):
        imresize(np.zeros((3, 8, 8)), 0.5)
    with pytest.raises(ValueError, match="exactly one"):
        imresize(torch.rand(3, 8, 8), 0.5, output_shape=(4, 4))
    with pytest.raises(ValueError, match="output_shape"):
        imresize(torch.rand(3, 8, 8), output_shape=(0, 4))
    with pytest.raises(TypeError, match="positive int"):
        bicubic_downscale(torch.rand(3, 8, 8), 2.0)
    with pytest.raises(ValueError, match="positive int"):
        mod_crop(torch.rand(3, 8, 8), 0)
