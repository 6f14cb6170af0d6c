"""The degradation ``y = A x`` as one family of linear operators: ``A``, ``A^T``, ``A^+``, projections.

Super-resolution with a known degradation is the linear inverse problem ``y = A x``. Every method,
metric and chapter of the course uses one of the operators below, all built on one base class
(the design follows deepinv's physics operators):

* :class:`LinearOperator`: the contract (``A``/``forward``, ``At``, ``pinv``, ``project``,
  ``nullspace_project``, ``prox_l2``, ``matrix``) with generic defaults (autograd adjoint,
  conjugate gradients);
* :class:`BlurDownsample` ``(kernel, scale, boundary)``: blur with a kernel, keep one pixel in
  ``s x s``; ``"periodic"`` (exact FFT adjoint, pseudo-inverse and ``prox_l2``), ``"symmetric"``
  (mirrored borders, as MATLAB and scipy's ``'reflect'``), ``"valid"`` (no padding: KernelGAN's
  generator);
* :class:`BicubicDownsample` ``(scale)``: MATLAB's ``imresize(x, 1/s)``, the benchmarks' LR images
  and ``metrics.lr_psnr``;
* :class:`MatrixOperator` ``(M)``: a plain matrix on vectors (the 2D toy).

Alignment convention of ``BlurDownsample`` (per axis; the same for rows and columns). For a kernel
of size ``K`` and an integer scale ``s`` let ``c = ceil((K - s) / 2)``. With periodic or symmetric
boundaries

    (A x)[j] = sum_t k[t] * x[s*j + t - c]      (indices wrapped, or mirrored, into the image),

and with ``"valid"`` boundaries ``(A x)[j] = sum_t k[t] * x[s*j + t]`` for every ``j`` whose
window fits in the image (``torch.nn.functional.conv2d(x, k, stride=s)``). MATLAB's ``imresize``
places LR pixel ``j`` at HR coordinate ``s*j + (s-1)/2``, the centre of its ``s x s`` block; with
the offset ``c`` the kernel's geometric centre ``(K-1)/2`` lands exactly there when ``K`` and ``s``
have the same parity, and half an HR pixel up and to the left of it otherwise. So
``BlurDownsample(bicubic_kernel(s), s)`` reproduces ``imresize(x, 1/s)`` away from the borders, an
``s x s`` box kernel averages each block, and for odd ``K`` and ``s = 2`` the periodic operator
equals ``scipy.ndimage.correlate(x, k, mode='wrap')[::2, ::2]``.
:func:`~course_lib.degradation.kernels.shift_kernel_to_centre` moves a kernel's centre of mass onto
the LR pixel centre.

Spectral facts behind the periodic operator (``h`` is the kernel placed on the ``H x W`` HR grid so
that the blur ``B`` is the circular convolution ``x * h``; ``K[p, q]`` is the 2D DFT of ``h``; ``S``
keeps every ``s``-th pixel; the LR grid is ``m x n = H/s x W/s``):

* ``A^T y = B^T S^T y``: put ``y`` on the HR grid with zeros in between, then correlate with the
  kernel (multiply the DFT by ``conj(K)``).
* ``A P^{-1} A^T`` is circulant on the LR grid for any circulant ``P`` on the HR grid (shifting
  ``y`` by one LR pixel shifts everything by ``s`` HR pixels). Its eigenvalues are the average of
  ``|K|^2 / P`` over the ``s^2`` HR frequencies that alias onto each LR frequency. With ``P = I``:
  ``lambda[p, q] = (1/s^2) sum_{a,b=0}^{s-1} |K[p + a m, q + b n]|^2``.
* ``A^+ = A^T (A A^T)^+`` for any matrix; ``(A A^T)^+`` divides by ``lambda`` in the LR Fourier
  domain, with eigenvalues ``lambda <= rtol * max(lambda)`` treated as exact zeros (a true
  pseudo-inverse; ``rtol`` on ``lambda = sigma^2`` means singular values below
  ``sqrt(rtol) * sigma_max`` are dropped).
* ``prox_l2`` (below) solves ``(A^T A + P) d = A^T r`` by the push-through identity
  ``d = P^{-1} A^T (I + A P^{-1} A^T)^{-1} r``: two FFTs on each grid.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .bicubic import _check_scale_int as _check_scale
from .bicubic import _contributions, imresize

__all__ = [
    "LinearOperator",
    "ImageOperator",
    "BlurDownsample",
    "BicubicDownsample",
    "MatrixOperator",
    "Subsample",
    "CirculantWeight",
    "gradient_penalty",
    "conjugate_gradient",
    "BOUNDARIES",
    "kernel_offset",
    "kernel_target_centre",
]

Tensor = torch.Tensor
BOUNDARIES = ("periodic", "symmetric", "valid")


def kernel_offset(size: int, scale: int) -> int:
    """The offset ``c = ceil((size - scale) / 2)``: kernel entry ``t`` reads HR pixel ``s*j + t - c``."""
    return -((scale - size) // 2)


def kernel_target_centre(size: int, scale: int) -> float:
    """Kernel coordinate (0-based, per axis) that lands on the centre of an LR pixel: ``c + (s-1)/2``.

    Equals the geometric centre ``(size-1)/2`` when ``size`` and ``scale`` have the same parity.
    """
    return kernel_offset(size, scale) + (scale - 1) / 2


def _check_tensor(x, name: str, min_dim: int = 2) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim < min_dim:
        dims = "(..., H, W)" if min_dim == 2 else "(..., n)"
        raise ValueError(f"{name} must have at least {min_dim} dimensions {dims}, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a real floating-point tensor, got {x.dtype}")


def _default_tol(dtype: torch.dtype) -> float:
    return 1e-10 if dtype == torch.float64 else 1e-5


def conjugate_gradient(apply: Callable[[Tensor], Tensor], b: Tensor, *, tol: float | None = None,
                       max_iter: int = 1000) -> Tensor:
    """Solve ``apply(x) = b`` for a symmetric positive semi-definite ``apply`` by conjugate gradients.

    Starts from ``x = 0``, so for a singular system with ``b`` in its range the iterates stay in the
    range and converge to the minimum-norm solution. Stops when ``||b - apply(x)|| <= tol ||b||``
    (default ``tol``: 1e-10 in float64, 1e-5 in float32) and warns when ``max_iter`` is reached first.
    The whole tensor is one vector: batches and channels are solved together (the operators here act
    on each of them alike, so the system is block diagonal).
    """
    tol = _default_tol(b.dtype) if tol is None else tol
    x = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rs = (r * r).sum()
    target = tol * rs.sqrt()
    if rs == 0:
        return x
    for _ in range(max_iter):
        ap = apply(p)
        curvature = (p * ap).sum()
        if curvature <= 0:  # the residual lies in the null space: x is as good as it gets
            break
        alpha = rs / curvature
        x = x + alpha * p
        r = r - alpha * ap
        rs_new = (r * r).sum()
        if rs_new.sqrt() <= target:
            return x
        p = r + (rs_new / rs) * p
        rs = rs_new
    else:
        warnings.warn(f"conjugate_gradient stopped after max_iter={max_iter} iterations with relative residual "
                      f"{float(rs.sqrt() / (target / tol)):.2e} > tol={tol:g}", RuntimeWarning, stacklevel=2)
    return x


class CirculantWeight:
    """A symmetric positive semi-definite circulant ``W`` on an image grid, given by its DFT eigenvalues.

    ``spectrum_fn(shape, dtype, device)`` returns the real eigenvalues (shape ``shape``, indexed like
    ``torch.fft.fft2``). Calling the object applies ``W`` to the last two dimensions of an image.
    """

    def __init__(self, spectrum_fn: Callable[[tuple[int, int], torch.dtype, torch.device], Tensor], name: str = "W"):
        self.spectrum_fn = spectrum_fn
        self.name = name

    def __repr__(self) -> str:
        return f"CirculantWeight({self.name})"

    def spectrum(self, shape: tuple[int, int], *, dtype=torch.float64, device=None) -> Tensor:
        return self.spectrum_fn(tuple(int(n) for n in shape), dtype, device)

    def __call__(self, x: Tensor) -> Tensor:
        eigenvalues = self.spectrum(x.shape[-2:], dtype=x.dtype, device=x.device)
        return torch.fft.ifft2(torch.fft.fft2(x) * eigenvalues).real


def gradient_penalty(eps: float = 0.0) -> CirculantWeight:
    """``W = D_v^T D_v + D_h^T D_h + eps I`` (periodic forward differences):
    ``x^T W x = ||grad x||^2 + eps ||x||^2``."""
    if not (math.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps must be a finite number >= 0, got {eps}")

    def spectrum(shape, dtype, device):
        fy = torch.fft.fftfreq(shape[0], dtype=dtype, device=device)[:, None]
        fx = torch.fft.fftfreq(shape[1], dtype=dtype, device=device)[None, :]
        return (2 - 2 * torch.cos(2 * torch.pi * fy)) + (2 - 2 * torch.cos(2 * torch.pi * fx)) + eps

    return CirculantWeight(spectrum, f"|grad|^2 + {eps:g} I")


class LinearOperator(nn.Module):
    """A linear map ``A`` from signals ``x`` to measurements ``y``; calling the operator applies ``A``.

    A subclass implements :meth:`A` and :meth:`in_shape` (the shape of ``x`` for a given ``y``), and
    overrides the others where a closed form exists:

    * :meth:`At`, the adjoint: by default the vector-Jacobian product of ``A`` (autograd);
    * :meth:`pinv`, the Moore-Penrose pseudo-inverse ``A^+ y``: by default conjugate gradients on the
      normal equations ``A^T A x = A^T y`` from ``x = 0`` (the minimum-norm least-squares solution);
    * :meth:`project` onto ``{x : A x = y}``, :meth:`nullspace_project` onto ``ker A``;
    * :meth:`prox_l2`, the regularised least-squares solve
      ``argmin_x 1/2 ||A x - y||^2 + 1/(2 gamma) (x - z)^T W (x - z)``;
    * :meth:`matrix`, the dense matrix for small sizes.

    Args (keyword only, for the iterative defaults): ``cg_tol`` (relative residual; default 1e-10 in
    float64, 1e-5 in float32) and ``cg_max_iter``.
    """

    def __init__(self, *, cg_tol: float | None = None, cg_max_iter: int = 1000):
        super().__init__()
        if cg_tol is not None and not (math.isfinite(cg_tol) and cg_tol > 0):
            raise ValueError(f"cg_tol must be a positive finite number, got {cg_tol}")
        if isinstance(cg_max_iter, bool) or not isinstance(cg_max_iter, int) or cg_max_iter < 1:
            raise ValueError(f"cg_max_iter must be a positive int, got {cg_max_iter!r}")
        self.cg_tol = cg_tol
        self.cg_max_iter = cg_max_iter

    # ----------------------------------------------------------------- what a subclass provides
    def A(self, x: Tensor) -> Tensor:
        """``y = A x``."""
        raise NotImplementedError(f"{type(self).__name__} must implement A(x)")

    def in_shape(self, y_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape of ``x`` that ``A`` maps to a ``y`` of shape ``y_shape`` (used by the adjoint)."""
        raise NotImplementedError(f"{type(self).__name__} must implement in_shape(y_shape)")

    def _check_y(self, y: Tensor) -> None:
        _check_tensor(y, "y", min_dim=1)

    # ----------------------------------------------------------------- the contract
    def forward(self, x: Tensor) -> Tensor:
        return self.A(x)

    def At(self, y: Tensor) -> Tensor:
        """The adjoint ``A^T y``: the gradient of ``<A x, y>`` with respect to ``x`` (autograd)."""
        self._check_y(y)
        x = torch.zeros(self.in_shape(tuple(y.shape)), dtype=y.dtype, device=y.device, requires_grad=True)
        with torch.enable_grad():
            out = self.A(x)
            (grad,) = torch.autograd.grad(out, x, grad_outputs=y, create_graph=torch.is_grad_enabled())
        return grad

    def AtA(self, x: Tensor) -> Tensor:
        """``A^T A x``."""
        return self.At(self.A(x))

    def pinv(self, y: Tensor) -> Tensor:
        """``A^+ y``: the minimum-norm least-squares solution of ``A x = y`` (conjugate gradients)."""
        self._check_y(y)
        return conjugate_gradient(self.AtA, self.At(y), tol=self.cg_tol, max_iter=self.cg_max_iter)

    def _check_measurement(self, ax: Tensor, y: Tensor) -> None:
        _check_tensor(y, "y", min_dim=1)
        if ax.shape != y.shape:
            raise ValueError(f"y has shape {tuple(y.shape)} but A(x) has {tuple(ax.shape)}: y must be what A produces")

    def project(self, x: Tensor, y: Tensor) -> Tensor:
        """Orthogonal projection of ``x`` onto ``{x : A x = y}``: ``x - A^+ (A x - y)``.

        (For ``y`` outside the range of ``A`` the set is empty and this projects onto the
        least-squares solutions.)"""
        residual = self.A(x)
        self._check_measurement(residual, y)
        return x - self.pinv(residual - y)

    def nullspace_project(self, x: Tensor) -> Tensor:
        """``(I - A^+ A) x``: the part of ``x`` that ``A`` cannot see (orthogonal projection onto ker A)."""
        return x - self.pinv(self.A(x))

    def prox_l2(self, z: Tensor, y: Tensor, gamma: float, *, weight: CirculantWeight | None = None) -> Tensor:
        """``argmin_x 1/2 ||A x - y||^2 + 1/(2 gamma) (x - z)^T W (x - z)``, with ``W = I`` by default.

        The solution of ``(A^T A + W / gamma) x = A^T y + W z / gamma`` (conjugate gradients here;
        closed form for the periodic :class:`~course_lib.degradation.operators.BlurDownsample`). ``weight`` is a
        positive (semi-)definite :class:`~course_lib.degradation.operators.CirculantWeight` such as
        :func:`~course_lib.degradation.operators.gradient_penalty`; with ``z = 0`` this is Tikhonov
        regularised least squares, the Wiener filter of :func:`course_lib.zssr.wiener_sr`.
        """
        gamma = _check_gamma(gamma)
        self._check_measurement(self.A(z), y)
        w = weight if weight is not None else (lambda v: v)

        def normal(v: Tensor) -> Tensor:
            return self.AtA(v) + w(v) / gamma

        # solve for the step d = x - z: (A^T A + W/gamma) d = A^T (y - A z)
        d = conjugate_gradient(normal, self.At(y - self.A(z)), tol=self.cg_tol, max_iter=self.cg_max_iter)
        return z + d

    def matrix(self, in_shape: tuple[int, ...], *, dtype=torch.float64) -> Tensor:
        """The dense matrix of ``A`` for an input of shape ``in_shape`` (at most 4096 entries), shape
        ``(numel(A x), numel(x))``; inputs and outputs are flattened row-major:
        ``A(x).flatten() == M @ x.flatten()``."""
        in_shape = tuple(int(n) for n in in_shape)
        size = math.prod(in_shape)
        if size > 4096:
            raise ValueError(f"matrix() is for tiny inputs (at most 4096 entries), got shape {in_shape}")
        basis = torch.eye(size, dtype=dtype).reshape(size, *in_shape)
        return self.A(basis).reshape(size, -1).T.contiguous()


