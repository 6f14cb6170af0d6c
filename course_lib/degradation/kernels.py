"""Blur kernels: Gaussian (isotropic, anisotropic), the MATLAB bicubic kernel, random DIV2KRK kernels.

Every kernel is a 2D tensor ``(K, K)`` that sums to 1. Coordinates: rows ``y`` grow downwards,
columns ``x`` grow to the right; a Gaussian kernel is centred on the geometric centre
``((K-1)/2, (K-1)/2)``, which for an even ``K`` lies between the four middle pixels.

How a kernel lines up with the LR grid is fixed by :class:`~course_lib.degradation.operators.BlurDownsample`:
the geometric centre lands on the LR pixel centre when ``K`` and the scale have the same parity
(so prefer even sizes for scales 2 and 4); :func:`shift_kernel_to_centre` moves any kernel's
centre of mass to the right place, and :func:`embed_kernel` changes a kernel's frame without
changing the blur it applies. :func:`post_process_kernel` and :func:`analytic_x4_kernel` clean an
estimated kernel and compose two x2 kernels into the x4 one (KernelGAN's post-processing, chapter 7).
"""

from __future__ import annotations

import math
from numbers import Real

import numpy as np
import torch

from .bicubic import cubic
from .operators import _check_scale, kernel_offset, kernel_target_centre

__all__ = [
    "gaussian_kernel",
    "anisotropic_gaussian_kernel",
    "bicubic_kernel",
    "random_div2krk_kernel",
    "mean_div2krk_kernel",
    "kernel_centre_of_mass",
    "kernel_covariance",
    "shift_kernel_to_centre",
    "embed_kernel",
    "post_process_kernel",
    "analytic_x4_kernel",
]


def _check_size(size) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"kernel size must be a positive int, got {size!r}")
    return int(size)


