"""The contract every degradation operator of the course passes (course_lib.degradation.operators).

One table of operators (every boundary, odd and even kernels, the MATLAB bicubic operator, a plain
matrix) and one set of checks against independent references:
- the adjoint identity <A x, y> = <x, A^T y>, and A^T equal to the transpose of the dense matrix;
- A A^+ A = A, and A^+ equal to numpy's pinv of the dense matrix (small sizes);
- the projection onto {x : A x = y} idempotent, consistent (A P(x) = y) and orthogonal;
- prox_l2 equal to numpy's solve of its normal equations;
- the boundaries against scipy (ndimage.correlate with mode 'wrap' / 'reflect', signal.correlate2d
  'valid'); the bicubic operator against MATLAB values.
The MATLAB values are those of ../shared/reference/bicubic-reference.md, computed with an
independent implementation of MATLAB's imresize that was validated against MATLAB outputs; they
are copied into tests/test_bicubic.py and repeated here for the operator.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.ndimage as ndi
import scipy.signal as sps
import torch

from course_lib.degradation import (
    BicubicDownsample,
    BlurDownsample,
    LinearOperator,
    MatrixOperator,
    Subsample,
    conjugate_gradient,
    gaussian_kernel,
    gradient_penalty,
    imresize,
    kernel_offset,
)


def _rand(*shape, seed=0):
    return torch.rand(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def _randn(*shape, seed=0):
    return torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


# name -> (operator, shape of one input x); every input shape is small enough for a dense matrix
OPERATORS = {
    "periodic 5x5 s2": (BlurDownsample(_rand(5, 5, seed=1), 2), (12, 12)),
    "periodic 4x4 s2": (BlurDownsample(_rand(4, 4, seed=2), 2), (8, 12)),
    "periodic 6x9 s3": (BlurDownsample(_rand(6, 9, seed=3), 3), (9, 12)),
    "symmetric 5x5 s2": (BlurDownsample(_rand(5, 5, seed=4), 2, "symmetric"), (12, 12)),
    "symmetric 8x8 s4": (BlurDownsample(gaussian_kernel(8, 1.2).double(), 4, "symmetric"), (16, 16)),
    "symmetric 7x4 s3": (BlurDownsample(_rand(7, 4, seed=5), 3, "symmetric"), (9, 12)),
    "valid 5x5 s2": (BlurDownsample(_rand(5, 5, seed=6), 2, "valid"), (13, 13)),
    "valid 4x6 s3": (BlurDownsample(_rand(4, 6, seed=7), 3, "valid"), (13, 15)),
    "subsample s2": (Subsample(2), (8, 8)),
    "bicubic s2": (BicubicDownsample(2), (12, 12)),
    "bicubic s4": (BicubicDownsample(4), (16, 16)),
    "matrix 2x3": (MatrixOperator([[1.0, 2.0, 0.5], [0.0, 1.0, -1.0]]), (3,)),
    "matrix toy": (MatrixOperator([[0.5, 0.5]]), (2,)),
}
NAMES = list(OPERATORS)


def _case(name):
    op, shape = OPERATORS[name]
    return op, shape


def _dense(op, shape) -> np.ndarray:
    return op.matrix(shape).numpy()


@pytest.mark.parametrize("name", NAMES)
def test_is_a_linear_operator_module(name):
    op, _ = _case(name)
    assert isinstance(op, LinearOperator) and isinstance(op, torch.nn.Module)


@pytest.mark.parametrize("name", NAMES)
def test_matrix_is_the_operator(name):
    op, shape = _case(name)
    x = _rand(*shape, seed=10)
    np.testing.assert_allclose(_dense(op, shape) @ x.numpy().ravel(), op(x).numpy().ravel(), rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_adjoint_identity_and_transpose(name):
    op, shape = _case(name)
    x = _randn(3, *shape, seed=11)
    y = _randn(*op.A(x).shape, seed=12)
    lhs = (op.A(x) * y).sum()
    rhs = (x * op.At(y)).sum()
    assert float(lhs) == pytest.approx(float(rhs), rel=1e-12, abs=1e-12)
    m = _dense(op, shape)
    np.testing.assert_allclose(op.At(y[0]).numpy().ravel(), m.T @ y[0].numpy().ravel(), rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_autograd_adjoint_equals_the_closed_form(name):
    op, shape = _case(name)
    y = _randn(2, *op.A(torch.zeros(shape, dtype=torch.float64)).shape, seed=13)
    torch.testing.assert_close(LinearOperator.At(op, y), op.At(y), rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_pseudo_inverse_against_numpy(name):
    op, shape = _case(name)
    m = _dense(op, shape)
    y = _randn(*op.A(torch.zeros(shape, dtype=torch.float64)).shape, seed=14)
    expected = np.linalg.pinv(m) @ y.numpy().ravel()
    got = op.pinv(y).numpy().ravel()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-7 * max(1.0, np.abs(expected).max()))


@pytest.mark.parametrize("name", NAMES)
def test_a_pinv_a_is_a(name):
    op, shape = _case(name)
    x = _randn(2, *shape, seed=15)
    torch.testing.assert_close(op.A(op.pinv(op.A(x))), op.A(x), rtol=0, atol=1e-8)


@pytest.mark.parametrize("name", NAMES)
def test_projection_is_idempotent_consistent_and_orthogonal(name):
    op, shape = _case(name)
    y = op.A(_rand(2, *shape, seed=16))  # in the range
    x = _randn(2, *shape, seed=17)
    p = op.project(x, y)
    torch.testing.assert_close(op.A(p), y, rtol=0, atol=1e-8)  # consistent
    torch.testing.assert_close(op.project(p, y), p, rtol=0, atol=1e-8)  # idempotent
    # orthogonal: the step x - P(x) is in the row space, so orthogonal to every null-space vector
    n = op.nullspace_project(_randn(2, *shape, seed=18))
    assert abs(float(((x - p) * n).sum())) < 1e-7
    torch.testing.assert_close(op.A(n), torch.zeros_like(y), rtol=0, atol=1e-8)


@pytest.mark.parametrize("name", NAMES)
def test_prox_l2_solves_its_normal_equations(name):
    op, shape = _case(name)
    m = _dense(op, shape)
    z = _randn(*shape, seed=19)
    y = _randn(*op.A(z).shape, seed=20)
    gamma = 0.7
    rhs = m.T @ y.numpy().ravel() + z.numpy().ravel() / gamma
    expected = np.linalg.solve(m.T @ m + np.eye(m.shape[1]) / gamma, rhs)
    np.testing.assert_allclose(op.prox_l2(z, y, gamma).numpy().ravel(), expected, rtol=0, atol=1e-8)


@pytest.mark.parametrize("name", [n for n in NAMES if not n.startswith("matrix")])
def test_prox_l2_with_a_gradient_penalty(name):
    op, shape = _case(name)
    m = _dense(op, shape)
    weight = gradient_penalty(1e-2)
    n = math.prod(shape)
    w = weight(torch.eye(n, dtype=torch.float64).reshape(-1, *shape)).reshape(n, -1).numpy()
    z = _randn(*shape, seed=21)
    y = _randn(*op.A(z).shape, seed=22)
    gamma = 2.0
    expected = np.linalg.solve(m.T @ m + w / gamma, m.T @ y.numpy().ravel() + w @ z.numpy().ravel() / gamma)
    got = op.prox_l2(z, y, gamma, weight=weight).numpy().ravel()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-7 * max(1.0, np.abs(expected).max()))


# ---------------------------------------------------------------------------- boundaries vs scipy
@pytest.mark.parametrize("kh, kw, scale", [(5, 5, 2), (4, 4, 2), (6, 9, 3), (7, 4, 4)])
@pytest.mark.parametrize("boundary, mode", [("periodic", "wrap"), ("symmetric", "reflect")])
def test_boundaries_match_scipy_correlate(kh, kw, scale, boundary, mode):
    k = _rand(kh, kw, seed=30)
    x = _rand(2, 24, 36, seed=31)
    origin = [kernel_offset(kh, scale) - kh // 2, kernel_offset(kw, scale) - kw // 2]
    out = BlurDownsample(k, scale, boundary).A(x)
    for c in range(2):
        expected = ndi.correlate(x[c].numpy(), k.numpy(), mode=mode, origin=origin)[::scale, ::scale]
        np.testing.assert_allclose(out[c].numpy(), expected, rtol=0, atol=1e-13)


@pytest.mark.parametrize("kh, kw, scale", [(5, 5, 2), (4, 6, 3), (13, 13, 2)])
def test_valid_boundary_matches_scipy_correlate2d(kh, kw, scale):
    k = _rand(kh, kw, seed=32)
    x = _rand(3, 30, 27, seed=33)
    out = BlurDownsample(k, scale, "valid").A(x)
    for c in range(3):
        expected = sps.correlate2d(x[c].numpy(), k.numpy(), mode="valid")[::scale, ::scale]
        np.testing.assert_allclose(out[c].numpy(), expected, rtol=0, atol=1e-13)


# ---------------------------------------------------------------------------- MATLAB bicubic
def test_bicubic_operator_matches_matlab_reference_values():
    """../shared/reference/bicubic-reference.md: A = arange(64).reshape(8, 8)/63, imresize(A, 1/2) and 1/4."""
    a = torch.arange(64, dtype=torch.float64).reshape(1, 8, 8) / 63
    half = np.array([[0.064174, 0.09654, 0.128658, 0.161024], [0.323103, 0.355469, 0.387587, 0.419953],
                     [0.580047, 0.612413, 0.644531, 0.676897], [0.838976, 0.871342, 0.90346, 0.935826]])
    quarter = np.array([[0.196568, 0.263997], [0.736003, 0.803432]])
    np.testing.assert_allclose(BicubicDownsample(2).A(a)[0].numpy(), half, atol=1e-6)
    np.testing.assert_allclose(BicubicDownsample(4).A(a)[0].numpy(), quarter, atol=1e-6)
    delta = torch.zeros(8, 8, dtype=torch.float64)
    delta[3, 4] = 1.0
    column = np.array([[0.000412, -0.003983, -0.015244, 0.001236], [-0.005081, 0.049118, 0.188004, -0.015244],
                       [-0.001328, 0.012833, 0.049118, -0.003983], [0.000137, -0.001328, -0.005081, 0.000412]])
    np.testing.assert_allclose(BicubicDownsample(2).A(delta).numpy(), column, atol=1e-6)


def test_bicubic_operator_is_imresize_on_any_batch_shape():
    x = _rand(2, 3, 16, 24, seed=34)
    torch.testing.assert_close(BicubicDownsample(4)(x), imresize(x, 0.25), rtol=0, atol=0)
    torch.testing.assert_close(BicubicDownsample(2)(x[0, 0]), imresize(x[0, :1], 0.5)[0], rtol=0, atol=0)


# ---------------------------------------------------------------------------- KernelGAN's generator
def test_kernelgan_linear_generator_is_the_valid_operator_with_its_extracted_kernel():
    """A deep linear generator is one correlation with stride 2: BlurDownsample(k, 2, 'valid') with the
    kernel its layers compose to, on every channel."""
    from course_lib.kernelgan import DeepLinearGenerator

    torch.manual_seed(0)
    generator = DeepLinearGenerator().double()
    with torch.no_grad():  # break the identity-like start so that the kernel is generic
        for p in generator.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = _rand(2, 3, 40, 40, seed=35)
    kernel = generator.kernel()
    with torch.no_grad():
        out = generator(x)
        expected = BlurDownsample(kernel.double(), 2, "valid")(x)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-10)


# ---------------------------------------------------------------------------- errors and the solver
def test_operator_errors_name_the_problem():
    with pytest.raises(ValueError, match="boundary"):
        BlurDownsample(torch.ones(3, 3) / 9, 2, "wrap")
    with pytest.raises(ValueError, match="smaller than the kernel"):
        BlurDownsample(torch.ones(5, 5) / 25, 2, "valid").A(torch.rand(1, 4, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match="not divisible by scale 4"):
        BicubicDownsample(4).A(torch.rand(1, 10, 8))
    with pytest.raises(ValueError, match="last dimension 2"):
        MatrixOperator([[0.5, 0.5]]).A(torch.rand(3, 3))
    with pytest.raises(ValueError, match="full row rank"):
        MatrixOperator([[1.0, 1.0], [2.0, 2.0]])
    with pytest.raises(ValueError, match="gamma"):
        BlurDownsample(torch.ones(2, 2) / 4, 2).prox_l2(torch.rand(4, 4), torch.rand(2, 2), 0.0)
    with pytest.raises(ValueError, match=r"y has LR size \(3, 3\)"):
        BicubicDownsample(2).project(torch.rand(8, 8), torch.rand(3, 3))
    with pytest.raises(NotImplementedError, match="must implement A"):
        LinearOperator().A(torch.rand(2))


def test_conjugate_gradient_solves_and_warns_when_it_cannot_converge():
    m = _randn(6, 6, seed=40)
    spd = m @ m.T + 0.1 * torch.eye(6, dtype=torch.float64)
    b = _randn(6, seed=41)
    x = conjugate_gradient(lambda v: spd @ v, b)
    np.testing.assert_allclose(x.numpy(), np.linalg.solve(spd.numpy(), b.numpy()), atol=1e-9)
    with pytest.warns(RuntimeWarning, match="max_iter=2"):
        conjugate_gradient(lambda v: spd @ v, b, max_iter=2)