def _check_gamma(gamma) -> float:
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not math.isfinite(gamma) or gamma <= 0:
        raise ValueError(f"gamma must be a positive finite number, got {gamma!r}")
    return float(gamma)


class ImageOperator(LinearOperator):
    """A :class:`LinearOperator` on images: ``(..., H, W) -> (..., h, w)``, the same map on every channel."""

    def _describe(self) -> str:
        return type(self).__name__

    def _check_y(self, y: Tensor) -> None:
        _check_tensor(y, "y")

    def _check_measurement(self, ax: Tensor, y: Tensor) -> None:
        _check_tensor(y, "y")
        if ax.shape[-2:] != y.shape[-2:]:
            raise ValueError(f"y has LR size {tuple(y.shape[-2:])} but A(x) has {tuple(ax.shape[-2:])} "
                             f"({self._describe()})")


# --------------------------------------------------------------------------- blur and subsample
def _pad_symmetric(x: Tensor, pad: int) -> Tensor:
    """Mirror-pad the last two dims by ``pad`` with edge repetition (``... b a | a b ...``), as MATLAB's
    ``'symmetric'`` and scipy.ndimage's ``'reflect'``; works for any ``pad``."""
    for dim in (-2, -1):
        n = x.shape[dim]
        mirror = torch.cat([torch.arange(n), torch.arange(n - 1, -1, -1)]).to(x.device)
        index = mirror[torch.arange(-pad, n + pad, device=x.device) % (2 * n)]
        x = x.index_select(dim, index)
    return x


