"""Building blocks shared by the four SR frameworks: the base class, learned upsamplers, and tools
to look at their artefacts.

Two learned ways to enlarge a feature map by an integer factor ``s``:

* **Transposed convolution** ("deconvolution"), :func:`deconv_upsampler`: every input pixel
  stamps a ``K x K`` copy of the kernel onto the output with stride ``s``. When ``K`` is not a
  multiple of ``s`` the stamps overlap unevenly, so even a constant input gives a periodic output
  pattern, the *checkerboard artefact* of Odena, Dumoulin & Olah (2016).
* **Sub-pixel convolution**, :class:`SubPixelUpsampler` (Shi et al., 2016, ESPCN): an ordinary
  convolution at low resolution produces ``C * s^2`` channels, and a fixed periodic shuffle
  (``PixelShuffle``) rearranges them into a ``C``-channel map ``s`` times larger. Every output
  pixel is computed by the same number of weights, so there is no uneven overlap; with the ICNR
  initialisation (Aitken et al., 2017, :func:`icnr_`) the layer starts as a nearest-neighbour
  upsampler and is free of checkerboards at initialisation as well.

:func:`checkerboard_energy` measures how much of an image is a pattern that repeats every ``s``
pixels, which is what both artefacts are.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from course_lib.degradation import imresize

__all__ = [
    "SRModel",
    "bicubic_upsample",
    "BicubicUpsample",
    "SubPixelUpsampler",
    "icnr_",
    "deconv_upsampler",
    "checkerboard_energy",
    "count_parameters",
]


def _check_scale(scale, allowed: tuple[int, ...] | None = None) -> int:
    if isinstance(scale, bool) or not isinstance(scale, int):
        raise TypeError(f"scale must be an int, got {scale!r}")
    if scale < 2:
        raise ValueError(f"scale must be at least 2, got {scale}")
    if allowed is not None and scale not in allowed:
        raise ValueError(f"scale {scale} is not supported here; choose one of {allowed}")
    return scale


def _check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def bicubic_upsample(lr: torch.Tensor, scale: int) -> torch.Tensor:
    """MATLAB-compatible bicubic enlargement by an integer ``scale`` (differentiable, any device).

    The same interpolation that the benchmark LR images were made with
    (:func:`course_lib.degradation.imresize`), so "bicubic" means one thing in the whole course.
    """
    return imresize(lr, float(scale))


class BicubicUpsample(nn.Module):
    """:func:`bicubic_upsample` as a (parameter-free) module."""

    def __init__(self, scale: int) -> None:
        super().__init__()
        self.scale = _check_scale(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return bicubic_upsample(x, self.scale)


class SRModel(nn.Module):
    """Base class: an SR network mapping ``(N, C, h, w) -> (N, C, s*h, s*w)``.

    :meth:`forward` checks the input (a float tensor with ``channels`` channels, rank 3 or 4;
    a ``(C, h, w)`` image comes back as ``(C, s*h, s*w)``) and calls :meth:`upscale`, which the
    frameworks implement on batches. Inputs are images in ``[0, 1]``; every framework centres them
    (``x - 0.5``) before its first convolution, as EDSR subtracts the data mean: ReLU networks fed
    all-positive inputs train far more slowly.
    """

    def __init__(self, scale: int, channels: int) -> None:
        super().__init__()
        self.scale = _check_scale(scale)
        self.channels = _check_positive_int(channels, "channels")

    def upscale(self, lr: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def check_input(self, lr: torch.Tensor) -> tuple[torch.Tensor, bool]:
        """Validate ``lr``; return it as a batch and whether it was a single image."""
        if not isinstance(lr, torch.Tensor):
            raise TypeError(f"the LR input must be a torch.Tensor, got {type(lr).__name__}")
        if not lr.is_floating_point():
            raise TypeError(f"the LR input must be a floating-point tensor in [0, 1], got {lr.dtype}")
        if lr.ndim not in (3, 4):
            raise ValueError(f"the LR input must be (C, h, w) or (N, C, h, w), got shape {tuple(lr.shape)}")
        single = lr.ndim == 3
        batch = lr.unsqueeze(0) if single else lr
        if batch.shape[1] != self.channels:
            raise ValueError(f"{type(self).__name__} expects {self.channels} channels, "
                             f"got {batch.shape[1]} (shape {tuple(lr.shape)})")
        if min(batch.shape[-2:]) < 1:
            raise ValueError(f"the LR input is empty: shape {tuple(lr.shape)}")
        return batch, single

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        batch, single = self.check_input(lr)
        sr = self.upscale(batch)
        return sr[0] if single else sr

    def extra_repr(self) -> str:
        return f"scale={self.scale}, channels={self.channels}"


def icnr_(weight: torch.Tensor, scale: int, init=nn.init.kaiming_normal_) -> torch.Tensor:
    """ICNR initialisation (Aitken et al., 2017) of a convolution that feeds ``PixelShuffle(scale)``.

    ``weight`` has shape ``(C * s^2, C_in, k, k)``. One kernel per output channel is drawn with
    ``init`` and repeated for the ``s^2`` sub-pixel positions (``PixelShuffle`` reads channel
    ``c * s^2 + i * s + j`` into position ``(i, j)`` of output channel ``c``), so at initialisation
    conv + shuffle equals conv followed by nearest-neighbour upsampling: no checkerboard.
    Works in place and returns ``weight``.
    """
    scale = _check_scale(scale)
    out_channels = weight.shape[0]
    if out_channels % (scale * scale):
        raise ValueError(f"weight has {out_channels} output channels, not a multiple of scale^2 = {scale * scale}")
    base = torch.empty(out_channels // (scale * scale), *weight.shape[1:], dtype=weight.dtype,
                       device=weight.device)
    init(base)
    with torch.no_grad():
        weight.copy_(base.repeat_interleave(scale * scale, dim=0))
    return weight


class SubPixelUpsampler(nn.Module):
    """Sub-pixel convolution (Shi et al., 2016): ``conv(C_in -> C_out * s^2)`` then ``PixelShuffle(s)``.

    Args:
        in_channels, out_channels: feature channels before and after.
        scale: the integer enlargement ``s``.
        kernel_size: odd size of the low-resolution convolution.
        icnr: initialise with :func:`icnr_` (nearest-neighbour at start, no checkerboard).
    """

    def __init__(self, in_channels: int, out_channels: int, scale: int, *, kernel_size: int = 3,
                 icnr: bool = True) -> None:
        super().__init__()
        self.scale = _check_scale(scale)
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd (same padding), got {kernel_size}")
        self.conv = nn.Conv2d(in_channels, out_channels * scale * scale, kernel_size,
                              padding=kernel_size // 2)
        if icnr:
            icnr_(self.conv.weight, scale)
            with torch.no_grad():
                bias = self.conv.bias.view(out_channels, scale * scale)
                bias.copy_(bias[:, :1].expand_as(bias))
        self.shuffle = nn.PixelShuffle(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.conv(x))


def deconv_upsampler(in_channels: int, out_channels: int, scale: int, *,
                     kernel_size: int | None = None, padding: int | None = None) -> nn.ConvTranspose2d:
    """A transposed convolution that enlarges by exactly ``scale``: output size ``s * h``.

    The output size of ``ConvTranspose2d`` is ``(h - 1) s - 2 p + K``, so ``K = s + 2 p``.
    Defaults: ``p = ceil(s / 2)``, giving ``K = 4`` for ``s = 2`` (LapSRN) and ``K = 8`` for
    ``s = 4`` (DBPN); give ``kernel_size`` to pick another (``padding`` then follows from it).
    """
    scale = _check_scale(scale)
    if kernel_size is None:
        padding = math.ceil(scale / 2) if padding is None else padding
        kernel_size = scale + 2 * padding
    else:
        if (kernel_size - scale) % 2 or kernel_size < scale:
            raise ValueError(f"kernel_size {kernel_size} cannot give an exact x{scale} output: "
                             "kernel_size - scale must be even and >= 0")
        padding = (kernel_size - scale) // 2
    return nn.ConvTranspose2d(in_channels, out_channels, kernel_size, stride=scale, padding=padding)


def checkerboard_energy(img: torch.Tensor, scale: int) -> torch.Tensor:
    """Mean squared size of the part of ``img`` that repeats every ``scale`` pixels.

    The image (rank 3 or 4, cropped to multiples of ``scale``) is split into its ``s^2`` phases
    (pixels with the same ``(row mod s, col mod s)``); the result is the variance of the ``s^2``
    phase means around their average, averaged over channels. A smooth image gives about 0; a
    checkerboard of amplitude ``a`` (``+a`` / ``-a`` alternating) gives ``a^2``. Returns one value
    per image: shape ``(N,)`` for a batch, a scalar for one image.
    """
    scale = _check_scale(scale)
    if not isinstance(img, torch.Tensor) or not img.is_floating_point():
        raise TypeError("img must be a floating-point torch.Tensor")
    if img.ndim not in (3, 4):
        raise ValueError(f"img must be (C, H, W) or (N, C, H, W), got shape {tuple(img.shape)}")
    batch = img.unsqueeze(0) if img.ndim == 3 else img
    height, width = (n - n % scale for n in batch.shape[-2:])
    if height == 0 or width == 0:
        raise ValueError(f"img of size {tuple(img.shape[-2:])} is smaller than one {scale}x{scale} period")
    n, c = batch.shape[:2]
    phases = batch[..., :height, :width].reshape(n, c, height // scale, scale, width // scale, scale)
    means = phases.mean(dim=(2, 4))  # (N, C, s, s): the mean of each phase
    energy = means.var(dim=(2, 3), unbiased=False).mean(dim=1)
    return energy[0] if img.ndim == 3 else energy


def count_parameters(model: nn.Module, *, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters of ``model``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
