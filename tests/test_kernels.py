"""Blur kernels: closed forms, moments, the bicubic kernel against imresize, centring, DIV2KRK recipe."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from course_lib.degradation import (
    BlurDownsample,
    anisotropic_gaussian_kernel,
    bicubic_kernel,
    gaussian_kernel,
    imresize,
    kernel_centre_of_mass,
    kernel_covariance,
    kernel_target_centre,
    mean_div2krk_kernel,
    random_div2krk_kernel,
    shift_kernel_to_centre,
)


def _moments(kernel: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean (x, y) and covariance in (x = column, y = row) coordinates of a kernel summing to 1."""
    k = kernel.double().numpy()
    rows, cols = np.indices(k.shape)
    points = np.stack([cols.ravel(), rows.ravel()])
    weights = k.ravel()
    mean = points @ weights
    centred = points - mean[:, None]
    return mean, (centred * weights) @ centred.T


@pytest.mark.parametrize("size, sigma", [(7, 1.0), (8, 1.5), (1, 2.0)])
def test_gaussian_kernel_closed_form(size, sigma):
    c = (size - 1) / 2
    i, j = np.indices((size, size))
    expected = np.exp(-((i - c) ** 2 + (j - c) ** 2) / (2 * sigma**2))
    expected /= expected.sum()
    k = gaussian_kernel(size, sigma, dtype=torch.float64)
    np.testing.assert_allclose(k.numpy(), expected, rtol=1e-12, atol=1e-15)
    assert gaussian_kernel(size, sigma).dtype == torch.float32


def test_anisotropic_gaussian_has_the_requested_covariance():
    """Sampled on a wide grid, a Gaussian's discrete moments equal the continuous ones to ~1e-8
    (Poisson summation: the error is of order exp(-2 pi^2 sigma^2))."""
    sigma_x, sigma_y, theta = 3.0, 1.2, 0.7
    k = anisotropic_gaussian_kernel(41, sigma_x, sigma_y, theta, dtype=torch.float64)
    rotation = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    expected = rotation @ np.diag([sigma_x**2, sigma_y**2]) @ rotation.T
    mean, cov = _moments(k)
    assert k.sum().item() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(mean, [20.0, 20.0], atol=1e-10)
    np.testing.assert_allclose(cov, expected, atol=1e-6)


def test_anisotropic_orientation_and_special_cases():
    horizontal = anisotropic_gaussian_kernel(15, 3.0, 1.0, 0.0)
    _, cov = _moments(horizontal)
    assert cov[0, 0] > 8 * cov[1, 1]  # theta = 0: long axis along the columns' direction (x)
    torch.testing.assert_close(anisotropic_gaussian_kernel(15, 3.0, 1.0, math.pi / 2), horizontal.T)
    torch.testing.assert_close(anisotropic_gaussian_kernel(9, 1.3, 1.3, 0.4), gaussian_kernel(9, 1.3))
    torch.testing.assert_close(anisotropic_gaussian_kernel(10, 2.0, 1.0, 0.3), torch.flip(
        anisotropic_gaussian_kernel(10, 2.0, 1.0, 0.3), dims=(0, 1)))  # point-symmetric about the centre


def test_bicubic_kernel_x2_by_hand():
    """1D factor cubic((t - 3.5)/2)/2 at t = 0..7: Keys' kernel at +-1.75, +-1.25, +-0.75, +-0.25."""
    w = np.array([-0.01171875, -0.03515625, 0.11328125, 0.43359375, 0.43359375, 0.11328125, -0.03515625, -0.01171875])
    k = bicubic_kernel(2, dtype=torch.float64)
    np.testing.assert_allclose(k.numpy(), np.outer(w, w), rtol=0, atol=1e-16)


@pytest.mark.parametrize("scale", [1, 2, 3, 4])
def test_bicubic_kernel_structure(scale):
    k = bicubic_kernel(scale, dtype=torch.float64)
    assert k.shape == (4 * scale, 4 * scale)
    assert k.sum().item() == pytest.approx(1.0, abs=1e-14)
    torch.testing.assert_close(k, k.T)
    if scale % 2 == 0:  # centred in its array
        torch.testing.assert_close(k, torch.flip(k, dims=(0, 1)))
    else:  # 4s - 1 taps centred, a zero first row and column
        assert k[0].abs().max() == 0 and k[:, 0].abs().max() == 0
        torch.testing.assert_close(k[1:, 1:], torch.flip(k[1:, 1:], dims=(0, 1)))
    if scale == 1:
        assert k[2, 2] == 1 and k.abs().sum() == 1  # a delta: imresize at scale 1 is the identity


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bicubic_kernel_operator_matches_imresize_away_from_borders(scale):
    x = torch.rand(2, 3, 12 * scale, 10 * scale, dtype=torch.float64, generator=torch.Generator().manual_seed(scale))
    via_operator = BlurDownsample(bicubic_kernel(scale, dtype=torch.float64), scale).A(x)
    via_imresize = imresize(x, 1 / scale)
    m = 2  # the kernel reaches 2 LR pixels: beyond that, periodic and mirrored borders agree
    torch.testing.assert_close(via_operator[..., m:-m, m:-m], via_imresize[..., m:-m, m:-m], rtol=0, atol=1e-13)
    assert (via_operator - via_imresize).abs().max() > 1e-3  # but they do differ at the borders


