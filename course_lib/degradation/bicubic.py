"""Bicubic resizing exactly as MATLAB's ``imresize(img, scale, 'bicubic')`` does it.

Every super-resolution benchmark (Set5, Set14, BSD100, Urban100, DIV2K, ...) makes its LR images
with MATLAB's ``imresize``, so a network trained or evaluated on any other "bicubic" (PIL, OpenCV,
``torch.nn.functional.interpolate``) sees slightly different images and loses tenths of a dB.
This module reproduces MATLAB's algorithm:

* the cubic convolution kernel of Keys (1981) with ``a = -0.5``,
  ``cubic(x) = 1.5|x|^3 - 2.5|x|^2 + 1`` for ``|x| <= 1`` and
  ``-0.5|x|^3 + 2.5|x|^2 - 4|x| + 2`` for ``1 < |x| <= 2``;
* antialiasing when downscaling: the kernel is stretched by ``1/scale`` (and scaled by ``scale``)
  so that it becomes a low-pass filter of the output's bandwidth;
* MATLAB's pixel-centre coordinate mapping: output pixel ``x`` (1-based) reads the input at
  ``u = x / scale + 0.5 * (1 - 1 / scale)``; for an integer downscale ``s`` the LR pixel ``j``
  (0-based) thus sits at the centre ``s*j + (s-1)/2`` of its ``s x s`` block of HR pixels;
* symmetric (mirror) boundary handling, ``... 2 1 0 | 0 1 2 ... n-1 | n-1 n-2 ...``;
* separable: one 1D resize per dimension, the dimension with the smaller scale first.

Everything is plain torch (index gathers and weighted sums), so ``imresize`` runs on any device, on
batches, and is differentiable. It neither clamps nor rounds: results can leave ``[0, 1]`` (the
cubic kernel has negative lobes). :func:`bicubic_downscale` adds the clamp-and-round-to-8-bit step
that the SR papers apply to their LR images.
"""

from __future__ import annotations

import math
from functools import lru_cache
from numbers import Real

import numpy as np
import torch

__all__ = ["cubic", "imresize", "bicubic_downscale", "quantize_8bit", "mod_crop"]


