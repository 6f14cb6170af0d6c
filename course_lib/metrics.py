"""PSNR and SSIM as super-resolution papers report them.

The convention of the SR literature (the MATLAB evaluation scripts behind Set5/Set14/BSD100/...):

* convert RGB to the luma ``Y`` of ITU-R BT.601 YCbCr exactly as MATLAB's ``rgb2ycbcr`` does,
  ``Y = 16 + 65.481 R + 128.553 G + 24.966 B`` for ``R, G, B`` in ``[0, 1]``, so ``Y`` lies in
  ``[16, 235]`` on the 0-255 scale (not rounded);
* shave ``scale`` pixels off every border (``shave=scale``);
* PSNR with peak 255 on that scale, ``10 log10(255^2 / MSE)``;
* SSIM of Wang et al. (2004), the MATLAB ``ssim_index``: an 11x11 Gaussian window with
  ``sigma = 1.5``, ``K1 = 0.01``, ``K2 = 0.03``, ``L = 255``, filtered 'valid' (no padding), the SSIM
  map averaged.

``y_channel=False`` gives the RGB variants (PSNR over all channels with peak ``data_range``; SSIM
averaged over channels). Inputs are ``(C, H, W)`` (a Python float is returned) or ``(N, C, H, W)``
(a tensor of ``N`` per-image values is returned; average it for a data set, as papers do). Papers
also round SR outputs to 8 bits before measuring; do that yourself with
:func:`course_lib.degradation.bicubic.quantize_8bit` if you want their numbers exactly. Computations run
in float64 (float32 on Apple MPS).

:func:`gradient_energy` is not a paper metric but the chapters' crude sharpness measure: blur
lowers it, so the ratio to the ground truth's shows how much detail an SR output has kept or
invented.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import torch
import torch.nn.functional as F

from .checks import check_unit_range
from .degradation.operators import BicubicDownsample, LinearOperator

__all__ = ["rgb_to_y", "psnr", "ssim", "lr_psnr", "gradient_energy", "kernel_error"]

_Y_WEIGHTS = (65.481, 128.553, 24.966)  # MATLAB rgb2ycbcr, BT.601, for [0, 1] inputs


def rgb_to_y(img: torch.Tensor) -> torch.Tensor:
    """Luma of ITU-R BT.601 as MATLAB's ``rgb2ycbcr``: ``16 + 65.481 R + 128.553 G + 24.966 B``.

    ``img``: RGB ``(3, H, W)`` or ``(N, 3, H, W)`` in ``[0, 1]``. Returns ``(1, H, W)`` or ``(N, 1, H, W)``
    on the 0-255 scale (``[16, 235]`` for inputs in ``[0, 1]``), not rounded.
    """
    _check(img, "img")
    if img.shape[-3] != 3:
        raise ValueError(f"rgb_to_y needs 3 (RGB) channels, got {img.shape[-3]} in shape {tuple(img.shape)}")
    r, g, b = img.unbind(dim=-3)
    y = 16.0 + _Y_WEIGHTS[0] * r + _Y_WEIGHTS[1] * g + _Y_WEIGHTS[2] * b
    return y.unsqueeze(-3)


def _check(img, name: str) -> None:
    if not isinstance(img, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(img).__name__}")
    if img.ndim not in (3, 4):
        raise ValueError(f"{name} must have shape (C, H, W) or (N, C, H, W), got {tuple(img.shape)}")
    if not img.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {img.dtype}")


def _prepare(sr, hr, shave, y_channel, data_range, min_size=1):
    """Validate, shave, rescale to [0, 1], convert to Y (0-255) if asked; returns 4D tensors and the peak."""
    _check(sr, "sr")
    _check(hr, "hr")
    if sr.shape != hr.shape:
        raise ValueError(f"sr and hr must have the same shape, got sr {tuple(sr.shape)} and hr {tuple(hr.shape)}")
    if isinstance(shave, bool) or not isinstance(shave, Integral) or shave < 0:
        raise ValueError(f"shave must be an int >= 0, got {shave!r}")
    if (isinstance(data_range, bool) or not isinstance(data_range, Real) or not math.isfinite(data_range)
            or data_range <= 0):
        raise ValueError(f"data_range must be a positive finite number, got {data_range!r}")
    shave = int(shave)
    height, width = sr.shape[-2:]
    if min(height, width) - 2 * shave < min_size:
        raise ValueError(
            f"shave={shave} leaves {height - 2 * shave}x{width - 2 * shave} of a {height}x{width} image; "
            f"at least {min_size}x{min_size} is needed"
        )
    if y_channel and sr.shape[-3] != 3:
        raise ValueError(f"y_channel=True needs RGB images (3 channels), got {sr.shape[-3]}; use y_channel=False")
    for name, img in (("sr", sr), ("hr", hr)):
        if not torch.isfinite(img).all():
            raise ValueError(f"{name} contains non-finite values (NaN or inf)")
        check_unit_range(img, name, data_range=data_range)
    work = torch.float32 if sr.device.type == "mps" else torch.float64
    pair = []
    for img in (sr, hr):
        img = img.to(work)
        img = img.unsqueeze(0) if img.ndim == 3 else img
        if shave:
            img = img[..., shave:-shave, shave:-shave]
        img = img / data_range
        pair.append(rgb_to_y(img) if y_channel else img)
    return pair[0], pair[1], (255.0 if y_channel else 1.0)


def _finish(values: torch.Tensor, batched: bool):
    return values if batched else float(values[0].detach())  # no warning for outputs that carry gradients


def psnr(
    sr: torch.Tensor, hr: torch.Tensor, *, shave: int = 0, y_channel: bool = True, data_range: float = 1.0
) -> float | torch.Tensor:
    """Peak signal-to-noise ratio in dB, ``10 log10(peak^2 / MSE)`` per image.

    ``data_range`` is the range of the inputs (1 for ``[0, 1]`` images, 255 for ``[0, 255]``). With
    ``y_channel`` the luma is compared on the 0-255 scale with peak 255, else all channels with the
    input's peak. Identical images give ``inf``.
    """
    x, y, peak = _prepare(sr, hr, shave, y_channel, data_range)
    mse = ((x - y) ** 2).mean(dim=(1, 2, 3))
    return _finish(10.0 * torch.log10(peak**2 / mse), sr.ndim == 4)


def _gaussian_window(dtype, device, size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """MATLAB's ``fspecial('gaussian', 11, 1.5)`` as its (separable) normalised 1D factor."""
    t = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(t**2) / (2 * sigma**2))
    return g / g.sum()


