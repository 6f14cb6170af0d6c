"""The operator A = subsample o circular blur: convention vs scipy, adjoint, spectrum, pseudo-inverse,
projections; and the degradation pipeline built on it."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch
import torch.nn.functional as F
from PIL import Image

from course_lib.degradation import (
    BlurDownsample,
    Subsample,
    bicubic_downscale,
    degrade,
    gaussian_kernel,
    kernel_offset,
)

# (kernel height, kernel width, scale): odd, even, non-square, smaller and larger than the scale
CASES = [(5, 5, 2), (4, 4, 2), (8, 8, 4), (3, 3, 3), (1, 1, 2), (7, 4, 4), (6, 9, 3)]


def _rand(*shape, seed=0):
    return torch.rand(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def _operator(kh, kw, scale, seed=0):
    return BlurDownsample(_rand(kh, kw, seed=seed), scale)


@pytest.mark.parametrize("kh, kw, scale", CASES)
def test_forward_matches_scipy_correlate_with_wrap(kh, kw, scale):
    """Documented convention: (A x)[j] = sum_t k[t] x[s j + t - c], c = ceil((K - s)/2); scipy's
    correlate reads x[i + t - (K//2 + origin)], so origin = c - K//2."""
    op = _operator(kh, kw, scale)
    x = _rand(24, 36, seed=1)
    origin = [kernel_offset(kh, scale) - kh // 2, kernel_offset(kw, scale) - kw // 2]
    expected = ndi.correlate(x.numpy(), op.kernel.numpy(), mode="wrap", origin=origin)[::scale, ::scale]
    np.testing.assert_allclose(op.A(x).numpy(), expected, rtol=0, atol=1e-13)


def test_odd_kernel_at_scale_two_is_plain_correlate_then_stride():
    k = _rand(13, 13, seed=2)
    x = _rand(26, 30, seed=3)
    expected = ndi.correlate(x.numpy(), k.numpy(), mode="wrap")[::2, ::2]
    np.testing.assert_allclose(BlurDownsample(k, 2)(x).numpy(), expected, rtol=0, atol=1e-13)


@pytest.mark.parametrize("kh, kw, scale", CASES)
def test_adjoint_identity(kh, kw, scale):
    op = _operator(kh, kw, scale)
    x = _rand(2, 3, 12, 24, seed=4)
    y = _rand(2, 3, 12 // scale, 24 // scale, seed=5)
    lhs = (op.A(x) * y).sum()
    rhs = (x * op.At(y)).sum()
    assert lhs.item() == pytest.approx(rhs.item(), rel=1e-12)


def test_subsample_and_box_kernel_by_hand():
    x = _rand(2, 3, 12, 18, seed=6)
    for s in (2, 3):
        torch.testing.assert_close(Subsample(s).A(x), x[..., ::s, ::s])
        box = BlurDownsample(torch.full((s, s), 1.0 / s**2), s)
        torch.testing.assert_close(box.A(x), F.avg_pool2d(x, s))


@pytest.mark.parametrize("kh, kw, scale", [(5, 5, 2), (8, 8, 4), (6, 9, 3), (1, 1, 2)])
def test_spectrum_and_pseudo_inverse_match_dense_linear_algebra(kh, kw, scale):
    op = _operator(kh, kw, scale, seed=7)
    hr_shape = (12, 24)
    lr_shape = (12 // scale, 24 // scale)
    M = op.matrix(hr_shape).numpy()
    assert M.shape == (lr_shape[0] * lr_shape[1], hr_shape[0] * hr_shape[1])
    x = _rand(*hr_shape, seed=8)
    np.testing.assert_allclose(M @ x.numpy().ravel(), op.A(x).numpy().ravel(), atol=1e-13)
    # eigenvalues of A A^T: the alias-averaged |K|^2
    eigenvalues = np.sort(op.AAt_spectrum(lr_shape).numpy().ravel())
    np.testing.assert_allclose(eigenvalues, np.linalg.eigvalsh(M @ M.T), rtol=0, atol=1e-12 * eigenvalues.max())
    # the pseudo-inverse
    y = _rand(2, *lr_shape, seed=9)
    expected = np.stack([np.linalg.pinv(M) @ item.ravel() for item in y.numpy()])
    np.testing.assert_allclose(op.pinv(y).numpy().reshape(2, -1), expected, rtol=0, atol=1e-10)
    torch.testing.assert_close(op.A(op.pinv(y)), y, rtol=0, atol=1e-10)  # A A^+ = I (full row rank)


def test_singular_operator_drops_zero_eigenvalues():
    """k = [1/2, 0, 1/2] at scale 2: K(w) = cos(w) vanishes on both aliases w' = pi/2 and w' + pi,
    so A A^T is singular and A^+ must ignore that frequency, as numpy's pinv does."""
    op = BlurDownsample(torch.tensor([[0.5, 0.0, 0.5]], dtype=torch.float64), 2)
    hr_shape, lr_shape = (4, 16), (2, 8)
    eigenvalues = op.AAt_spectrum(lr_shape)
    assert eigenvalues.min() < 1e-30 < 1e-3 < eigenvalues.max()
    M = op.matrix(hr_shape).numpy()
    y = _rand(*lr_shape, seed=10)
    expected = np.linalg.pinv(M, rcond=1e-8) @ y.numpy().ravel()
    np.testing.assert_allclose(op.pinv(y).numpy().ravel(), expected, rtol=0, atol=1e-10)
    projector = M @ np.linalg.pinv(M, rcond=1e-8)  # A A^+ projects onto the range of A
    np.testing.assert_allclose(op.A(op.pinv(y)).numpy().ravel(), projector @ y.numpy().ravel(), atol=1e-10)
    assert (op.A(op.pinv(y)) - y).abs().max() > 1e-3  # y is not in the range: A A^+ y != y


@pytest.mark.parametrize("kh, kw, scale", [(4, 4, 2), (7, 4, 4)])
def test_nullspace_projector_is_an_orthogonal_projection(kh, kw, scale):
    op = _operator(kh, kw, scale, seed=11)
    n = 8
    basis = torch.eye(n * n, dtype=torch.float64).reshape(n * n, n, n)
    P = op.nullspace_project(basis).reshape(n * n, n * n).T  # column i = P e_i
    torch.testing.assert_close(P @ P, P, rtol=0, atol=1e-10)
    torch.testing.assert_close(P, P.T, rtol=0, atol=1e-10)
    rank = torch.linalg.matrix_rank(P).item()
    assert rank == n * n - (n // scale) ** 2  # dim ker A = N - rank A (A has full row rank here)
    null_part = op.nullspace_project(_rand(3, n, n, seed=12))
    torch.testing.assert_close(op.A(null_part), torch.zeros(3, n // scale, n // scale),
                               rtol=0, atol=1e-10, check_dtype=False)


def test_affine_projection():
    op = BlurDownsample(gaussian_kernel(8, 1.2, dtype=torch.float64), 2)
    x = _rand(2, 3, 16, 20, seed=13)
    y = _rand(2, 3, 8, 10, seed=14)
    p = op.project(x, y)
    torch.testing.assert_close(op.A(p), y, rtol=0, atol=1e-9)
    torch.testing.assert_close(op.project(p, y), p, rtol=0, atol=1e-9)  # idempotent
    # orthogonal: x - p is orthogonal to every direction inside the affine set (the null space)
    d = op.nullspace_project(_rand(2, 3, 16, 20, seed=15))
    assert abs(((x - p) * d).sum().item()) < 1e-9


def test_float32_gradients_and_kernel_gradients():
    op = BlurDownsample(gaussian_kernel(4, 1.0), 2)
    y = torch.rand(1, 3, 8, 8)
    torch.testing.assert_close(op.A(op.pinv(y)), y, rtol=0, atol=1e-4)
    assert op.A(torch.rand(3, 16, 16)).dtype == torch.float32
    x = _rand(1, 8, 8, seed=16).requires_grad_()
    k = _rand(3, 4, seed=17).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: BlurDownsample(k.detach(), 2).A(t), (x,))
    assert torch.autograd.gradcheck(lambda kk: BlurDownsample(kk, 2).A(x.detach()), (k,))
    yy = _rand(1, 4, 4, seed=18).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: BlurDownsample(k.detach(), 2).pinv(t), (yy,))


def test_operator_errors():
    with pytest.raises(ValueError, match="2D"):
        BlurDownsample(torch.ones(3), 2)
    with pytest.raises(ValueError, match="2D"):
        BlurDownsample(torch.ones(1, 3, 3), 2)
    with pytest.raises(ValueError, match="non-finite"):
        BlurDownsample(torch.tensor([[1.0, math.inf]]), 2)
    for scale in (0, -2):
        with pytest.raises(ValueError, match="positive int"):
            BlurDownsample(torch.ones(2, 2), scale)
    for scale in (1.5, True, "2"):
        with pytest.raises(TypeError, match="positive int"):
            BlurDownsample(torch.ones(2, 2), scale)
    op = BlurDownsample(torch.ones(2, 2) / 4, 2)
    with pytest.raises(ValueError, match="7x8, which is not divisible by scale 2"):
        op.A(torch.rand(3, 7, 8))
    with pytest.raises(TypeError, match="floating-point"):
        op.A(torch.ones(3, 8, 8, dtype=torch.int64))
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        op.At(torch.rand(4))
    with pytest.raises(ValueError, match=r"y has LR size \(3, 4\)"):
        op.project(torch.rand(3, 8, 8), torch.rand(3, 3, 4))
    with pytest.raises(ValueError, match="tiny"):
        op.matrix((128, 128))
    with pytest.raises(ValueError, match="not divisible"):
        op.matrix((5, 4))


# ---------------------------------------------------------------------------- degrade
def test_degrade_bicubic_and_kernel_paths():
    hr = _rand(2, 3, 16, 24, seed=20).float()
    torch.testing.assert_close(degrade(hr, 4), bicubic_downscale(hr, 4))
    k = gaussian_kernel(8, 1.5)
    torch.testing.assert_close(degrade(hr, 2, kernel=k), BlurDownsample(k, 2).A(hr))


def test_degrade_symmetric_boundary_matches_scipy_reflect():
    hr = _rand(3, 18, 24, seed=21)
    k = _rand(5, 6, seed=22)
    origin = [kernel_offset(5, 3) - 5 // 2, kernel_offset(6, 3) - 6 // 2]
    out = degrade(hr, 3, kernel=k, boundary="symmetric")
    for c in range(3):  # scipy's 'reflect' is MATLAB's 'symmetric' (edge pixel repeated)
        expected = ndi.correlate(hr[c].numpy(), k.numpy(), mode="reflect", origin=origin)[::3, ::3]
        np.testing.assert_allclose(out[c].numpy(), expected, rtol=0, atol=1e-13)


def test_degrade_noise_is_seeded_gaussian():
    hr = torch.rand(3, 64, 64)
    clean = degrade(hr, 2)
    noisy = degrade(hr, 2, noise_sigma=0.1, generator=torch.Generator().manual_seed(5))
    again = degrade(hr, 2, noise_sigma=0.1, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(noisy, again, rtol=0, atol=0)
    reference = 0.1 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(noisy - clean, reference, rtol=0, atol=1e-6)
    assert (noisy - clean).std().item() == pytest.approx(0.1, rel=0.05)


def test_degrade_jpeg_matches_pillow_roundtrip():
    hr = _rand(3, 32, 48, seed=23).float()
    out = degrade(hr, 2, jpeg_quality=30)
    levels = np.floor(bicubic_downscale(hr, 2).clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(levels.transpose(1, 2, 0)).save(buffer, format="JPEG", quality=30)
    expected = np.asarray(Image.open(buffer).convert("RGB")).transpose(2, 0, 1) / 255.0
    np.testing.assert_allclose(out.numpy(), expected, rtol=0, atol=1e-6)
    gray = degrade(hr[:1][None], 2, jpeg_quality=90)
    assert gray.shape == (1, 1, 16, 24)


def test_degrade_errors():
    hr = torch.rand(3, 16, 16)
    with pytest.raises(ValueError, match="15x16 is not divisible by scale 2"):
        degrade(torch.rand(3, 15, 16), 2)
    with pytest.raises(ValueError, match="noise_sigma"):
        degrade(hr, 2, noise_sigma=-0.1)
    with pytest.raises(ValueError, match="noise_sigma"):
        degrade(hr, 2, noise_sigma=math.nan)
    for quality in (0, 101, 50.5):
        with pytest.raises(ValueError, match="jpeg_quality"):
            degrade(hr, 2, jpeg_quality=quality)
    with pytest.raises(ValueError, match="channels"):
        degrade(torch.rand(2, 16, 16), 2, jpeg_quality=50)
    with pytest.raises(TypeError, match="generator"):
        degrade(hr, 2, noise_sigma=0.1, generator=3)
    with pytest.raises(ValueError, match="non-finite"):
        degrade(torch.full((3, 16, 16), math.nan), 2)
    with pytest.raises(ValueError, match="boundary"):
        degrade(hr, 2, kernel=torch.ones(2, 2) / 4, boundary="wrap")
    with pytest.raises(TypeError, match="positive int"):
        degrade(hr, 2.0)
    with pytest.raises(ValueError, match="2D"):
        degrade(hr, 2, kernel=torch.ones(3))
