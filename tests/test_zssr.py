"""Kernel-aware SR: the closed-form Wiener/Tikhonov solution, back-projection, ZSSR training pairs."""

import numpy as np
import pytest
import scipy.ndimage
import torch

from course_lib import zssr as Z
from course_lib.degradation import BlurDownsample, gaussian_kernel


def smooth_image(size=32, channels=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, channels, size // 4, size // 4, generator=g)
    return torch.nn.functional.interpolate(x, size=(size, size), mode="bicubic", align_corners=False)[0].clamp(0, 1)


def test_wiener_sr_matches_the_dense_regularised_least_squares_solution():
    """x* = argmin ||A x - y||^2 + mu (||Dx x||^2 + ||Dy x||^2 + eps ||x||^2), solved with dense matrices."""
    n, scale, mu, eps = 16, 2, 5e-3, 1e-2
    kernel = gaussian_kernel(7, 1.1).double()
    kernel = kernel / kernel.sum()
    y = torch.rand(1, n // scale, n // scale, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    A = BlurDownsample(kernel, scale).matrix((n, n))
    shift = torch.roll(torch.eye(n, dtype=torch.float64), 1, dims=1)  # periodic forward difference
    d1 = shift - torch.eye(n, dtype=torch.float64)
    Dx = torch.kron(torch.eye(n, dtype=torch.float64), d1)  # along columns (row-major flattening)
    Dy = torch.kron(d1, torch.eye(n, dtype=torch.float64))
    M = A.T @ A + mu * (Dx.T @ Dx + Dy.T @ Dy + eps * torch.eye(n * n, dtype=torch.float64))
    expected = torch.linalg.solve(M, A.T @ y.flatten()).reshape(1, n, n)
    out = Z.wiener_sr(y, kernel, scale, mu=mu, eps=eps, pad=0, clamp=False)
    torch.testing.assert_close(out, expected, rtol=1e-8, atol=1e-10)


def test_wiener_sr_is_best_with_the_true_kernel():
    from course_lib.data import load_photo
    from course_lib.metrics import psnr

    hr = load_photo("astronaut")[:, 100:228, 180:308]
    truth = gaussian_kernel(14, 1.6)
    lr = Z.degrade_with_kernel(hr, truth, 2)
    scores = {s: psnr(Z.wiener_sr(lr, gaussian_kernel(14, s), 2), hr, shave=4) for s in (0.8, 1.6, 2.6)}
    assert scores[1.6] > scores[0.8] + 0.5 and scores[1.6] > scores[2.6] + 0.5, scores


def test_degrade_with_kernel_matches_scipy_correlate():
    x = torch.rand(3, 30, 34, dtype=torch.float64)
    k = torch.rand(13, 13, dtype=torch.float64)
    k = k / k.sum()
    expected = np.stack([scipy.ndimage.correlate(c.numpy(), k.numpy(), mode="reflect")[::2, ::2] for c in x])
    torch.testing.assert_close(Z.degrade_with_kernel(x, k, 2), torch.from_numpy(expected))


def test_back_projection_makes_the_result_consistent_with_the_lr_image():
    hr = smooth_image(48)
    k = gaussian_kernel(14, 1.3)
    lr = Z.degrade_with_kernel(hr, k, 2)
    start = torch.nn.functional.interpolate(lr[None], scale_factor=2, mode="nearest")[0]

    def residual(x):
        return (Z.degrade_with_kernel(x, k, 2) - lr).norm().item()

    after = Z.back_project(start, lr, k, 2, iterations=8)
    assert residual(after) < 0.2 * residual(start)


def test_fathers_are_degraded_with_the_given_kernel():
    lr = smooth_image(40)
    k = gaussian_kernel(14, 1.0)
    pairs = Z.make_fathers(lr, k, 2, scales=(1.0, 0.8))
    assert len(pairs) == 16
    up, father = pairs[0]
    torch.testing.assert_close(father, lr)
    from course_lib.degradation import imresize
    torch.testing.assert_close(up, imresize(Z.degrade_with_kernel(lr, k, 2), 2.0))
    up5, father5 = pairs[5]  # transform 5: a quarter turn and a mirror of the same father
    assert father5.shape == father.shape and not torch.equal(father5, father)
    assert all(u.shape == f.shape for u, f in pairs)


def test_zssr_trains_and_returns_an_image_of_the_right_size():
    lr = smooth_image(24)
    config = Z.ZSSRConfig(steps=40, channels=8, layers=3, crop_size=16, batch_size=2, father_scales=(1.0,))
    sr, history = Z.zssr(lr, gaussian_kernel(14, 1.0), 2, config=config, progress=False, device="cpu")
    assert sr.shape == (3, 48, 48) and sr.min() >= 0 and sr.max() <= 1
    losses = history.logs["loss"]
    assert len(losses) == 40 and np.mean(losses[-8:]) < np.mean(losses[:8])
    again, _ = Z.zssr(lr, gaussian_kernel(14, 1.0), 2, config=config, progress=False, device="cpu")
    torch.testing.assert_close(again, sr)  # deterministic given the seed


def test_bad_inputs():
    lr = smooth_image(24)
    with pytest.raises(ValueError, match="scale"):
        Z.wiener_sr(lr, None, 1)
    with pytest.raises(ValueError, match="C = 1 or 3"):
        Z.wiener_sr(torch.rand(2, 24, 24), None, 2)
    with pytest.raises(ValueError, match="kernel"):
        Z.wiener_sr(lr, torch.zeros(5, 5), 2)
    with pytest.raises(ValueError, match="one image at a time"):
        Z.zssr(torch.rand(2, 3, 24, 24), None, 2, progress=False)
    with pytest.raises(ValueError, match="too small"):
        Z.zssr(torch.rand(3, 6, 6), None, 2, config=Z.ZSSRConfig(steps=1, crop_size=16), progress=False)
    with pytest.raises(ValueError, match="steps"):
        Z.ZSSRConfig(steps=0)
