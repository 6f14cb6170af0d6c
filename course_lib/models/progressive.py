"""Progressive SR (LapSRN-like): reach ``x s`` in ``log2 s`` stages of ``x 2``, each predicting the
missing detail (a Laplacian-pyramid band) of the next level (Lai et al., 2017).

Two branches run side by side. The *feature branch* refines features at the current resolution
(``depth`` convolutions with leaky ReLU), enlarges them ``x 2`` with a transposed convolution and
turns them into a residual image. The *image branch* enlarges the current image ``x 2`` and adds
the residual. LapSRN's image branch is a learnable transposed convolution that starts as bilinear
interpolation (``image_upsampler="deconv"``); the default here is fixed MATLAB bicubic ``x 2``
(``"bicubic"``), so that all four frameworks of the course start from the same bicubic baseline
and a short training budget compares the architectures rather than their starting points.
Every stage emits an image, so the ``x 2`` result comes for free with the ``x 4`` one
(:meth:`ProgressiveSR.upscale_levels`); LapSRN supervises all of them (deep supervision).
"""

from __future__ import annotations

import torch
from torch import nn

from .common import (
    BicubicUpsample,
    SRModel,
    SubPixelUpsampler,
    _check_positive_int,
    _check_scale,
    deconv_upsampler,
)

__all__ = ["ProgressiveSR", "bilinear_deconv_weight"]


def bilinear_deconv_weight(channels: int, scale: int = 2) -> torch.Tensor:
    """Weights ``(C, 1, 2s, 2s)`` for a grouped ``ConvTranspose2d(stride=s, padding=s//2)`` that does
    bilinear interpolation ``x s`` (the classic FCN / LapSRN initialisation). Away from the borders
    its output is the bilinear interpolant sampled at MATLAB's pixel centres."""
    size = 2 * scale
    center = scale - 0.5
    ramp = 1 - torch.abs(torch.arange(size, dtype=torch.float32) - center) / scale
    kernel = ramp[:, None] * ramp[None, :]
    return kernel.expand(channels, 1, size, size).clone()


class _Stage(nn.Module):
    """One ``x 2`` level: refine features, enlarge them, predict the residual image."""

    def __init__(self, features: int, channels: int, depth: int, upsampler: str, image_upsampler: str) -> None:
        super().__init__()
        layers = []
        for _ in range(depth):
            layers += [nn.Conv2d(features, features, 3, padding=1), nn.LeakyReLU(0.2, inplace=True)]
        self.refine = nn.Sequential(*layers)
        if upsampler == "deconv":
            self.up_features = deconv_upsampler(features, features, 2)  # 4x4, stride 2, padding 1
        else:
            self.up_features = SubPixelUpsampler(features, features, 2)
        self.act = nn.LeakyReLU(0.2, inplace=True)
        self.to_residual = nn.Conv2d(features, channels, 3, padding=1)
        if image_upsampler == "deconv":
            self.up_image = nn.ConvTranspose2d(channels, channels, 4, stride=2, padding=1, groups=channels,
                                               bias=False)
            with torch.no_grad():
                self.up_image.weight.copy_(bilinear_deconv_weight(channels, 2))
        else:
            self.up_image = BicubicUpsample(2)
        nn.init.zeros_(self.to_residual.weight)  # each stage starts as bilinear x 2
        nn.init.zeros_(self.to_residual.bias)  # (the image branch alone: bicubic or bilinear)

    def forward(self, feats: torch.Tensor, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.act(self.up_features(self.refine(feats)))
        return feats, self.up_image(image) + self.to_residual(feats)


class ProgressiveSR(SRModel):
    """LapSRN-like cascade of ``log2(scale)`` ``x 2`` stages.

    Args:
        scale: 2, 4 or 8.
        channels: image channels.
        features: width of the feature branch (LapSRN: 64).
        depth: convolutions per stage (LapSRN: 10).
        upsampler: ``"deconv"`` (transposed convolution, as in LapSRN) or ``"subpixel"`` for the
            feature branch.
        image_upsampler: ``"bicubic"`` (fixed MATLAB bicubic ``x 2``, default) or ``"deconv"``
            (LapSRN's learnable transposed convolution, initialised as bilinear).
    """

    def __init__(self, scale: int = 4, channels: int = 3, *, features: int = 32, depth: int = 2,
                 upsampler: str = "deconv", image_upsampler: str = "bicubic") -> None:
        super().__init__(_check_scale(scale, (2, 4, 8)), channels)
        _check_positive_int(features, "features")
        _check_positive_int(depth, "depth")
        if upsampler not in ("deconv", "subpixel"):
            raise ValueError(f"upsampler must be 'deconv' or 'subpixel', got {upsampler!r}")
        if image_upsampler not in ("bicubic", "deconv"):
            raise ValueError(f"image_upsampler must be 'bicubic' or 'deconv', got {image_upsampler!r}")
        self.levels = scale.bit_length() - 1
        self.head = nn.Sequential(nn.Conv2d(channels, features, 3, padding=1), nn.LeakyReLU(0.2, inplace=True))
        self.stages = nn.ModuleList(_Stage(features, channels, depth, upsampler, image_upsampler)
                                    for _ in range(self.levels))

    def upscale_levels(self, lr: torch.Tensor) -> list[torch.Tensor]:
        """The image after every stage: ``[x2, x4, ...]`` (the last one is the output).

        Accepts ``(C, h, w)`` or ``(N, C, h, w)`` like ``forward``.
        """
        batch, single = self.check_input(lr)
        feats, image, outputs = self.head(batch - 0.5), batch, []
        for stage in self.stages:
            feats, image = stage(feats, image)
            outputs.append(image[0] if single else image)
        return outputs

    def upscale(self, lr: torch.Tensor) -> torch.Tensor:
        return self.upscale_levels(lr)[-1]
