"""Post-upsampling SR (ESPCN-like): extract features at low resolution and enlarge only at the
end with a learned sub-pixel convolution (Shi et al., 2016).

ESPCN uses two hidden layers (``5x5`` with 64 maps, ``3x3`` with 32 maps, tanh) and a final
``3x3`` convolution with ``C s^2`` outputs that ``PixelShuffle`` rearranges into the HR image.
Every convolution runs on the small LR grid: per HR pixel the work is about ``s^2`` times less
than pre-upsampling's. With ``residual=True`` (default) the network adds its output to the bicubic
enlargement, the same help every framework here gets, so that the comparison is fair.
"""

from __future__ import annotations

import torch
from torch import nn

from .common import SRModel, SubPixelUpsampler, _check_positive_int, bicubic_upsample

__all__ = ["PostUpsamplingSR"]


class PostUpsamplingSR(SRModel):
    """conv5x5(``features``) - tanh - conv3x3(``mid_features``) - tanh - sub-pixel conv ``x s``.

    Args:
        scale: integer enlargement ``s >= 2``.
        channels: image channels.
        features, mid_features: widths of the hidden layers (ESPCN: 64 and 32).
        residual: add the bicubic enlargement of the input to the output.
    """

    def __init__(self, scale: int = 4, channels: int = 3, *, features: int = 64, mid_features: int = 32,
                 residual: bool = True) -> None:
        super().__init__(scale, channels)
        _check_positive_int(features, "features")
        _check_positive_int(mid_features, "mid_features")
        self.residual = residual
        self.body = nn.Sequential(
            nn.Conv2d(channels, features, 5, padding=2),
            nn.Tanh(),
            nn.Conv2d(features, mid_features, 3, padding=1),
            nn.Tanh(),
        )
        self.upsample = SubPixelUpsampler(mid_features, channels, scale, kernel_size=3)
        if residual:  # start as plain bicubic
            nn.init.zeros_(self.upsample.conv.weight)
            nn.init.zeros_(self.upsample.conv.bias)

    def upscale(self, lr: torch.Tensor) -> torch.Tensor:
        out = self.upsample(self.body(lr - 0.5))
        return bicubic_upsample(lr, self.scale) + out if self.residual else out
