"""Iterative up-and-down sampling SR (DBPN-like): alternate enlarging and shrinking projection
units that correct each other with their back-projected errors (Haris et al., 2018).

An *up-projection unit* maps LR features ``L`` to HR features:

    H0 = up(L),   L0 = down(H0),   H1 = up(L0 - L),   output H0 + H1,

i.e. it enlarges, checks how well the result shrinks back to its input, and enlarges the error as
a correction. A *down-projection unit* does the mirror image on HR features. ``up`` is a
transposed convolution and ``down`` a strided convolution, with kernel ``s + 4``, stride ``s`` and
padding 2 as in DBPN (``8x8``, stride 4 at ``x 4``), each followed by PReLU. The HR features of all
up-projection units are concatenated and a ``3x3`` convolution reconstructs the image. This is
the classical iterative back-projection idea (Irani & Peleg) made learnable.
"""

from __future__ import annotations

import torch
from torch import nn

from .common import SRModel, _check_positive_int, bicubic_upsample

__all__ = ["IterativeSR", "UpProjection", "DownProjection"]


def _up(features: int, scale: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(features, features, scale + 4, stride=scale, padding=2),
                         nn.PReLU(features))


def _down(features: int, scale: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(features, features, scale + 4, stride=scale, padding=2),
                         nn.PReLU(features))


class UpProjection(nn.Module):
    """DBPN's up-projection unit: LR features ``(N, F, h, w)`` -> HR features ``(N, F, s h, s w)``."""

    def __init__(self, features: int, scale: int) -> None:
        super().__init__()
        self.up1, self.down, self.up2 = _up(features, scale), _down(features, scale), _up(features, scale)

    def forward(self, low: torch.Tensor) -> torch.Tensor:
        high0 = self.up1(low)
        error = self.down(high0) - low
        return high0 + self.up2(error)


class DownProjection(nn.Module):
    """DBPN's down-projection unit: HR features -> LR features."""

    def __init__(self, features: int, scale: int) -> None:
        super().__init__()
        self.down1, self.up, self.down2 = _down(features, scale), _up(features, scale), _down(features, scale)

    def forward(self, high: torch.Tensor) -> torch.Tensor:
        low0 = self.down1(high)
        error = self.up(low0) - high
        return low0 + self.down2(error)


class IterativeSR(SRModel):
    """DBPN-like network with ``stages`` up-projection units and ``stages - 1`` down-projection
    units in between.

    Args:
        scale: integer enlargement ``s >= 2``.
        channels: image channels.
        features: width of the projection units (DBPN: 64; D-DBPN-S: 32).
        stages: number of up-projection units (DBPN: 7; 2 is the smallest that iterates).
        residual: add the bicubic enlargement to the reconstruction.
    """

    def __init__(self, scale: int = 4, channels: int = 3, *, features: int = 16, stages: int = 2,
                 residual: bool = True) -> None:
        super().__init__(scale, channels)
        _check_positive_int(features, "features")
        _check_positive_int(stages, "stages")
        self.residual = residual
        self.head = nn.Sequential(
            nn.Conv2d(channels, 4 * features, 3, padding=1), nn.PReLU(4 * features),
            nn.Conv2d(4 * features, features, 1), nn.PReLU(features),
        )
        self.ups = nn.ModuleList(UpProjection(features, scale) for _ in range(stages))
        self.downs = nn.ModuleList(DownProjection(features, scale) for _ in range(stages - 1))
        self.reconstruct = nn.Conv2d(stages * features, channels, 3, padding=1)
        if residual:  # start as plain bicubic
            nn.init.zeros_(self.reconstruct.weight)
            nn.init.zeros_(self.reconstruct.bias)

    def upscale(self, lr: torch.Tensor) -> torch.Tensor:
        low = self.head(lr - 0.5)
        highs = []
        for i, up in enumerate(self.ups):
            highs.append(up(low))
            if i < len(self.downs):
                low = self.downs[i](highs[-1])
        out = self.reconstruct(torch.cat(highs, dim=1))
        return bicubic_upsample(lr, self.scale) + out if self.residual else out
