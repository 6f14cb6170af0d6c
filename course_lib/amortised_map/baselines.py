"""Networks and the regression baselines: MSE, Aff-MSE (MSE through the projection) and MAE.

A network trained with the mean squared error on pairs ``(y, x)`` converges to the posterior mean
``E[x | y]`` (the Bayes estimator of the squared loss); with the mean absolute error, to the
per-pixel posterior median. Both average over the plausible HR images, which is why they look
blurry (Sønderby et al. 2017, sec. 1). The posterior mean is consistent by itself,
``A E[x|y] = E[A x | y] = y``, so the projection does not change what MSE converges to; it only
guarantees consistency before convergence ("Aff-MSE").

* :func:`mse_loss`, :func:`mae_loss`: ``loss_fn(model, (y, x))`` for :func:`course_lib.training.fit`.
* :class:`SRNet`: a small ESPCN-style network (convolutions at LR, sub-pixel shuffle, optional
  convolutions at HR, skip connection from an interpolated input) used as ``g`` by every method
  of the image experiments.
* :func:`mlp`: the small fully connected network of the 2D toy problem.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["mse_loss", "mae_loss", "SRNet", "mlp"]

Tensor = torch.Tensor


def _pair(batch) -> tuple[Tensor, Tensor]:
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise TypeError("a regression batch is a pair (y, x) of LR inputs and HR targets")
    y, x = batch
    return y, x


def mse_loss(model: nn.Module, batch) -> Tensor:
    """``mean (f(y) - x)^2`` over a batch of pairs ``(y, x)``."""
    y, x = _pair(batch)
    out = model(y)
    if out.shape != x.shape:
        raise ValueError(f"the model's output {tuple(out.shape)} does not match the targets {tuple(x.shape)}")
    return F.mse_loss(out, x)


def mae_loss(model: nn.Module, batch) -> Tensor:
    """``mean |f(y) - x|`` (L1) over a batch of pairs ``(y, x)``."""
    y, x = _pair(batch)
    out = model(y)
    if out.shape != x.shape:
        raise ValueError(f"the model's output {tuple(out.shape)} does not match the targets {tuple(x.shape)}")
    return F.l1_loss(out, x)


class SRNet(nn.Module):
    """``g(y)``: 3x3 convolutions at LR resolution, a sub-pixel shuffle to HR (Shi et al. 2016),
    optionally ``hr_layers`` 3x3 convolutions at HR resolution, plus a bicubic-interpolated copy of
    ``y`` so that the layers only learn the residual.

    With ``hr_layers = 0`` the shuffle produces the residual image directly (plain ESPCN): every HR
    pixel is then a *linear* function of the last LR features, which makes a sharp edge at an
    arbitrary sub-pixel position hard to draw. With ``hr_layers >= 1`` the shuffle produces
    ``hr_features`` feature maps at HR and the HR convolutions (ReLU between them) draw the edge.
    Convolutions pad circularly, matching the periodic boundaries of the degradation operator. The
    last convolution starts at zero, so an untrained network returns the bicubic interpolation.
    """

    def __init__(self, scale: int, channels: int = 3, features: int = 32, layers: int = 4, *,
                 hr_features: int = 16, hr_layers: int = 0):
        super().__init__()
        if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
            raise ValueError(f"scale must be a positive int, got {scale!r}")
        if not isinstance(layers, int) or layers < 1:
            raise ValueError(f"layers must be a positive int, got {layers!r}")
        if not isinstance(hr_layers, int) or hr_layers < 0:
            raise ValueError(f"hr_layers must be an int >= 0, got {hr_layers!r}")
        self.scale, self.channels = scale, channels

        def conv(c_in: int, c_out: int) -> nn.Conv2d:
            return nn.Conv2d(c_in, c_out, 3, padding=1, padding_mode="circular")

        mods: list[nn.Module] = [conv(channels, features), nn.ReLU()]
        for _ in range(layers - 1):
            mods += [conv(features, features), nn.ReLU()]
        if hr_layers == 0:
            mods += [conv(features, channels * scale**2), nn.PixelShuffle(scale)]
            last = mods[-2]
        else:
            mods += [conv(features, hr_features * scale**2), nn.PixelShuffle(scale), nn.ReLU()]
            for _ in range(hr_layers - 1):
                mods += [conv(hr_features, hr_features), nn.ReLU()]
            mods.append(conv(hr_features, channels))
            last = mods[-1]
        self.body = nn.Sequential(*mods)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(self, y: Tensor) -> Tensor:
        if y.ndim != 4 or y.shape[1] != self.channels:
            raise ValueError(f"SRNet expects LR images of shape (N, {self.channels}, h, w), got {tuple(y.shape)}")
        base = F.interpolate(y, scale_factor=self.scale, mode="bicubic", align_corners=False)
        return base + self.body(y)


def mlp(in_dim: int, out_dim: int, hidden: int = 64, layers: int = 3, *, activation=nn.SiLU) -> nn.Sequential:
    """``layers`` hidden layers of width ``hidden`` between ``in_dim`` inputs and ``out_dim`` outputs."""
    if not isinstance(layers, int) or layers < 1:
        raise ValueError(f"layers must be a positive int, got {layers!r}")
    mods: list[nn.Module] = [nn.Linear(in_dim, hidden), activation()]
    for _ in range(layers - 1):
        mods += [nn.Linear(hidden, hidden), activation()]
    mods.append(nn.Linear(hidden, out_dim))
    return nn.Sequential(*mods)