def test_kernel_centre_of_mass_by_hand():
    k = torch.zeros(5, 7)
    k[2, 5] = 1.0
    torch.testing.assert_close(kernel_centre_of_mass(k), torch.tensor([2.0, 5.0], dtype=torch.float64))
    k[0, 1] = 3.0  # masses 1 at (2, 5) and 3 at (0, 1): (0.5, 2.0)
    torch.testing.assert_close(kernel_centre_of_mass(k), torch.tensor([0.5, 2.0], dtype=torch.float64))


def test_kernel_target_centre_values():
    # c = ceil((K - s)/2); target = c + (s - 1)/2
    assert kernel_target_centre(8, 2) == 3.5  # geometric centre of an even kernel
    assert kernel_target_centre(9, 3) == 4.0
    assert kernel_target_centre(13, 2) == 6.5  # odd kernel, even scale: half a pixel off its centre pixel
    assert kernel_target_centre(1, 2) == 0.5


def test_shift_delta_by_hand():
    """A delta at (1, 1) of a 6x6 kernel, scale 2, must move to 2.5: linear interpolation splits it
    into a 2x2 block of 1/4 at rows and columns 2, 3."""
    k = torch.zeros(6, 6, dtype=torch.float64)
    k[1, 1] = 1.0
    expected = torch.zeros(6, 6, dtype=torch.float64)
    expected[2:4, 2:4] = 0.25
    torch.testing.assert_close(shift_kernel_to_centre(k, 2), expected)


@pytest.mark.parametrize("size, scale", [(13, 2), (16, 4), (11, 3), (12, 3)])
def test_shift_moves_the_centre_of_mass_to_the_target(size, scale):
    g = torch.Generator().manual_seed(size)
    k = torch.zeros(size, size, dtype=torch.float64)
    k[3:8, 2:9] = torch.rand(5, 7, generator=g, dtype=torch.float64)
    shifted = shift_kernel_to_centre(k, scale)
    target = kernel_target_centre(size, scale)
    torch.testing.assert_close(kernel_centre_of_mass(shifted), torch.tensor([target, target], dtype=torch.float64))
    assert shifted.sum().item() == pytest.approx(k.sum().item(), rel=1e-12)
    assert shifted.shape == k.shape and shifted.min() >= 0
    centred = gaussian_kernel(size, 1.5, dtype=torch.float64)
    if size % 2 == scale % 2:  # already at the target: unchanged
        torch.testing.assert_close(shift_kernel_to_centre(centred, scale), centred)


def _linear_ramp_check(kernel: torch.Tensor, scale: int) -> None:
    """Blurring and subsampling a linear ramp gives the ramp's value at the LR pixel centre
    s*j + (s-1)/2 (MATLAB's LR grid) iff the centre of mass sits at the target."""
    m = math.ceil(max(kernel.shape) / scale) + 1  # LR margin free of the wrap-around
    n_lr = 2 * m + 6
    rows, cols = torch.meshgrid(*(torch.arange(n_lr * scale, dtype=torch.float64),) * 2, indexing="ij")
    lr = BlurDownsample(kernel.double(), scale).A(0.1 * cols + 0.07 * rows)
    centres = scale * torch.arange(n_lr, dtype=torch.float64) + (scale - 1) / 2
    expected = 0.1 * centres[None, :] + 0.07 * centres[:, None]
    torch.testing.assert_close(lr[m:-m, m:-m], expected[m:-m, m:-m], rtol=0, atol=1e-10)


def test_centred_kernels_are_aligned_with_the_lr_grid():
    _linear_ramp_check(gaussian_kernel(8, 1.5, dtype=torch.float64), 2)
    _linear_ramp_check(anisotropic_gaussian_kernel(12, 2.0, 1.0, 0.5, dtype=torch.float64), 4)
    _linear_ramp_check(gaussian_kernel(9, 1.5, dtype=torch.float64), 3)
    _linear_ramp_check(shift_kernel_to_centre(gaussian_kernel(13, 1.5, dtype=torch.float64), 2), 2)
    with pytest.raises(AssertionError):  # an odd kernel at scale 2 is half a pixel off
        _linear_ramp_check(gaussian_kernel(13, 1.5, dtype=torch.float64), 2)


@pytest.mark.parametrize("scale", [2, 4])
def test_random_div2krk_kernel(scale):
    k1 = random_div2krk_kernel(scale, 25, torch.Generator().manual_seed(7))
    k2 = random_div2krk_kernel(scale, 25, torch.Generator().manual_seed(7))
    k3 = random_div2krk_kernel(scale, 25, torch.Generator().manual_seed(8))
    torch.testing.assert_close(k1, k2, rtol=0, atol=0)
    assert (k1 - k3).abs().max() > 1e-4
    assert k1.shape == (25, 25) and k1.dtype == torch.float32 and k1.min() >= 0
    assert k1.sum().item() == pytest.approx(1.0, abs=1e-6)
    k64 = random_div2krk_kernel(scale, 25, torch.Generator().manual_seed(7), dtype=torch.float64)
    torch.testing.assert_close(k64.float(), k1, rtol=0, atol=0)
    _linear_ramp_check(k64, scale)