def cubic(x: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Keys' (1981) cubic convolution kernel with ``a = -0.5`` (MATLAB's ``cubic``); support [-2, 2]."""
    lib = torch if isinstance(x, torch.Tensor) else np
    ax = lib.abs(x)
    ax2, ax3 = ax**2, ax**3
    inner = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
    outer = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2))
    return inner + outer


@lru_cache(maxsize=256)
def _contributions(in_len: int, out_len: int, scale: float, antialias: bool) -> tuple[np.ndarray, np.ndarray]:
    """Weights and (0-based, mirrored) input indices of each output pixel, as MATLAB computes them.

    Returns two ``(out_len, P)`` arrays: output pixel ``i`` is ``sum_p weights[i, p] * x[indices[i, p]]``.
    """
    width = 4.0  # support of the cubic kernel
    if scale < 1 and antialias:
        def kernel(t):  # stretched kernel: a low-pass filter for the coarser output grid
            return scale * cubic(scale * t)
        width = width / scale
    else:
        kernel = cubic
    x = np.arange(1, out_len + 1, dtype=np.float64)  # MATLAB's 1-based output coordinates
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)  # where each output pixel sits in input coordinates
    left = np.floor(u - width / 2.0)
    taps = int(math.ceil(width)) + 2
    indices = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]  # 1-based
    weights = kernel(u[:, None] - indices)
    weights = weights / weights.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(in_len), np.arange(in_len)[::-1]])  # symmetric padding
    indices = mirror[np.mod(indices.astype(np.int64) - 1, 2 * in_len)]
    used = np.any(weights != 0, axis=0)  # MATLAB drops the all-zero columns
    return weights[:, used], indices[:, used]


def _resize_last_but_one(x: torch.Tensor, out_len: int, scale: float, antialias: bool) -> torch.Tensor:
    """1D bicubic resize of dimension -2 of ``x``."""
    weights, indices = _contributions(x.shape[-2], out_len, scale, antialias)
    w = torch.as_tensor(weights, dtype=x.dtype, device=x.device)
    idx = torch.as_tensor(indices, device=x.device)
    gathered = x.index_select(-2, idx.reshape(-1)).unflatten(-2, idx.shape)  # (..., out, P, W)
    return (gathered * w[..., None]).sum(dim=-2)


def _check_image(img: torch.Tensor, name: str = "img") -> None:
    if not isinstance(img, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(img).__name__}")
    if img.ndim not in (3, 4):
        raise ValueError(f"{name} must have shape (C, H, W) or (N, C, H, W), got {tuple(img.shape)}")
    if not img.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor (values in [0, 1]), got {img.dtype}")


def _check_positive_number(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value}")
    return value


def _check_scale_int(scale, name: str = "scale") -> int:
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)):
        raise TypeError(f"{name} must be a positive int, got {scale!r}")
    if scale < 1:
        raise ValueError(f"{name} must be a positive int, got {scale}")
    return int(scale)


def imresize(
    img: torch.Tensor,
    scale: float | tuple[float, float] | None = None,
    *,
    output_shape: tuple[int, int] | None = None,
    antialias: bool = True,
) -> torch.Tensor:
    """Resize ``img`` like MATLAB's ``imresize(img, scale, 'bicubic')``.

    Args:
        img: float tensor ``(C, H, W)`` or ``(N, C, H, W)``, any device; gradients flow through.
        scale: resize factor, one number or ``(scale_h, scale_w)``; ``0.5`` halves the size. The
            output size is ``ceil(scale * size)`` as in MATLAB.
        output_shape: ``(H_out, W_out)`` instead of ``scale``; the factor per dimension is then
            ``H_out / H`` and ``W_out / W`` (MATLAB's rule). Give exactly one of the two.
        antialias: stretch the kernel when downscaling (MATLAB's default, ``True``). ``False``
            samples the plain cubic interpolant, which aliases.

    Returns:
        The resized tensor, same rank, dtype and device. Not clamped, not rounded.
    """
    _check_image(img)
    in_shape = img.shape[-2:]
    if (scale is None) == (output_shape is None):
        raise ValueError("give exactly one of scale and output_shape")
    if scale is not None:
        pair = scale if isinstance(scale, (tuple, list)) else (scale, scale)
        if len(pair) != 2:
            raise ValueError(f"scale must be a number or a pair (scale_h, scale_w), got {scale!r}")
        scales = tuple(_check_positive_number(s, "scale") for s in pair)
        # ceil(scale * size), tolerant to float round-off such as (1/3) * 300 = 100.00000000000001
        out_shape = tuple(max(1, math.ceil(s * n - 1e-9)) for s, n in zip(scales, in_shape))
    else:
        if len(output_shape) != 2 or not all(
            isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 1 for n in output_shape
        ):
            raise ValueError(f"output_shape must be two positive ints (H_out, W_out), got {output_shape!r}")
        out_shape = tuple(int(n) for n in output_shape)
        scales = tuple(o / n for o, n in zip(out_shape, in_shape))

    # MATLAB resizes the dimension with the smaller scale first (rows first on ties).
    out = img
    for dim in sorted((0, 1), key=lambda d: scales[d]):
        if dim == 0:
            out = _resize_last_but_one(out, out_shape[0], scales[0], antialias)
        else:
            out = _resize_last_but_one(out.transpose(-1, -2), out_shape[1], scales[1], antialias)
            out = out.transpose(-1, -2)
    return out.contiguous()


def quantize_8bit(img: torch.Tensor) -> torch.Tensor:
    """Clamp to ``[0, 1]`` and round to the 256 levels of an 8-bit image (MATLAB's ``uint8``:
    halves round away from zero). Not differentiable (zero gradient almost everywhere)."""
    _check_image(img)
    return torch.floor(img.clamp(0.0, 1.0) * 255.0 + 0.5) / 255.0


def bicubic_downscale(hr: torch.Tensor, scale: int, *, quantize: bool = False) -> torch.Tensor:
    """The LR image of the SR benchmarks: ``imresize(hr, 1/scale)`` for an integer ``scale``.

    ``hr`` must have ``H`` and ``W`` divisible by ``scale`` (crop first with :func:`mod_crop`, as the
    benchmarks do); nothing is cropped here. With ``quantize=True`` the result is clamped to
    ``[0, 1]`` and rounded to 8-bit levels, as the papers' LR images (saved as PNG) are.
    """
    _check_image(hr, "hr")
    scale = _check_scale_int(scale)
    height, width = hr.shape[-2:]
    if height % scale or width % scale:
        raise ValueError(
            f"image size {height}x{width} is not divisible by scale {scale}; crop it with mod_crop(img, {scale})"
        )
    lr = imresize(hr, 1.0 / scale)
    return quantize_8bit(lr) if quantize else lr


def mod_crop(img: torch.Tensor, scale: int) -> torch.Tensor:
    """Crop ``H`` and ``W`` down to multiples of ``scale``, keeping the top-left corner (benchmark convention)."""
    _check_image(img)
    scale = _check_scale_int(scale)
    height, width = img.shape[-2:]
    if height < scale or width < scale:
        raise ValueError(f"image size {height}x{width} is smaller than scale {scale}")
    return img[..., : height - height % scale, : width - width % scale]
