"""The linear degradation ``A = subsample_s o blur_k`` as an object: forward, adjoint, pseudo-inverse.

Super-resolution with a known kernel is the linear inverse problem ``y = A x``. Here ``A`` blurs the
HR image ``x`` with a kernel ``k`` and keeps one pixel in ``s x s``. With **periodic boundaries**
(the blur wraps around) ``A`` is exactly a matrix whose structure the discrete Fourier transform
reveals, so its adjoint and its Moore-Penrose pseudo-inverse can be applied exactly and cheaply.

Alignment convention (per axis; the same for rows and columns). For a kernel of size ``K`` and an
integer scale ``s`` let ``c = ceil((K - s) / 2)``. Then

    (A x)[j] = sum_t k[t] * x[(s*j + t - c) mod H].

MATLAB's ``imresize`` places LR pixel ``j`` at HR coordinate ``s*j + (s-1)/2``, the centre of its
``s x s`` block; with the offset ``c`` the kernel's geometric centre ``(K-1)/2`` lands exactly there
when ``K`` and ``s`` have the same parity (even kernels for scale 2 or 4, odd kernels for scale 3),
and half an HR pixel up and to the left of it otherwise. Consequences:
``BlurDownsample(bicubic_kernel(s), s)`` reproduces ``imresize(x, 1/s)`` away from the borders;
an ``s x s`` box kernel averages each block; for odd ``K`` and ``s = 2`` the operator equals
``scipy.ndimage.correlate(x, k, mode='wrap')[::2, ::2]``. :func:`~course_lib.degradation.kernels.shift_kernel_to_center`
moves a kernel's centre of mass onto the LR pixel centre.

Spectral facts used below (derive them with the DFT; ``h`` is the kernel placed on the ``H x W``
HR grid so that the blur ``B`` is the circular convolution ``x * h``; ``K[p, q]`` is the 2D DFT of
``h``; ``S`` keeps every ``s``-th pixel, the LR grid is ``m x n = H/s x W/s``):

* ``A^T y = B^T S^T y``: put ``y`` on the HR grid with zeros in between, then correlate with the
  kernel (multiply the DFT by ``conj(K)``).
* ``A A^T = S (B B^T) S^T`` is circulant on the LR grid (shifting ``y`` by one LR pixel shifts
  everything by ``s`` HR pixels). Its eigenvalues are the LR DFT of the decimated autocorrelation
  of ``h``, i.e. the average of ``|K|^2`` over the ``s^2`` HR frequencies that alias onto each LR
  frequency: ``lambda[p, q] = (1/s^2) sum_{a,b=0}^{s-1} |K[p + a m, q + b n]|^2``.
* ``A^+ = A^T (A A^T)^+`` for any matrix; ``(A A^T)^+`` divides by ``lambda`` in the LR Fourier
  domain, with eigenvalues ``lambda <= rtol * max(lambda)`` treated as exact zeros (a true
  pseudo-inverse; ``rtol`` on ``lambda = sigma^2`` means singular values below
  ``sqrt(rtol) * sigma_max`` are dropped).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .bicubic import _check_scale_int as _check_scale

__all__ = ["BlurDownsample", "Subsample", "kernel_offset", "kernel_target_center"]


def kernel_offset(size: int, scale: int) -> int:
    """The offset ``c = ceil((size - scale) / 2)``: kernel entry ``t`` reads HR pixel ``s*j + t - c``."""
    return -((scale - size) // 2)


def kernel_target_center(size: int, scale: int) -> float:
    """Kernel coordinate (0-based, per axis) that lands on the centre of an LR pixel: ``c + (s-1)/2``.

    Equals the geometric centre ``(size-1)/2`` when ``size`` and ``scale`` have the same parity.
    """
    return kernel_offset(size, scale) + (scale - 1) / 2


def _check_tensor(x, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim < 2:
        raise ValueError(f"{name} must have at least 2 dimensions (..., H, W), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a real floating-point tensor, got {x.dtype}")


class BlurDownsample:
    """``A x = (x circularly blurred by kernel)`` sampled every ``scale`` pixels, see the module docstring.

    Acts on the last two dimensions of any tensor ``(..., H, W)`` (every channel and batch item with
    the same kernel), on any device, differentiably (also with respect to the kernel). Calling the
    object applies ``A``.

    Args:
        kernel: 2D array ``(Kh, Kw)`` of finite values (any size, odd or even; need not sum to 1).
        scale: positive int ``s``; HR sizes must be divisible by it.
        rtol: relative threshold on the eigenvalues of ``A A^T`` for the pseudo-inverse; default
            ``100 * eps`` of the data's dtype.
    """

    def __init__(self, kernel, scale: int, *, rtol: float | None = None):
        if not isinstance(kernel, torch.Tensor):
            kernel = torch.as_tensor(np.asarray(kernel))
        if kernel.ndim != 2 or kernel.numel() == 0:
            raise ValueError(f"kernel must be a non-empty 2D array (Kh, Kw), got shape {tuple(kernel.shape)}")
        if kernel.is_complex():
            raise TypeError("kernel must be real")
        if not kernel.is_floating_point():
            kernel = kernel.to(torch.float64)
        if not torch.isfinite(kernel).all():
            raise ValueError("kernel contains non-finite values (NaN or inf)")
        if rtol is not None and not (math.isfinite(rtol) and rtol >= 0):
            raise ValueError(f"rtol must be a finite number >= 0, got {rtol}")
        self.kernel = kernel
        self.scale = _check_scale(scale)
        self.rtol = rtol
        self.offset = tuple(kernel_offset(n, self.scale) for n in kernel.shape)

    def __repr__(self) -> str:
        return f"BlurDownsample(kernel={tuple(self.kernel.shape)}, scale={self.scale})"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.A(x)

    # ----------------------------------------------------------------- shapes and spectra
    def lr_shape(self, hr_shape: tuple[int, int]) -> tuple[int, int]:
        """``(H, W) -> (H/s, W/s)``, checking divisibility."""
        height, width = (int(n) for n in hr_shape)
        if height % self.scale or width % self.scale:
            raise ValueError(f"HR size {height}x{width} is not divisible by scale {self.scale}")
        return height // self.scale, width // self.scale

    def _check_hr(self, x: torch.Tensor, name: str = "x") -> None:
        _check_tensor(x, name)
        height, width = x.shape[-2:]
        if height % self.scale or width % self.scale:
            raise ValueError(f"{name} has size {height}x{width}, which is not divisible by scale {self.scale}")

    def kernel_spectrum(self, hr_shape: tuple[int, int], *, dtype=torch.float64, device=None) -> torch.Tensor:
        """DFT ``H`` (complex, shape ``hr_shape``) of the kernel placed on the HR grid, so that the
        blur is ``ifft2(fft2(x) * H)``."""
        height, width = (int(n) for n in hr_shape)
        kernel = self.kernel.to(dtype=dtype, device=device)
        kh, kw = kernel.shape
        # Blur output i reads x[i + t - c]: h[(c - t) mod H] = k[t] (entries that wrap are summed).
        rows = (self.offset[0] - torch.arange(kh, device=kernel.device)) % height
        cols = (self.offset[1] - torch.arange(kw, device=kernel.device)) % width
        flat = (rows[:, None] * width + cols[None, :]).reshape(-1)
        h = kernel.new_zeros(height * width).index_add(0, flat, kernel.reshape(-1)).reshape(height, width)
        return torch.fft.fft2(h)

    def AAt_spectrum(self, lr_shape: tuple[int, int], *, dtype=torch.float64, device=None) -> torch.Tensor:
        """Eigenvalues ``lambda`` (real, ``lr_shape``) of the circulant ``A A^T`` on the LR grid, indexed
        like ``torch.fft.fft2`` of an LR image: the mean of ``|H|^2`` over the ``s^2`` aliases."""
        h_lr, w_lr = (int(n) for n in lr_shape)
        s = self.scale
        power = self.kernel_spectrum((h_lr * s, w_lr * s), dtype=dtype, device=device).abs() ** 2
        # HR frequency index a*(H/s) + k' aliases onto LR frequency k'.
        return power.reshape(s, h_lr, s, w_lr).mean(dim=(0, 2))

    def _rtol(self, dtype: torch.dtype) -> float:
        return self.rtol if self.rtol is not None else 100 * torch.finfo(dtype).eps

    # ----------------------------------------------------------------- the operator
    def A(self, x: torch.Tensor) -> torch.Tensor:
        """Blur (circularly) then keep pixels ``s*j``: ``(..., H, W) -> (..., H/s, W/s)``."""
        self._check_hr(x)
        spectrum = self.kernel_spectrum(x.shape[-2:], dtype=x.dtype, device=x.device)
        width = x.shape[-1]
        blurred = torch.fft.irfft2(torch.fft.rfft2(x) * spectrum[:, : width // 2 + 1], s=x.shape[-2:])
        return blurred[..., :: self.scale, :: self.scale]

    def At(self, y: torch.Tensor) -> torch.Tensor:
        """The exact adjoint: zero-fill onto the HR grid, then correlate with the kernel."""
        _check_tensor(y, "y")
        s = self.scale
        hr_shape = (y.shape[-2] * s, y.shape[-1] * s)
        upsampled = y.new_zeros(*y.shape[:-2], *hr_shape)
        upsampled[..., ::s, ::s] = y
        spectrum = self.kernel_spectrum(hr_shape, dtype=y.dtype, device=y.device)
        return torch.fft.irfft2(
            torch.fft.rfft2(upsampled) * spectrum[:, : hr_shape[1] // 2 + 1].conj(), s=hr_shape
        )

    def _apply_AAt_pinv(self, y: torch.Tensor) -> torch.Tensor:
        """``(A A^T)^+ y`` through the LR Fourier transform."""
        eigenvalues = self.AAt_spectrum(y.shape[-2:], dtype=y.dtype, device=y.device)
        keep = eigenvalues > self._rtol(y.dtype) * eigenvalues.max()
        inverse = torch.where(keep, 1.0 / torch.where(keep, eigenvalues, torch.ones_like(eigenvalues)), 0.0)
        return torch.fft.ifft2(torch.fft.fft2(y) * inverse).real

    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        """The Moore-Penrose pseudo-inverse ``A^+ y = A^T (A A^T)^+ y``: the minimum-norm ``x``
        among the least-squares solutions of ``A x = y`` (an exact solution when ``y`` is in the range)."""
        _check_tensor(y, "y")
        return self.At(self._apply_AAt_pinv(y))

    def project(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Orthogonal projection of ``x`` onto the affine set ``{x : A x = y}``: ``x - A^+ (A x - y)``.

        (For ``y`` outside the range of ``A`` the set is empty and this projects onto the
        least-squares solutions.)"""
        residual = self.A(x)
        _check_tensor(y, "y")
        if residual.shape[-2:] != y.shape[-2:]:
            raise ValueError(
                f"y has LR size {tuple(y.shape[-2:])} but A(x) has {tuple(residual.shape[-2:])} "
                f"(x: {tuple(x.shape)}, scale {self.scale})"
            )
        return x - self.pinv(residual - y)

    def nullspace_project(self, x: torch.Tensor) -> torch.Tensor:
        """``(I - A^+ A) x``: the part of ``x`` that ``A`` cannot see (orthogonal projection onto ker A)."""
        return x - self.pinv(self.A(x))

    def matrix(self, hr_shape: tuple[int, int], *, dtype=torch.float64) -> torch.Tensor:
        """The dense matrix of ``A`` on one ``H x W`` channel, shape ``(H*W/s^2, H*W)``, for tiny images
        (at most 4096 pixels). Images are flattened row-major: ``A(x).flatten() == M @ x.flatten()``."""
        height, width = (int(n) for n in hr_shape)
        self.lr_shape((height, width))
        if height * width > 4096:
            raise ValueError(f"matrix() is for tiny images (at most 4096 pixels), got {height}x{width}")
        basis = torch.eye(height * width, dtype=dtype).reshape(height * width, height, width)
        return self.A(basis).reshape(height * width, -1).T.contiguous()


def Subsample(scale: int) -> BlurDownsample:  # noqa: N802 - reads like the operator it returns
    """Plain decimation ``x[..., ::s, ::s]`` as a :class:`BlurDownsample` (a delta kernel of size ``s x s``
    with its one at ``[0, 0]``, so that the offset ``c`` is 0)."""
    scale = _check_scale(scale)
    kernel = torch.zeros(scale, scale, dtype=torch.float64)
    kernel[0, 0] = 1.0
    return BlurDownsample(kernel, scale)