def test_random_div2krk_kernel_variances_follow_the_recipe():
    """Eigen-variances ~ U(0.175 s, 2.5 s): the kernels' covariance eigenvalues stay within that range
    (up to the pixel noise, the <= 1/4 px^2 of the interpolating shift and truncation) and spread over it."""
    scale = 2
    eigenvalues = []
    for seed in range(12):
        k = random_div2krk_kernel(scale, 31, torch.Generator().manual_seed(seed), dtype=torch.float64)
        eigenvalues.extend(np.linalg.eigvalsh(_moments(k)[1]))
    eigenvalues = np.array(eigenvalues)
    assert eigenvalues.min() > 0.175 * scale * 0.7
    assert eigenvalues.max() < 2.5 * scale * 1.3 + 0.25
    assert eigenvalues.max() > 2.5 * scale * 0.6 and eigenvalues.min() < 0.175 * scale * 2.5


def test_kernel_errors():
    with pytest.raises(ValueError, match="size"):
        gaussian_kernel(0, 1.0)
    with pytest.raises(ValueError, match="size"):
        gaussian_kernel(2.5, 1.0)
    with pytest.raises(ValueError, match="sigma"):
        gaussian_kernel(5, 0.0)
    with pytest.raises(ValueError, match="sigma_y"):
        anisotropic_gaussian_kernel(5, 1.0, math.nan, 0.0)
    with pytest.raises(ValueError, match="theta"):
        anisotropic_gaussian_kernel(5, 1.0, 1.0, math.inf)
    with pytest.raises(ValueError, match="scale"):
        bicubic_kernel(0)
    with pytest.raises(TypeError, match="scale"):
        bicubic_kernel(2.0)
    with pytest.raises(ValueError, match="2D"):
        kernel_centre_of_mass(torch.ones(3))
    with pytest.raises(ValueError, match="non-finite"):
        shift_kernel_to_centre(torch.full((3, 3), math.nan), 2)
    with pytest.raises(ValueError, match="sums to zero"):
        kernel_centre_of_mass(torch.zeros(3, 3))
    with pytest.raises(TypeError, match="generator"):
        random_div2krk_kernel(2, 13, generator=0)


def test_kernel_covariance_of_gaussians_and_against_numpy():
    sx, sy, theta = 1.5, 3.0, 0.3
    k = anisotropic_gaussian_kernel(41, sx, sy, theta, dtype=torch.float64)
    cov = kernel_covariance(k)
    # sigma_x lies along (cos t, sin t) in (col, row) coordinates, i.e. (sin t, cos t) in (row, col)
    axes = torch.tensor([[math.sin(theta), math.cos(theta)], [math.cos(theta), -math.sin(theta)]],
                        dtype=torch.float64).T
    expected = axes @ torch.diag(torch.tensor([sx**2, sy**2], dtype=torch.float64)) @ axes.T
    torch.testing.assert_close(cov, expected, atol=1e-6, rtol=1e-6)
    # an irregular kernel: numpy's weighted covariance of the pixel coordinates
    k = torch.rand(7, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    rows, cols = np.meshgrid(np.arange(7), np.arange(9), indexing="ij")
    reference = np.cov(np.stack([rows.ravel(), cols.ravel()]), aweights=k.numpy().ravel(), bias=True)
    np.testing.assert_allclose(kernel_covariance(k).numpy(), reference, rtol=1e-12)
    # size, not brightness: scaling the kernel changes nothing
    torch.testing.assert_close(kernel_covariance(3 * k), kernel_covariance(k))
    with pytest.raises(ValueError, match="sums to zero"):
        kernel_covariance(torch.zeros(5, 5))


def test_mean_div2krk_kernel_is_the_seeded_average_and_round():
    mean = mean_div2krk_kernel(2, 21, samples=300, seed=3, dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    by_hand = torch.stack([random_div2krk_kernel(2, 21, g, dtype=torch.float64) for _ in range(300)]).mean(0)
    torch.testing.assert_close(mean, by_hand / by_hand.sum())
    variances = torch.linalg.eigvalsh(kernel_covariance(mean))
    assert float(variances[1] / variances[0]) < 1.1  # random angles average out
    # the mean eigen-variance of U(0.35, 5) is 2.675 per axis; the multiplicative noise adds a little
    assert 2.675 < float(variances.mean()) < 2.675 * 1.1
    torch.testing.assert_close(kernel_centre_of_mass(mean), torch.tensor([10.5, 10.5], dtype=torch.float64),
                               atol=0.05, rtol=0)
    with pytest.raises(ValueError, match="samples"):
        mean_div2krk_kernel(2, samples=0)
