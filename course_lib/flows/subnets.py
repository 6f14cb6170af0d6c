"""Subnetworks for coupling layers. They need not be invertible.

Each class takes ``(c_in, c_out, ...)``, so ``functools.partial(DenseBlock, growth=16)`` or
``subnet`` gives the *constructor* ``(c_in, c_out) -> nn.Module`` that coupling layers expect.
The last layer is initialised to zero so that every coupling starts as the identity map
(Kingma & Dhariwal 2018, sec. 3.3), which keeps deep flows stable at the start of training.

* ``MLP``: for 2D / vector data, input (N, c_in) -> (N, c_out).
* ``ConvNet``: Glow / HCFlow-style ``conv3x3 -> ReLU -> conv1x1 -> ReLU -> zero conv3x3``.
* ``DenseBlock``: IRN's ``DBNet``: five 3x3 convs with dense connections, LeakyReLU(0.2),
  Xavier init scaled by 0.1, zero-initialised last conv (Xiao et al. 2020).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import nn

__all__ = ["MLP", "ConvNet", "DenseBlock", "subnet"]


def _zero_init(layer: nn.Module) -> nn.Module:
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def _check_sizes(**sizes: int) -> None:
    for name, value in sizes.items():
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


class MLP(nn.Sequential):
    """Fully connected net ``c_in -> hidden -> ... -> c_out`` with ReLU; the last layer starts at 0."""

    def __init__(self, c_in: int, c_out: int, hidden: int = 64, layers: int = 2):
        _check_sizes(c_in=c_in, c_out=c_out, hidden=hidden, layers=layers)
        modules: list[nn.Module] = []
        width = c_in
        for _ in range(layers):
            modules += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        modules.append(_zero_init(nn.Linear(width, c_out)))
        super().__init__(*modules)


class ConvNet(nn.Sequential):
    """Glow's coupling net: 3x3 conv, ReLU, 1x1 conv, ReLU, zero-initialised 3x3 conv."""

    def __init__(self, c_in: int, c_out: int, hidden: int = 64):
        _check_sizes(c_in=c_in, c_out=c_out, hidden=hidden)
        super().__init__(
            nn.Conv2d(c_in, hidden, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 1),
            nn.ReLU(),
            _zero_init(nn.Conv2d(hidden, c_out, 3, padding=1)),
        )


class DenseBlock(nn.Module):
    """IRN's dense block: conv_k sees the input and the outputs of all earlier convs.

    Five 3x3 convs: four of width ``growth`` with LeakyReLU(0.2), then one to ``c_out`` (linear,
    zero-initialised). Hidden convs use Xavier init scaled by ``init_scale`` (0.1 in IRN).
    """

    def __init__(self, c_in: int, c_out: int, growth: int = 32, init_scale: float = 0.1):
        super().__init__()
        _check_sizes(c_in=c_in, c_out=c_out, growth=growth)
        self.convs = nn.ModuleList(
            nn.Conv2d(c_in + k * growth, growth, 3, padding=1) for k in range(4)
        )
        self.out = _zero_init(nn.Conv2d(c_in + 4 * growth, c_out, 3, padding=1))
        self.act = nn.LeakyReLU(0.2)
        for conv in self.convs:
            nn.init.xavier_normal_(conv.weight)
            conv.weight.data.mul_(init_scale)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for conv in self.convs:
            features.append(self.act(conv(torch.cat(features, dim=1))))
        return self.out(torch.cat(features, dim=1))


SUBNETS = {"mlp": MLP, "conv": ConvNet, "dense": DenseBlock}


def subnet(kind: str, **kwargs) -> Callable[[int, int], nn.Module]:
    """A subnet constructor ``(c_in, c_out) -> nn.Module``: ``subnet("dense", growth=16)``."""
    if kind not in SUBNETS:
        raise ValueError(f"unknown subnet {kind!r}; choose one of {tuple(SUBNETS)}")
    return functools.partial(SUBNETS[kind], **kwargs)