def _filter_valid(img: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Separable 2D filtering of ``(M, 1, H, W)`` with 'valid' output (no padding), like ``filter2(w, x, 'valid')``."""
    img = F.conv2d(img, window.view(1, 1, -1, 1))
    return F.conv2d(img, window.view(1, 1, 1, -1))


def ssim(
    sr: torch.Tensor, hr: torch.Tensor, *, shave: int = 0, y_channel: bool = True, data_range: float = 1.0
) -> float | torch.Tensor:
    """Structural similarity (Wang et al. 2004) as MATLAB's ``ssim_index`` computes it.

    Per channel: local means ``mu``, variances and covariance from an 11x11 Gaussian window
    (``sigma = 1.5``, population statistics), ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2``,
    ``SSIM = (2 mu_x mu_y + C1)(2 sigma_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(sigma_x^2 + sigma_y^2 + C2))``
    on the 'valid' region, averaged; RGB (``y_channel=False``) averages the channels. ``L`` is 255 on
    the Y scale, else the input's peak. Needs at least 11x11 pixels after shaving.
    """
    x, y, peak = _prepare(sr, hr, shave, y_channel, data_range, min_size=11)
    n, c, height, width = x.shape
    x = x.reshape(n * c, 1, height, width)
    y = y.reshape(n * c, 1, height, width)
    window = _gaussian_window(x.dtype, x.device)
    mu_x, mu_y = _filter_valid(x, window), _filter_valid(y, window)
    var_x = _filter_valid(x * x, window) - mu_x**2
    var_y = _filter_valid(y * y, window) - mu_y**2
    cov_xy = _filter_valid(x * y, window) - mu_x * mu_y
    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    values = ssim_map.mean(dim=(1, 2, 3)).reshape(n, c).mean(dim=1)
    return _finish(values, sr.ndim == 4)


def lr_psnr(
    sr: torch.Tensor,
    lr: torch.Tensor,
    scale: int | None = None,
    *,
    operator: LinearOperator | None = None,
    y_channel: bool = False,
    shave: int = 0,
    data_range: float = 1.0,
) -> float | torch.Tensor:
    """LR-consistency PSNR: ``psnr(A sr, lr)``, how well an SR output explains its LR input under the
    degradation ``A`` (SRFlow, HCFlow, the NTIRE 2021 learning-SR challenge).

    Give ``scale`` for MATLAB bicubic degradation, ``A = BicubicDownsample(scale)`` (the papers'
    convention), or any ``operator`` of :mod:`course_lib.degradation.operators` (e.g. the
    ``BlurDownsample`` that made ``lr``). RGB by default (``y_channel=True`` gives the Y variant;
    HCFlow reports both), no shave.
    """
    _check(sr, "sr")
    _check(lr, "lr")
    if (scale is None) == (operator is None):
        raise ValueError("give exactly one of scale (MATLAB bicubic degradation) and operator")
    if operator is None:
        if isinstance(scale, bool) or not isinstance(scale, Integral) or scale < 1:
            raise ValueError(f"scale must be a positive int, got {scale!r}")
        if sr.shape[-2] != lr.shape[-2] * scale or sr.shape[-1] != lr.shape[-1] * scale:
            raise ValueError(
                f"sr {tuple(sr.shape)} must be exactly scale={scale} times lr {tuple(lr.shape)} in height and width"
            )
        operator = BicubicDownsample(int(scale))
    elif not isinstance(operator, LinearOperator):
        raise TypeError(f"operator must be a course_lib LinearOperator, got {type(operator).__name__}")
    degraded = operator.A(sr)
    if degraded.shape != lr.shape:
        raise ValueError(f"the operator maps sr {tuple(sr.shape)} to {tuple(degraded.shape)}, but lr has shape "
                         f"{tuple(lr.shape)}")
    return psnr(degraded, lr, shave=shave, y_channel=y_channel, data_range=data_range)


def gradient_energy(img: torch.Tensor, *, shave: int = 0, y_channel: bool = False) -> torch.Tensor:
    """Mean squared difference of neighbouring pixels, vertical plus horizontal: a crude sharpness.

    Blur lowers it; edges, texture and noise raise it. The chapters report the ratio
    ``gradient_energy(sr) / gradient_energy(hr)``: 1 means as much local contrast as the real image,
    below 1 blurrier, above 1 more detail (or noise) than it has. ``img`` is ``(..., C, H, W)``
    floats; the mean runs over the last three dimensions, so ``(C, H, W)`` gives a 0-d tensor and
    ``(N, C, H, W)`` one value per image. ``y_channel=True`` scores the luma (:func:`rgb_to_y`, RGB
    ``(C, H, W)`` or ``(N, C, H, W)`` only) instead of every channel; ``shave`` drops that many pixels
    at each border first.
    """
    if not isinstance(img, torch.Tensor):
        raise TypeError(f"img must be a torch.Tensor, got {type(img).__name__}")
    if img.ndim < 3:
        raise ValueError(f"img must have shape (..., C, H, W), got {tuple(img.shape)}")
    if not img.is_floating_point():
        raise TypeError(f"img must be a floating-point tensor, got {img.dtype}")
    if isinstance(shave, bool) or not isinstance(shave, Integral) or shave < 0:
        raise ValueError(f"shave must be a non-negative int, got {shave!r}")
    if y_channel:
        img = rgb_to_y(img)
    if min(img.shape[-2:]) - 2 * shave < 2:
        raise ValueError(f"image of size {tuple(img.shape[-2:])} is too small for shave={shave}: "
                         "need at least 2 pixels left on each side")
    if shave:
        img = img[..., shave:-shave, shave:-shave]
    dims = (-3, -2, -1)
    vertical = (img[..., 1:, :] - img[..., :-1, :]).square().mean(dim=dims)
    horizontal = (img[..., :, 1:] - img[..., :, :-1]).square().mean(dim=dims)
    return vertical + horizontal


def kernel_error(estimate: torch.Tensor, truth: torch.Tensor, scale: int = 2) -> float:
    """L2 distance between two blur kernels after aligning and normalising them.

    Both are embedded in a common frame (:func:`~course_lib.degradation.kernels.embed_kernel`),
    normalised to sum 1 and moved so that their centres of mass sit on the LR pixel centre
    (:func:`~course_lib.degradation.kernels.shift_kernel_to_centre`): a kernel is only defined up to
    a translation (a shifted kernel gives a shifted image), which this removes. Returns
    ``||k_est - k_true||_2`` (0 for identical kernels). KernelGAN's maintainers warn that a
    pixel-wise kernel error says little on its own; judge kernels by the SR they lead to as well.
    """
    from .degradation.kernels import embed_kernel, shift_kernel_to_centre

    size = max(estimate.shape[-1], truth.shape[-1])
    kernels = []
    for k in (estimate, truth):
        k = embed_kernel(k.detach().to("cpu", torch.float64), size, scale)
        total = k.sum()
        if total.abs() < 1e-8:
            raise ValueError("a kernel sums to (almost) zero and cannot be normalised")
        kernels.append(shift_kernel_to_centre(k / total, scale))
    return float((kernels[0] - kernels[1]).norm())
