"""KernelGAN's two networks: the deep linear generator (a learnable blur-and-subsample) and the
fully convolutional patch discriminator, plus :func:`downscale_valid`, the operator the generator
implements."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..degradation import BlurDownsample

__all__ = ["downscale_valid", "DeepLinearGenerator", "KernelGANDiscriminator"]


def downscale_valid(x: torch.Tensor, kernel: torch.Tensor, scale: int = 2) -> torch.Tensor:
    """``BlurDownsample(kernel, scale, boundary="valid").A(x)``: correlate every channel of ``x`` with
    ``kernel`` (K, K) without padding, then keep every ``scale``-th pixel; the operator a linear
    generator implements. Differentiable in both.
    """
    return BlurDownsample(kernel, scale, boundary="valid").A(x)


class DeepLinearGenerator(nn.Module):
    """KernelGAN's generator: linear convolutions (no bias, no activation), stride ``scale`` last.

    ``structure`` lists the kernel sizes; the first layer maps 1 -> ``channels`` channels, the middle
    ones keep ``channels``, the last maps to 1 channel with stride ``scale``. Colour channels are
    folded into the batch (each is downscaled by the same kernel). With ``structure=(13,)`` it is a
    single strided 13x13 convolution: the same set of operators, a different parametrisation.
    Weights start as Xavier-normal with gain 0.1 (official code).

    Paper: Bell-Kligler et al. 2019, eq. 1 (NeurIPS version) · Book: chapter 7, section "Why a deep linear
    generator?" · Official code: sefibk/KernelGAN, networks.py:Generator
    """

    def __init__(self, structure: Sequence[int] = (7, 5, 3, 1, 1, 1), channels: int = 64, scale: int = 2):
        super().__init__()
        structure = tuple(int(k) for k in structure)
        if not structure or min(structure) < 1:
            raise ValueError(f"structure must be non-empty positive kernel sizes, got {structure}")
        self.structure, self.scale = structure, int(scale)
        layers = []
        for i, k in enumerate(structure):
            last = i == len(structure) - 1
            layers.append(nn.Conv2d(1 if i == 0 else channels, 1 if last else channels, k,
                                    stride=self.scale if last else 1, bias=False))
        self.layers = nn.Sequential(*layers)
        for layer in self.layers:
            nn.init.xavier_normal_(layer.weight, gain=0.1)

    @property
    def kernel_size(self) -> int:
        """The side of the effective kernel, ``sum(k - 1) + 1``."""
        return sum(k - 1 for k in self.structure) + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the layers on every channel of ``x`` (N, C, H, W) -> (N, C, h, w), 'valid' borders."""
        n, c, h, w = x.shape
        out = self.layers(x.reshape(n * c, 1, h, w))
        return out.reshape(n, c, *out.shape[-2:])

    def kernel(self) -> torch.Tensor:
        """The effective (K, K) correlation kernel, differentiable in the weights.

        A delta padded by ``K - 1`` passes through the layers (strides ignored); the response of a
        stack of correlations to a delta is the *flipped* composite kernel, so it is flipped back.
        """
        weight = self.layers[0].weight
        k = torch.ones(1, 1, 1, 1, dtype=weight.dtype, device=weight.device)
        for i, layer in enumerate(self.layers):
            k = F.conv2d(k, layer.weight, padding=self.kernel_size - 1 if i == 0 else 0)
        return k[0, 0].flip(0, 1)

    def downscale(self, x: torch.Tensor, kernel: torch.Tensor | None = None) -> torch.Tensor:
        """Same result as ``forward`` computed through the extracted kernel (fast path)."""
        return downscale_valid(x, self.kernel() if kernel is None else kernel, self.scale)


class KernelGANDiscriminator(nn.Module):
    """KernelGAN's discriminator: a ``kernel_size`` convolution, ``layers - 2`` blocks of
    (1x1 convolution, batch norm, ReLU), a 1x1 convolution and a sigmoid; spectral norm
    (Miyato et al., 2018) on every convolution. Output: one probability per
    ``kernel_size`` x ``kernel_size`` patch (a map ``kernel_size - 1`` smaller than the input).

    Not :class:`~course_lib.losses.PatchDiscriminator` (strided 4x4 convolutions, leaky ReLU, logits):
    this one never downsamples, sees only 7x7 patches and outputs probabilities.

    Paper: Bell-Kligler et al. 2019 (NeurIPS version), the discriminator D (eq./sec. number not verified) · Book:
    chapter 7, section "KernelGAN: an internal GAN whose generator is the downscaler" · Official code:
    sefibk/KernelGAN, networks.py:Discriminator
    """

    def __init__(self, in_channels: int = 3, channels: int = 64, layers: int = 7, kernel_size: int = 7):
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm

        def conv(cin, cout, k):
            layer = nn.Conv2d(cin, cout, k, bias=True)
            nn.init.xavier_normal_(layer.weight, gain=0.1)
            nn.init.zeros_(layer.bias)
            return sn(layer)

        blocks: list[nn.Module] = [conv(in_channels, channels, kernel_size)]
        for _ in range(layers - 2):
            bn = nn.BatchNorm2d(channels)
            nn.init.normal_(bn.weight, 1.0, 0.02)
            nn.init.zeros_(bn.bias)
            blocks += [conv(channels, channels, 1), bn, nn.ReLU(inplace=True)]
        blocks += [conv(channels, 1, 1), nn.Sigmoid()]
        self.net = nn.Sequential(*blocks)
        self.kernel_size = kernel_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, 1, H - k + 1, W - k + 1) map of "real patch" probabilities."""
        return self.net(x)