def _check_positive(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def _check_kernel(kernel) -> torch.Tensor:
    if not isinstance(kernel, torch.Tensor):
        raise TypeError(f"kernel must be a torch.Tensor, got {type(kernel).__name__}")
    if kernel.ndim != 2 or kernel.numel() == 0:
        raise ValueError(f"kernel must be a non-empty 2D tensor, got shape {tuple(kernel.shape)}")
    if not kernel.is_floating_point():
        raise TypeError(f"kernel must be a floating-point tensor, got {kernel.dtype}")
    if not torch.isfinite(kernel).all():
        raise ValueError("kernel contains non-finite values (NaN or inf)")
    return kernel


def _gaussian(size: int, covariance: np.ndarray, centre: tuple[float, float]) -> torch.Tensor:
    """``exp(-d^T Sigma^-1 d / 2)`` on the grid, ``d = (x - cx, y - cy)``, normalised; float64."""
    grid = torch.arange(size, dtype=torch.float64)
    dy, dx = torch.meshgrid(grid - centre[0], grid - centre[1], indexing="ij")
    d = torch.stack([dx, dy], dim=-1)  # (x, y) order: x = column, y = row
    precision = torch.as_tensor(np.linalg.inv(covariance), dtype=torch.float64)
    kernel = torch.exp(-0.5 * torch.einsum("...i,ij,...j->...", d, precision, d))
    return kernel / kernel.sum()


def _covariance(sigma_x: float, sigma_y: float, theta: float) -> np.ndarray:
    """``R(theta) diag(sigma_x^2, sigma_y^2) R(theta)^T`` in (x, y) coordinates."""
    rotation = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    return rotation @ np.diag([sigma_x**2, sigma_y**2]) @ rotation.T


def anisotropic_gaussian_kernel(
    size: int, sigma_x: float, sigma_y: float, theta: float, *, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """A ``size x size`` Gaussian with standard deviation ``sigma_x`` along the direction
    ``(cos theta, sin theta)`` in (column, row) coordinates and ``sigma_y`` across it.

    ``theta = 0`` puts the ``sigma_x`` axis along x (horizontal); since rows grow downwards a
    positive ``theta`` turns the long axis clockwise on screen. Centred on ``((size-1)/2, (size-1)/2)``,
    normalised to sum 1.
    """
    size = _check_size(size)
    sigma_x, sigma_y = _check_positive(sigma_x, "sigma_x"), _check_positive(sigma_y, "sigma_y")
    if isinstance(theta, bool) or not isinstance(theta, Real) or not math.isfinite(theta):
        raise ValueError(f"theta must be a finite angle in radians, got {theta!r}")
    centre = ((size - 1) / 2, (size - 1) / 2)
    return _gaussian(size, _covariance(sigma_x, sigma_y, float(theta)), centre).to(dtype)


def gaussian_kernel(size: int, sigma: float, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Isotropic ``size x size`` Gaussian, ``exp(-r^2 / (2 sigma^2))`` about the geometric centre, sum 1."""
    return anisotropic_gaussian_kernel(size, sigma, sigma, 0.0, dtype=dtype)


def bicubic_kernel(scale: int, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The antialiased MATLAB bicubic downscaling kernel for an integer ``scale``, size ``4*scale``.

    Its 1D factor is the stretched Keys kernel ``w[t] = cubic((t - t0) / s) / s`` with ``t0`` the
    LR-pixel centre of :class:`~course_lib.degradation.operators.BlurDownsample` (so
    ``BlurDownsample(bicubic_kernel(s), s)`` equals ``imresize(x, 1/s)`` except near the borders,
    where MATLAB mirrors and the periodic ``A`` wraps around; ``boundary="symmetric"`` mirrors too). For
    odd ``s`` the support has ``4s - 1`` taps and the first row and column are zero.
    """
    scale = _check_scale(scale)
    size = 4 * scale
    t = np.arange(size, dtype=np.float64)
    weights = cubic((t - kernel_target_centre(size, scale)) / scale) / scale
    weights = weights / weights.sum()  # exact partition of unity already; this fixes round-off
    w = torch.as_tensor(weights)
    return torch.outer(w, w).to(dtype)


def kernel_centre_of_mass(kernel: torch.Tensor) -> torch.Tensor:
    """``(row, col)`` centre of mass ``sum(k * index) / sum(k)``, 0-based, as a float64 tensor."""
    kernel = _check_kernel(kernel).to(torch.float64)
    total = kernel.sum()
    if total.abs() < 1e-12:
        raise ValueError("kernel sums to zero; its centre of mass is undefined")
    rows = torch.arange(kernel.shape[0], dtype=torch.float64)
    cols = torch.arange(kernel.shape[1], dtype=torch.float64)
    return torch.stack([(kernel.sum(1) * rows).sum() / total, (kernel.sum(0) * cols).sum() / total])


def kernel_covariance(kernel: torch.Tensor) -> torch.Tensor:
    """The 2x2 (row, col) covariance of a kernel read as a distribution: second moments about
    :func:`~course_lib.degradation.kernels.kernel_centre_of_mass`, divided by ``sum(k)``, in pixels^2
    (float64).

    Its eigenvalues are the variances along the kernel's principal axes (``sigma_x^2`` and
    ``sigma_y^2`` for an :func:`~course_lib.degradation.kernels.anisotropic_gaussian_kernel` whose
    support holds it); their sum measures the blur's size, their ratio its elongation.
    """
    centre = kernel_centre_of_mass(kernel)
    kernel = _check_kernel(kernel).to(torch.float64)
    kernel = kernel / kernel.sum()
    rows = torch.arange(kernel.shape[0], dtype=torch.float64)[:, None] - centre[0]
    cols = torch.arange(kernel.shape[1], dtype=torch.float64)[None, :] - centre[1]
    rr, cc, rc = (kernel * rows**2).sum(), (kernel * cols**2).sum(), (kernel * rows * cols).sum()
    return torch.stack([torch.stack([rr, rc]), torch.stack([rc, cc])])


def _shift_linear(kernel: torch.Tensor, shift: float, dim: int) -> torch.Tensor:
    """``out[i] = (1-f) k[i-n] + f k[i-n-1]`` with ``shift = n + f``; zero outside (mass may fall off)."""
    length = kernel.shape[dim]
    shift = min(max(shift, -length), length - 1)  # beyond that everything has fallen off anyway
    n = math.floor(shift)
    f = shift - n
    padded = torch.nn.functional.pad(kernel.movedim(dim, -1), (length + 1, length + 1))
    start = length + 1 - n  # padded[start + i] = k[i - n]
    whole = padded[..., start : start + length]
    next_ = padded[..., start - 1 : start - 1 + length]
    return ((1 - f) * whole + f * next_).movedim(-1, dim)


def shift_kernel_to_centre(kernel: torch.Tensor, scale: int, *, tol: float = 1e-9, max_iter: int = 10) -> torch.Tensor:
    """Shift ``kernel`` (sub-pixel, by linear interpolation) so that its centre of mass sits at
    :func:`~course_lib.degradation.operators.kernel_target_centre`, the point that
    ``BlurDownsample(kernel, scale)`` maps onto each LR pixel's centre; renormalised to its sum.

    A linear-interpolation shift moves the centre of mass exactly (it adds at most 1/4 px^2 of
    blur). Mass pushed across the border is lost, so the shift is repeated on the residual until the
    centre of mass is within ``tol`` (kernels with negligible border mass converge at once). Same
    size and dtype as the input.
    """
    kernel = _check_kernel(kernel)
    scale = _check_scale(scale)
    total = kernel.to(torch.float64).sum()
    target = torch.tensor([kernel_target_centre(n, scale) for n in kernel.shape], dtype=torch.float64)
    shifted = kernel.to(torch.float64)
    for _ in range(max_iter):
        residual = target - kernel_centre_of_mass(shifted)
        if residual.abs().max() <= tol:
            break
        shifted = _shift_linear(_shift_linear(shifted, float(residual[0]), 0), float(residual[1]), 1)
        if shifted.sum().abs() <= 1e-12 * shifted.abs().sum().clamp_min(1e-300):
            raise ValueError("the kernel cannot be shifted to the centre: its mass fell off the border")
        shifted = shifted * (total / shifted.sum())
    return shifted.to(kernel.dtype)


def random_div2krk_kernel(
    scale: int, size: int = 21, generator: torch.Generator | None = None, *, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """A random blur kernel following the DIV2KRK recipe (Bell-Kligler et al., KernelGAN, 2019).

    An anisotropic Gaussian whose covariance ``Q diag(l1, l2) Q^T`` has eigen-variances
    ``l1, l2 ~ U(0.175 s, 2.5 s)`` and angle ``theta ~ U(0, pi)``, multiplied pixel-wise by
    ``1 + U(-0.4, 0.4)`` noise, re-centred with :func:`shift_kernel_to_centre` (our alignment
    convention, see the module docstring) and normalised to sum 1. Deterministic given ``generator``.
    """
    scale = _check_scale(scale)
    size = _check_size(size)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    device = generator.device if generator is not None else "cpu"
    draws = torch.rand(3, generator=generator, dtype=torch.float64, device=device)
    low, high = 0.175 * scale, 2.5 * scale
    variances = low + (high - low) * draws[:2].cpu().numpy()
    theta = math.pi * float(draws[2])
    rotation = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    covariance = rotation @ np.diag(variances) @ rotation.T
    centre = kernel_target_centre(size, scale)
    kernel = _gaussian(size, covariance, (centre, centre))
    noise = torch.rand(size, size, generator=generator, dtype=torch.float64, device=draws.device).cpu()
    kernel = kernel * (1 + 0.8 * noise - 0.4)
    kernel = shift_kernel_to_centre(kernel / kernel.sum(), scale)
    return (kernel / kernel.sum()).to(dtype)


def mean_div2krk_kernel(scale: int, size: int = 21, *, samples: int = 2000, seed: int = 0,
                        dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The average of ``samples`` kernels of :func:`~course_lib.degradation.kernels.random_div2krk_kernel`
    (seeded): the best single guess of a DIV2KRK kernel that ignores the image.

    A round blur (the random angles average out) whose variance along each axis is about the mean
    eigen-variance ``1.34 * scale`` pixels^2 (a little more, from the multiplicative noise). A blind
    kernel estimator is only useful where it beats this prior mean.
    """
    if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < 1:
        raise ValueError(f"samples must be a positive int, got {samples!r}")
    size = _check_size(size)
    generator = torch.Generator().manual_seed(seed)
    total = torch.zeros(size, size, dtype=torch.float64)
    for _ in range(samples):
        total += random_div2krk_kernel(scale, size, generator, dtype=torch.float64)
    return (total / total.sum()).to(dtype)


# ---------------------------------------------------------------------------------------------
# changing a kernel's frame, cleaning an estimate, composing two x2 kernels
# ---------------------------------------------------------------------------------------------
def embed_kernel(kernel: torch.Tensor, size: int, scale: int) -> torch.Tensor:
    """Zero-pad (or crop) a kernel to ``size x size`` so that ``BlurDownsample`` applies the *same*
    blur: the content moves by ``kernel_offset(size, s) - kernel_offset(K, s)`` pixels."""
    k = kernel.detach()
    out = k.new_zeros(size, size)
    shift = kernel_offset(size, scale) - kernel_offset(k.shape[0], scale)
    src0, dst0 = max(0, -shift), max(0, shift)
    n = min(k.shape[0] - src0, size - dst0)
    if n <= 0:
        raise ValueError(f"a {k.shape[0]}x{k.shape[0]} kernel does not overlap a {size}x{size} frame")
    out[dst0:dst0 + n, dst0:dst0 + n] = k[src0:src0 + n, src0:src0 + n]
    return out


def post_process_kernel(kernel: torch.Tensor, n: int = 40, scale: int = 2) -> torch.Tensor:
    """Clean an estimated kernel (KernelGAN's official ``post_process_k``): subtract ``0.75 x`` its
    ``(n+1)``-th largest value and clip at zero (removes the faint noise floor), renormalise to sum 1,
    and shift the centre of mass onto ``kernel_target_centre`` (sub-pixel,
    :func:`~course_lib.degradation.kernels.shift_kernel_to_centre`)."""
    k = kernel.detach().to("cpu", torch.float64)
    if k.ndim != 2 or k.shape[0] != k.shape[1]:
        raise ValueError(f"kernel must be a square 2D tensor, got shape {tuple(k.shape)}")
    n = min(int(n), k.numel() - 1)
    threshold = 0.75 * torch.sort(k.reshape(-1)).values[-n - 1]
    k = (k - threshold).clamp_min(0)
    if k.sum() <= 0:
        raise ValueError("the kernel has no positive mass left after filtering")
    k = shift_kernel_to_centre(k / k.sum(), scale)
    return (k / k.sum()).to(torch.float32)


def analytic_x4_kernel(kernel_x2: torch.Tensor, *, crop: bool = True) -> torch.Tensor:
    """The x4 kernel of two x2 downscalings in a row (KernelGAN paper's appendix; official
    ``analytic_kernel``).

    Downscaling twice by 2 with ``k`` reads ``x[4j + 2v + u]`` with weight ``k[v] k[u]``, so the x4
    kernel is ``k4[2r + a, 2c + b] += k[r, c] k[a, b]`` (size ``3K - 2``). With ``crop`` the border of
    ``K // 2`` pixels (negligible mass) is cut off, 37 -> 25 for ``K = 13``, and the result renormalised.
    Finally zeros are appended at the end (bottom/right) so that ``BlurDownsample(k4, 4)`` lines up
    exactly like ``BlurDownsample(k, 2)`` applied twice (25 -> 27, 37 -> 39).
    """
    k = kernel_x2.detach().to("cpu", torch.float64)
    if k.ndim != 2 or k.shape[0] != k.shape[1]:
        raise ValueError(f"kernel_x2 must be a square 2D tensor, got shape {tuple(kernel_x2.shape)}")
    size = k.shape[0]
    big = torch.zeros(3 * size - 2, 3 * size - 2, dtype=torch.float64)
    for r in range(size):
        for c in range(size):
            big[2 * r:2 * r + size, 2 * c:2 * c + size] += k[r, c] * k
    cut = size // 2 if crop else 0
    if cut:
        big = big[cut:-cut, cut:-cut]
        big = big / big.sum()
    # twice A_2: (A4 x)[j] = sum_w big[w] x[4j + w - (3 c2 - cut)], c2 = offset of k at scale 2
    wanted = 3 * kernel_offset(size, 2) - cut
    for extra in range(0, 8):
        if kernel_offset(big.shape[0] + extra, 4) == wanted:
            big = torch.nn.functional.pad(big, (0, extra, 0, extra))
            break
    else:  # pragma: no cover - cannot happen for square kernels
        raise RuntimeError("could not align the x4 kernel")
    return big.to(torch.float32)
