"""Input checks shared by the rescaling models (IRN, HCFlow): RGB images, sizes and scales."""

from __future__ import annotations

import torch
from torch import Tensor

CHANNELS = 3  # RGB


def as_rgb_batch(img, name: str, where: str) -> tuple[Tensor, bool]:
    """(3,H,W) or (N,3,H,W) finite float tensor -> (N,3,H,W) and whether a batch dim was added."""
    if not isinstance(img, torch.Tensor):
        raise TypeError(f"{where}: {name} must be a torch.Tensor, got {type(img).__name__}")
    if not img.is_floating_point():
        raise TypeError(f"{where}: {name} must be a floating tensor with values in [0, 1], got {img.dtype}")
    if img.dim() not in (3, 4):
        raise ValueError(f"{where}: {name} must have shape (3, H, W) or (N, 3, H, W), got {tuple(img.shape)}")
    if img.shape[-3] != CHANNELS:
        raise ValueError(f"{where}: {name} must be an RGB image with 3 channels, got {img.shape[-3]} "
                         f"(shape {tuple(img.shape)})")
    if not bool(torch.isfinite(img).all()):
        raise ValueError(f"{where}: {name} contains non-finite values (NaN or Inf)")
    return (img.unsqueeze(0), True) if img.dim() == 3 else (img, False)


def check_divisible(x: Tensor, scale: int, where: str) -> None:
    """Raise a clear error when H or W of ``x`` is not a multiple of ``scale`` (non-square is fine)."""
    h, w = x.shape[-2:]
    if h % scale or w % scale:
        raise ValueError(f"{where}: image size {h}x{w} is not divisible by the scale {scale}; crop it "
                         f"first, e.g. course_lib.degradation.mod_crop(img, {scale})")