class BlurDownsample(ImageOperator):
    """``A x``: ``x`` blurred (correlated) with ``kernel``, then one pixel kept in ``scale x scale``.

    Acts on the last two dimensions of any tensor ``(..., H, W)`` (every channel and batch item with
    the same kernel), on any device, differentiably (also with respect to the kernel). See the module
    docstring for the alignment convention.

    Args:
        kernel: 2D array ``(Kh, Kw)`` of finite values (any size, odd or even; need not sum to 1).
        scale: positive int ``s``.
        boundary: ``"periodic"`` (the blur wraps around; ``H``, ``W`` divisible by ``s``; exact FFT
            adjoint, pseudo-inverse and ``prox_l2``), ``"symmetric"`` (the image is mirrored at its
            borders; ``H``, ``W`` divisible by ``s``), or ``"valid"`` (no padding: output
            ``(H - Kh) // s + 1`` by ``(W - Kw) // s + 1``, the map of KernelGAN's linear generator).
        rtol: relative threshold on the eigenvalues of ``A A^T`` for the periodic pseudo-inverse;
            default ``100 * eps`` of the data's dtype.
        cg_tol, cg_max_iter: for the iterative methods of the other boundaries (:class:`LinearOperator`).
    """

    def __init__(self, kernel, scale: int, boundary: str = "periodic", *, rtol: float | None = None,
                 cg_tol: float | None = None, cg_max_iter: int = 1000):
        super().__init__(cg_tol=cg_tol, cg_max_iter=cg_max_iter)
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
        if boundary not in BOUNDARIES:
            raise ValueError(f"boundary must be one of {BOUNDARIES}, got {boundary!r}")
        self.register_buffer("kernel", kernel, persistent=False)
        self.scale = _check_scale(scale)
        self.boundary = boundary
        self.rtol = rtol
        self.offset = tuple(kernel_offset(n, self.scale) for n in kernel.shape)

    def extra_repr(self) -> str:
        return f"kernel={tuple(self.kernel.shape)}, scale={self.scale}, boundary={self.boundary!r}"

    # ----------------------------------------------------------------- shapes
    def lr_shape(self, hr_shape: tuple[int, int]) -> tuple[int, int]:
        """``(H, W) -> (h, w)``: ``(H/s, W/s)`` (checking divisibility), or the valid size."""
        height, width = (int(n) for n in hr_shape)
        if self.boundary == "valid":
            kh, kw = self.kernel.shape
            if height < kh or width < kw:
                raise ValueError(f"HR size {height}x{width} is smaller than the kernel {kh}x{kw} ('valid' boundary)")
            return (height - kh) // self.scale + 1, (width - kw) // self.scale + 1
        if height % self.scale or width % self.scale:
            raise ValueError(f"HR size {height}x{width} is not divisible by scale {self.scale}")
        return height // self.scale, width // self.scale

    def in_shape(self, y_shape: tuple[int, ...]) -> tuple[int, ...]:
        """``(..., h, w) -> (..., H, W)``; for ``"valid"`` the smallest HR size that gives ``h x w``."""
        h, w = y_shape[-2:]
        s = self.scale
        if self.boundary == "valid":
            kh, kw = self.kernel.shape
            return (*y_shape[:-2], s * (h - 1) + kh, s * (w - 1) + kw)
        return (*y_shape[:-2], h * s, w * s)

    def _check_hr(self, x: Tensor, name: str = "x") -> None:
        _check_tensor(x, name)
        height, width = x.shape[-2:]
        if self.boundary == "valid":
            self.lr_shape((height, width))
        elif height % self.scale or width % self.scale:
            raise ValueError(f"{name} has size {height}x{width}, which is not divisible by scale {self.scale}")

    def _describe(self) -> str:
        return f"scale {self.scale}, boundary {self.boundary!r}"

    # ----------------------------------------------------------------- spectra (periodic)
    def kernel_spectrum(self, hr_shape: tuple[int, int], *, dtype=torch.float64, device=None) -> Tensor:
        """DFT ``H`` (complex, shape ``hr_shape``) of the kernel placed on the periodic HR grid, so that
        the blur is ``ifft2(fft2(x) * H)``."""
        height, width = (int(n) for n in hr_shape)
        kernel = self.kernel.to(dtype=dtype, device=device)
        kh, kw = kernel.shape
        # Blur output i reads x[i + t - c]: h[(c - t) mod H] = k[t] (entries that wrap are summed).
        rows = (self.offset[0] - torch.arange(kh, device=kernel.device)) % height
        cols = (self.offset[1] - torch.arange(kw, device=kernel.device)) % width
        flat = (rows[:, None] * width + cols[None, :]).reshape(-1)
        h = kernel.new_zeros(height * width).index_add(0, flat, kernel.reshape(-1)).reshape(height, width)
        return torch.fft.fft2(h)

    def _alias_mean(self, hr_values: Tensor) -> Tensor:
        """Average an HR-grid spectrum over the ``s^2`` frequencies aliasing onto each LR frequency."""
        s = self.scale
        height, width = hr_values.shape[-2:]
        return hr_values.reshape(s, height // s, s, width // s).mean(dim=(0, 2))

    def AAt_spectrum(self, lr_shape: tuple[int, int], *, dtype=torch.float64, device=None) -> Tensor:
        """Eigenvalues ``lambda`` (real, ``lr_shape``) of the circulant ``A A^T`` of the periodic operator,
        indexed like ``torch.fft.fft2`` of an LR image: the mean of ``|H|^2`` over the ``s^2`` aliases."""
        h_lr, w_lr = (int(n) for n in lr_shape)
        s = self.scale
        return self._alias_mean(self.kernel_spectrum((h_lr * s, w_lr * s), dtype=dtype, device=device).abs() ** 2)

    def _rtol(self, dtype: torch.dtype) -> float:
        return self.rtol if self.rtol is not None else 100 * torch.finfo(dtype).eps

    # ----------------------------------------------------------------- the operator
    def _periodic(self, x: Tensor) -> Tensor:
        spectrum = self.kernel_spectrum(x.shape[-2:], dtype=x.dtype, device=x.device)
        width = x.shape[-1]
        blurred = torch.fft.irfft2(torch.fft.rfft2(x) * spectrum[:, : width // 2 + 1], s=x.shape[-2:])
        return blurred[..., :: self.scale, :: self.scale]

    def A(self, x: Tensor) -> Tensor:
        """Blur then keep pixels ``s*j``: ``(..., H, W) -> (..., h, w)``."""
        self._check_hr(x)
        if self.boundary == "periodic":
            return self._periodic(x)
        if self.boundary == "symmetric":  # pad by whole LR pixels, at least the kernel's reach, then drop them
            pad_lr = math.ceil(max(self.kernel.shape) / self.scale)
            return self._periodic(_pad_symmetric(x, pad_lr * self.scale))[..., pad_lr:-pad_lr, pad_lr:-pad_lr]
        height, width = x.shape[-2:]
        out = F.conv2d(x.reshape(-1, 1, height, width), self.kernel.to(x.dtype)[None, None], stride=self.scale)
        return out.reshape(*x.shape[:-2], *out.shape[-2:])

    def At(self, y: Tensor) -> Tensor:
        """The adjoint: zero-fill onto the HR grid, then correlate with the kernel (closed form for
        ``"periodic"`` and ``"valid"``; autograd for ``"symmetric"``, whose adjoint folds the mirrored
        borders back)."""
        _check_tensor(y, "y")
        s = self.scale
        if self.boundary == "symmetric":
            return super().At(y)
        if self.boundary == "valid":
            h, w = y.shape[-2:]
            out = F.conv_transpose2d(y.reshape(-1, 1, h, w), self.kernel.to(y.dtype)[None, None], stride=s)
            return out.reshape(*y.shape[:-2], *out.shape[-2:])
        hr_shape = (y.shape[-2] * s, y.shape[-1] * s)
        upsampled = y.new_zeros(*y.shape[:-2], *hr_shape)
        upsampled[..., ::s, ::s] = y
        spectrum = self.kernel_spectrum(hr_shape, dtype=y.dtype, device=y.device)
        return torch.fft.irfft2(torch.fft.rfft2(upsampled) * spectrum[:, : hr_shape[1] // 2 + 1].conj(), s=hr_shape)

    def pinv(self, y: Tensor) -> Tensor:
        """``A^+ y = A^T (A A^T)^+ y``: the minimum-norm least-squares solution of ``A x = y``. Exact in
        the LR Fourier domain for ``"periodic"``; conjugate gradients otherwise."""
        _check_tensor(y, "y")
        if self.boundary != "periodic":
            return super().pinv(y)
        eigenvalues = self.AAt_spectrum(y.shape[-2:], dtype=y.dtype, device=y.device)
        keep = eigenvalues > self._rtol(y.dtype) * eigenvalues.max()
        inverse = torch.where(keep, 1.0 / torch.where(keep, eigenvalues, torch.ones_like(eigenvalues)), 0.0)
        return self.At(torch.fft.ifft2(torch.fft.fft2(y) * inverse).real)

    def prox_l2(self, z: Tensor, y: Tensor, gamma: float, *, weight: CirculantWeight | None = None) -> Tensor:
        """As :meth:`LinearOperator.prox_l2`; closed form for ``"periodic"`` by the push-through identity
        ``d = P^{-1} A^T (I + A P^{-1} A^T)^{-1} (y - A z)`` with ``P = W / gamma`` (see the module docstring).
        ``W`` must be positive definite there (e.g. ``gradient_penalty(eps)`` with ``eps > 0``)."""
        if self.boundary != "periodic":
            return super().prox_l2(z, y, gamma, weight=weight)
        gamma = _check_gamma(gamma)
        residual = self.A(z)
        self._check_measurement(residual, y)
        residual = y - residual
        hr_shape = z.shape[-2:]
        if weight is None:
            p = torch.full(tuple(hr_shape), 1.0 / gamma, dtype=z.dtype, device=z.device)
        else:
            p = weight.spectrum(hr_shape, dtype=z.dtype, device=z.device) / gamma
            if not bool((p > 0).all()):
                raise ValueError(f"the weight {weight} must be positive definite for the closed-form prox_l2")
        power = self.kernel_spectrum(hr_shape, dtype=z.dtype, device=z.device).abs() ** 2
        lam = self._alias_mean(power / p)
        u = torch.fft.ifft2(torch.fft.fft2(residual) / (1 + lam)).real
        return z + torch.fft.ifft2(torch.fft.fft2(self.At(u)) / p).real

    def matrix(self, hr_shape: tuple[int, int], *, dtype=torch.float64) -> Tensor:
        """The dense matrix of ``A`` on one ``H x W`` channel, shape ``(h*w, H*W)``, for tiny images
        (at most 4096 pixels). Images are flattened row-major: ``A(x).flatten() == M @ x.flatten()``."""
        height, width = (int(n) for n in hr_shape)
        self.lr_shape((height, width))
        return super().matrix((height, width), dtype=dtype)


def Subsample(scale: int) -> BlurDownsample:  # noqa: N802 - reads like the operator it returns
    """Plain decimation ``x[..., ::s, ::s]`` as a :class:`BlurDownsample` (a delta kernel of size ``s x s``
    with its one at ``[0, 0]``, so that the offset ``c`` is 0)."""
    scale = _check_scale(scale)
    kernel = torch.zeros(scale, scale, dtype=torch.float64)
    kernel[0, 0] = 1.0
    return BlurDownsample(kernel, scale)


# --------------------------------------------------------------------------- MATLAB bicubic
class BicubicDownsample(ImageOperator):
    """``A x = imresize(x, 1/scale)``: MATLAB's antialiased bicubic downscaling, the degradation of every
    SR benchmark (:func:`~course_lib.degradation.bicubic.imresize`; symmetric borders, no rounding).

    It is separable, ``A x = R_H x R_W^T`` with the 1D resize matrices ``R``, so its adjoint is
    ``R_H^T y R_W`` (closed form). ``H`` and ``W`` must be divisible by ``scale``. The pseudo-inverse
    uses conjugate gradients.
    """

    def __init__(self, scale: int, *, cg_tol: float | None = None, cg_max_iter: int = 1000):
        super().__init__(cg_tol=cg_tol, cg_max_iter=cg_max_iter)
        self.scale = _check_scale(scale)

    def extra_repr(self) -> str:
        return f"scale={self.scale}"

    def in_shape(self, y_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (*y_shape[:-2], y_shape[-2] * self.scale, y_shape[-1] * self.scale)

    def _describe(self) -> str:
        return f"MATLAB bicubic, scale {self.scale}"

    def resize_matrix(self, hr_len: int, *, dtype=torch.float64, device=None) -> Tensor:
        """The 1D matrix ``R`` (``hr_len / s`` by ``hr_len``) of MATLAB's bicubic downscaling along one axis."""
        lr_len = hr_len // self.scale
        weights, indices = _contributions(hr_len, lr_len, 1.0 / self.scale, True)
        rows = torch.arange(lr_len)[:, None].expand(indices.shape)
        r = torch.zeros(lr_len, hr_len, dtype=torch.float64)
        r.index_put_((rows.reshape(-1), torch.as_tensor(indices).reshape(-1)),
                     torch.as_tensor(weights, dtype=torch.float64).reshape(-1), accumulate=True)
        return r.to(dtype=dtype, device=device)

    def A(self, x: Tensor) -> Tensor:
        _check_tensor(x, "x")
        height, width = x.shape[-2:]
        if height % self.scale or width % self.scale:
            raise ValueError(f"x has size {height}x{width}, which is not divisible by scale {self.scale}")
        flat = x.reshape(-1, height, width)
        return imresize(flat, 1.0 / self.scale).reshape(*x.shape[:-2], height // self.scale, width // self.scale)

    def At(self, y: Tensor) -> Tensor:
        """``R_H^T y R_W``."""
        _check_tensor(y, "y")
        height, width = y.shape[-2] * self.scale, y.shape[-1] * self.scale
        r_h = self.resize_matrix(height, dtype=y.dtype, device=y.device)
        r_w = self.resize_matrix(width, dtype=y.dtype, device=y.device)
        return r_h.T @ y @ r_w


# --------------------------------------------------------------------------- a plain matrix
class MatrixOperator(LinearOperator):
    """``A x = M x`` for vectors: batches ``(..., n) -> (..., m)``, with ``M`` of shape ``(m, n)``.

    The 2D toy problem of chapter 3 uses ``M = [[1/2, 1/2]]`` (one "LR pixel", the mean of two "HR
    pixels"). ``M`` must have full row rank so that ``A A^+ = I`` and every ``y`` has solutions.
    The pseudo-inverse is ``M^T (M M^T)^{-1}``, precomputed.
    """

    def __init__(self, matrix):
        super().__init__()
        m = torch.as_tensor(np.asarray(matrix, dtype=np.float64) if not isinstance(matrix, torch.Tensor) else matrix,
                            dtype=torch.float64)
        if m.ndim != 2 or m.numel() == 0:
            raise ValueError(f"matrix must be a non-empty 2D array (m, n), got shape {tuple(m.shape)}")
        if not torch.isfinite(m).all():
            raise ValueError("matrix contains non-finite values")
        rows, cols = m.shape
        if rows > cols or torch.linalg.matrix_rank(m) < rows:
            raise ValueError(f"matrix of shape {tuple(m.shape)} must have full row rank (rank {rows})")
        self.register_buffer("M", m, persistent=False)
        self.register_buffer("M_pinv", torch.linalg.pinv(m), persistent=False)  # (n, m)
        self.out_dim, self.in_dim = rows, cols

    def extra_repr(self) -> str:
        return f"{self.M.tolist()}"

    def _check(self, x, name: str, dim: int) -> None:
        _check_tensor(x, name, min_dim=1)
        if x.shape[-1] != dim:
            raise ValueError(f"{name} must have last dimension {dim} for this operator, got shape {tuple(x.shape)}")

    def in_shape(self, y_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (*y_shape[:-1], self.in_dim)

    def _check_y(self, y: Tensor) -> None:
        self._check(y, "y", self.out_dim)

    def _check_measurement(self, ax: Tensor, y: Tensor) -> None:
        self._check(y, "y", self.out_dim)

    def A(self, x: Tensor) -> Tensor:
        self._check(x, "x", self.in_dim)
        return x @ self.M.to(dtype=x.dtype, device=x.device).T

    def At(self, y: Tensor) -> Tensor:
        self._check_y(y)
        return y @ self.M.to(dtype=y.dtype, device=y.device)

    def pinv(self, y: Tensor) -> Tensor:
        self._check_y(y)
        return y @ self.M_pinv.to(dtype=y.dtype, device=y.device).T

    def matrix(self, in_shape: tuple[int, ...] | None = None, *, dtype=torch.float64) -> Tensor:
        """``M`` itself (``in_shape``, if given, must be ``(n,)``)."""
        if in_shape is not None and tuple(in_shape) != (self.in_dim,):
            raise ValueError(f"in_shape must be ({self.in_dim},), got {tuple(in_shape)}")
        return self.M.to(dtype)

    def nullspace_basis(self) -> Tensor:
        """An orthonormal basis of ker A as the columns of an ``(n, n - m)`` float64 matrix."""
        _, _, vh = torch.linalg.svd(self.M)
        return vh[self.out_dim:].T.contiguous()
