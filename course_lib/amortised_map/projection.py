"""The affine projection layer of amortised MAP inference (Sønderby et al. 2017, sec. 3).

For a noiseless linear degradation ``y = A x`` every HR image that explains ``y`` lies on the affine
subspace ``{x : A x = y}``. Any network ``g`` becomes a network whose outputs always lie there:

    f(y) = (I - A^+ A) g(y) + A^+ y  =  g(y) - A^+ (A g(y) - y),

so ``A f(y) = A g(y) - A A^+ A g(y) + A A^+ y = y`` because ``A A^+ = I`` for an ``A`` of full row
rank. ``(I - A^+ A)`` is the orthogonal projector onto the null space of ``A``: the network only
chooses the part of the image that ``A`` cannot see.

Two ways to get ``A^+`` (the pseudo-inverse) for the blur-and-subsample operator:

* **exact**: :class:`~course_lib.degradation.operators.BlurDownsample` applies ``A^+ = A^T (A A^T)^{-1}``
  through the Fourier transform (periodic boundaries make ``A A^T`` circulant on the LR grid);
* **learned**, the route of the paper: ``A^+`` commutes with shifts (shift ``y`` by one LR pixel and
  ``A^+ y`` shifts by ``s`` HR pixels), so it *is* a strided transposed convolution, only with an
  infinitely wide (but fast-decaying) kernel. :class:`LearnedPseudoInverse` is such a convolution
  with a finite kernel and periodic boundaries, and :func:`fit_pseudo_inverse` fits its kernel by
  regressing white-noise images ``x`` from ``A x``: for white ``x`` the least-squares regressor
  ``E[x (Ax)^T] E[(Ax)(Ax)^T]^{-1} = A^T (A A^T)^{-1}`` is exactly ``A^+``.

The operators themselves (``A``, ``A^T``, ``A^+``, ``project``) are the course's one family in
:mod:`course_lib.degradation.operators`; for the 2D toy problem
:class:`~course_lib.degradation.operators.MatrixOperator` is a plain matrix with the same interface.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..degradation import BlurDownsample, LinearOperator

__all__ = [
    "blur_operator",
    "LearnedPseudoInverse",
    "fit_pseudo_inverse",
    "AffineProjection",
    "ProjectedNetwork",
    "consistency_psnr",
    "consistency_rmse",
]

Tensor = torch.Tensor


def _check_float(x, name: str, min_dim: int = 1) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if x.ndim < min_dim:
        raise ValueError(f"{name} must have at least {min_dim} dimensions, got shape {tuple(x.shape)}")


def blur_operator(kernel, scale: int, *, atol: float = 1e-3) -> BlurDownsample:
    """``BlurDownsample(kernel, scale)`` after checking that the blur kernel sums to 1.

    A kernel that does not sum to 1 changes the brightness of the LR image: almost always a bug
    (a kernel normalised twice, or not at all), so we refuse it with a clear error.
    """
    operator = BlurDownsample(kernel, scale)  # checks shape and values
    total = float(operator.kernel.double().sum())
    if abs(total - 1.0) > atol:
        raise ValueError(f"blur kernel must sum to 1 (it sums to {total:.6g}); normalise it with k / k.sum()")
    return operator


# --------------------------------------------------------------------------- the learned A^+
def _circular_index(length: int, pad: int, device) -> Tensor:
    return torch.arange(-pad, length + pad, device=device) % length


class LearnedPseudoInverse(nn.Module):
    """``B y``: a strided transposed convolution with periodic boundaries, ``(..., h, w) -> (..., sh, sw)``.

    One kernel of ``(s*K) x (s*K)`` HR taps (``K = lr_taps`` LR pixels of reach, odd) shared by all
    channels, as ``A`` treats every channel alike. Written out, with ``d = n - s*j``:

        (B y)[n] = sum_j  y[j mod h] * b[n - s*j],    b[d] = weight[d + half],  -half <= d < s*K - half,

    where ``half = s*K // 2``. This is the general linear map that commutes with the shifts
    (LR by one pixel, HR by ``s``) restricted to a finite kernel; the exact ``A^+`` is one such map
    with an infinite kernel. :meth:`from_operator` truncates the exact kernel,
    :func:`fit_pseudo_inverse` learns it as the paper does.

    Paper: Sønderby et al. 2017 (ICLR), learned A^+ · Book: ch. 3, "Learning A^+ as a ..." · Official code: none public
    """

    def __init__(self, scale: int, lr_taps: int = 9):
        super().__init__()
        if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
            raise ValueError(f"scale must be a positive int, got {scale!r}")
        if isinstance(lr_taps, bool) or not isinstance(lr_taps, int) or lr_taps < 1 or lr_taps % 2 == 0:
            raise ValueError(f"lr_taps must be a positive odd int, got {lr_taps!r}")
        self.scale = scale
        self.lr_taps = lr_taps
        self.size = scale * lr_taps
        self.half = self.size // 2
        self.weight = nn.Parameter(torch.zeros(self.size, self.size))
        # LR pixels of padding so that every tap finds its input (see the class docstring).
        self.pad = -(-max(self.half, self.size - self.half - 1) // scale)

    def forward(self, y: Tensor) -> Tensor:
        _check_float(y, "y", min_dim=2)
        if not torch.isfinite(y).all():
            raise ValueError("y contains non-finite values")
        h, w = y.shape[-2:]
        s, p = self.scale, self.pad
        flat = y.reshape(-1, 1, h, w)
        rows = _circular_index(h, p, y.device)
        cols = _circular_index(w, p, y.device)
        padded = flat[:, :, rows][:, :, :, cols]
        weight = self.weight.to(y.dtype)[None, None]
        out = F.conv_transpose2d(padded, weight, stride=s)
        start = s * p + self.half
        out = out[:, :, start:start + s * h, start:start + s * w]
        return out.reshape(*y.shape[:-2], s * h, s * w)

    @classmethod
    def from_operator(cls, operator: BlurDownsample, lr_taps: int = 9, *, grid: int | None = None
                      ) -> LearnedPseudoInverse:
        """The exact ``A^+`` kernel (impulse response on a large periodic grid) truncated to the window."""
        layer = cls(operator.scale, lr_taps)
        grid = grid or max(4 * lr_taps, 32)
        impulse = torch.zeros(grid, grid, dtype=torch.float64)
        impulse[0, 0] = 1.0
        response = operator.pinv(impulse)  # (s*grid, s*grid), b[d] at index d mod s*grid
        idx = (torch.arange(layer.size) - layer.half) % (operator.scale * grid)
        with torch.no_grad():
            layer.weight.copy_(response[idx][:, idx].to(layer.weight.dtype))
        return layer


def _noise_images(operator: BlurDownsample, noise: str, n: int, channels: int, hr_size: int,
                  generator: torch.Generator) -> Tensor:
    """White-noise HR images, or ``A^T z`` for white LR noise ``z`` (no null-space part), unit variance."""
    if noise == "white":
        return torch.randn(n, channels, hr_size, hr_size, generator=generator)
    lr_size = hr_size // operator.scale
    x = operator.At(torch.randn(n, channels, lr_size, lr_size, generator=generator))
    return x / x.pow(2).mean().sqrt()


def _fit_lstsq(layer: LearnedPseudoInverse, operator: BlurDownsample, x: Tensor) -> None:
    """Least squares for the kernel in closed form, one small problem per output phase.

    Tap ``k`` (offset ``d = k - half``) only writes HR pixels ``n = s*i + a`` with ``d = a (mod s)``,
    and there it reads the LR pixel ``i + (a - d)/s``: a whole-pixel shift of ``y``. So the
    ``(sK)^2`` unknowns split into ``s^2`` independent problems of ``K^2`` unknowns each, whose
    design matrices are stacks of circularly shifted copies of ``y``.
    """
    s, size, half = layer.scale, layer.size, layer.half
    x = x.double().reshape(-1, x.shape[-2], x.shape[-1])
    y = operator.A(x)
    offsets = torch.arange(size) - half
    weight = torch.zeros(size, size, dtype=torch.float64)
    for a in range(s):
        ka = torch.nonzero(offsets % s == a).flatten()
        for b in range(s):
            kb = torch.nonzero(offsets % s == b).flatten()
            columns, index = [], []
            for i in ka.tolist():
                for j in kb.tolist():
                    shift = (-(a - int(offsets[i])) // s, -(b - int(offsets[j])) // s)
                    columns.append(torch.roll(y, shifts=shift, dims=(-2, -1)).reshape(-1))
                    index.append((i, j))
            design = torch.stack(columns, dim=1)
            target = x[:, a::s, b::s].reshape(-1, 1)
            solution = torch.linalg.lstsq(design, target).solution[:, 0]
            rows_idx, cols_idx = zip(*index)
            weight[list(rows_idx), list(cols_idx)] = solution
    with torch.no_grad():
        layer.weight.copy_(weight.to(layer.weight.dtype))


def fit_pseudo_inverse(
    operator: BlurDownsample,
    lr_taps: int = 9,
    *,
    method: str = "adam",
    noise: str = "white",
    steps: int = 2000,
    batch_size: int = 16,
    hr_size: int = 48,
    channels: int = 1,
    lr: float = 1e-2,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool = True,
):
    """Learn ``A^+`` as the paper does: minimise ``E || B(A x) - x ||^2`` over noise images ``x``.

    For white ``x ~ N(0, I)`` the minimiser over *all* linear maps is ``A^T (A A^T)^{-1} = A^+``;
    over our finite transposed convolutions it is the closest one in that sense. The loss never
    reaches zero: the null-space part of ``x`` cannot be predicted from ``A x`` (it is a fraction
    ``1 - 1/s^2`` of a white image's energy), and with ``method="adam"`` the gradient noise it
    causes is tamed by a cosine learning-rate decay (the paper's recipe: stochastic training).

    ``noise="row-space"`` draws ``x = A^T z`` with white LR noise ``z`` instead: such ``x`` has no
    null-space part, ``A^+`` fits it *exactly* (``A^+ A A^T = A^T``) and the loss can go to zero.
    ``method="lstsq"`` solves the regression on one fixed batch in closed form (the model is
    linear in its kernel), which is deterministic and takes a second.

    Returns ``(layer, history)``; ``history`` is ``None`` for ``"lstsq"``.

    Paper: Sønderby et al. 2017 (ICLR), learned A^+ · Book: ch. 3, "Learning A^+ as a ..." · Official code: none public
    """
    from ..training import fit

    if noise not in ("white", "row-space"):
        raise ValueError(f"noise must be 'white' or 'row-space', got {noise!r}")
    if method not in ("adam", "lstsq"):
        raise ValueError(f"method must be 'adam' or 'lstsq', got {method!r}")
    if not isinstance(hr_size, int) or hr_size % operator.scale:
        raise ValueError(f"hr_size must be an int divisible by the scale {operator.scale}, got {hr_size!r}")
    layer = LearnedPseudoInverse(operator.scale, lr_taps)
    if method == "lstsq":
        x = _noise_images(operator, noise, batch_size, channels, hr_size, torch.Generator().manual_seed(seed))
        _fit_lstsq(layer, operator, x)
        return layer, None
    # Start from the adjoint scaled to roughly the right gain: faster than zeros, same optimum.
    with torch.no_grad():
        impulse = torch.zeros(2 * lr_taps + 2, 2 * lr_taps + 2, dtype=torch.float64)
        impulse[0, 0] = 1.0
        adjoint = operator.At(impulse)
        idx = (torch.arange(layer.size) - layer.half) % adjoint.shape[-1]
        layer.weight.copy_((adjoint[idx][:, idx] * operator.scale**2).float())
    optimizer = torch.optim.Adam(layer.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(steps, 1), eta_min=lr * 1e-3)

    def batch_fn(step: int) -> Tensor:
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        return _noise_images(operator, noise, batch_size, channels, hr_size, g)

    def loss_fn(model, x):
        return F.mse_loss(model(operator.A(x)), x)

    history = fit(layer, loss_fn, batch_fn, steps, optimizer=optimizer, scheduler=scheduler,
                  device=device, desc=f"fit A+ ({noise} noise)", progress=progress, tag="LearnedPseudoInverse")
    return layer.cpu(), history


# --------------------------------------------------------------------------- the projection layer
class AffineProjection(nn.Module):
    """``f = g - B (A g - y)`` with ``B = A^+`` (exact, the default) or a learned approximation.

    With the exact ``A^+`` this is ``(I - A^+ A) g + A^+ y`` and ``A f = y`` to rounding error.

    Paper: Sønderby et al. 2017 (ICLR), affine projection · Book: ch. 3, "The affine projection ..." · Official
    code: none
    """

    def __init__(self, operator: LinearOperator, pinv: nn.Module | None = None):
        super().__init__()
        if not isinstance(operator, LinearOperator):
            raise TypeError("operator must be a course_lib.degradation LinearOperator (e.g. BlurDownsample or "
                            f"MatrixOperator), got {type(operator).__name__}")
        kernel = getattr(operator, "kernel", None)
        if kernel is not None and abs(float(torch.as_tensor(kernel).double().sum()) - 1.0) > 1e-3:
            raise ValueError(f"the operator's blur kernel sums to {float(kernel.sum()):.6g}, not 1")
        self.operator = operator
        self.learned_pinv = pinv  # registered as a submodule when given

    def pinv(self, y: Tensor) -> Tensor:
        return self.operator.pinv(y) if self.learned_pinv is None else self.learned_pinv(y)

    def forward(self, g: Tensor, y: Tensor) -> Tensor:
        """``g - B (A g - y)``; with ``B`` the exact ``A^+`` this is
        :meth:`~course_lib.degradation.operators.LinearOperator.project` itself."""
        _check_float(g, "g")
        _check_float(y, "y")
        residual = self.operator.A(g)
        if residual.shape != y.shape:
            raise ValueError(
                f"y has shape {tuple(y.shape)} but A applied to the network output {tuple(g.shape)} "
                f"gives {tuple(residual.shape)}; y must be the LR image that A produces")
        if not torch.isfinite(y).all():
            raise ValueError("y contains non-finite values")
        if self.learned_pinv is None:
            return self.operator.project(g, y)
        return g - self.learned_pinv(residual - y)


class ProjectedNetwork(nn.Module):
    """``f(y) = (I - A^+ A) g(y) + A^+ y`` for any network ``g`` from LR inputs to HR outputs.

    Paper: Sønderby et al. 2017 (ICLR), affine projection · Book: ch. 3, "The affine projection ..." · Official
    code: none
    """

    def __init__(self, net: nn.Module, operator: LinearOperator, pinv: nn.Module | None = None):
        super().__init__()
        self.net = net
        self.projection = AffineProjection(operator, pinv)

    @property
    def operator(self) -> LinearOperator:
        return self.projection.operator

    def forward(self, y: Tensor) -> Tensor:
        return self.projection(self.net(y), y)


# --------------------------------------------------------------------------- consistency
def consistency_rmse(x: Tensor, y: Tensor, operator: LinearOperator) -> float:
    """Root-mean-square of ``A x - y``: zero for an output consistent with its LR input."""
    ax = operator.A(x)
    if ax.shape != y.shape:
        raise ValueError(f"A(x) has shape {tuple(ax.shape)} but y has {tuple(y.shape)}")
    return float((ax.double() - y.double()).pow(2).mean().sqrt())


def consistency_psnr(x: Tensor, y: Tensor, operator: LinearOperator, *, data_range: float = 1.0) -> float:
    """LR-consistency PSNR in dB: ``10 log10(range^2 / mean((A x - y)^2))`` (inf when exact)."""
    rmse = consistency_rmse(x, y, operator)
    return math.inf if rmse == 0 else 20 * math.log10(data_range / rmse)
