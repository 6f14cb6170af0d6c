"""Pre-upsampling SR (SRCNN-like): enlarge with bicubic interpolation first, then let a CNN
refine the enlarged image (Dong et al., 2016).

SRCNN's three layers read as patch extraction (``9x9``, 64 maps), non-linear mapping (``1x1``,
32 maps) and reconstruction (``5x5``), the "9-1-5" network of the paper. All convolutions run at
high resolution, so the cost per step grows with ``s^2``; in exchange the same network works for
any scale. With ``residual=True`` (the default) the CNN predicts only the correction to the
bicubic image, as VDSR does (Kim et al., 2016); this converges much faster on a small budget.
"""

from __future__ import annotations

import torch
from torch import nn

from .common import SRModel, _check_positive_int, bicubic_upsample

__all__ = ["PreUpsamplingSR"]


class PreUpsamplingSR(SRModel):
    """Bicubic ``x s``, then conv(``k1``, ``features``) - ReLU - conv(``k2``, ``mid_features``) - ReLU -
    conv(``k3``, ``channels``), all at high resolution with zero "same" padding.

    Args:
        scale: integer enlargement ``s >= 2``.
        channels: image channels (3 for RGB).
        features, mid_features: widths of the two hidden layers (SRCNN: 64 and 32).
        kernel_sizes: the three odd kernel sizes (SRCNN: ``(9, 1, 5)``).
        residual: add the bicubic image to the CNN's output (VDSR's global residual).
    """

    def __init__(self, scale: int = 4, channels: int = 3, *, features: int = 64, mid_features: int = 32,
                 kernel_sizes: tuple[int, int, int] = (9, 1, 5), residual: bool = True) -> None:
        super().__init__(scale, channels)
        _check_positive_int(features, "features")
        _check_positive_int(mid_features, "mid_features")
        if len(kernel_sizes) != 3 or any(k % 2 != 1 for k in kernel_sizes):
            raise ValueError(f"kernel_sizes must be three odd ints, got {kernel_sizes!r}")
        k1, k2, k3 = kernel_sizes
        self.residual = residual
        self.body = nn.Sequential(
            nn.Conv2d(channels, features, k1, padding=k1 // 2),
            nn.ReLU(inplace=True),
            nn.Conv2d(features, mid_features, k2, padding=k2 // 2),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid_features, channels, k3, padding=k3 // 2),
        )
        if residual:  # start as plain bicubic: the correction is zero at initialisation
            nn.init.zeros_(self.body[-1].weight)
            nn.init.zeros_(self.body[-1].bias)

    def upscale(self, lr: torch.Tensor) -> torch.Tensor:
        up = bicubic_upsample(lr, self.scale)
        out = self.body(up - 0.5)
        return up + out if self.residual else out
