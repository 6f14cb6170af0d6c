"""Base distributions (priors) for flows, with sampling at a temperature.

Sampling "at temperature T" draws from the prior with its standard deviation multiplied by T
(Kingma & Dhariwal 2018, sec. 5: "reduced-temperature" samples; HCFlow and SRFlow call it heat).
T < 1 trades diversity for cleaner samples; T = 0 gives the mode of the prior.

* ``StandardNormal``: N(0, I), no parameters.
* ``DiagonalGaussian``: N(mean, diag(std^2)) with learned mean and log-std per dimension.
* ``ConditionalDiagonalGaussian``: mean and log-std computed from a conditioning tensor by a
  zero-initialised layer (a 3x3 conv for feature maps, a linear layer for vectors), as in Glow's
  split prior and HCFlow's conditional Gaussians of the split-off components.

``log_prob`` always returns one value per sample, shape (N,), in nats.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .base import Tensor, check_tensor, sum_per_sample
from .coupling import soft_clamp

__all__ = ["ConditionalDiagonalGaussian", "DiagonalGaussian", "StandardNormal", "gaussian_log_prob"]

LOG_2PI = math.log(2 * math.pi)


def _check_temperature(temperature: float) -> None:
    if not temperature >= 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")


def gaussian_log_prob(x: Tensor, mean: Tensor | float = 0.0, log_std: Tensor | float = 0.0) -> Tensor:
    """Sum over all non-batch dimensions of log N(x; mean, exp(log_std)^2)."""
    log_std = torch.as_tensor(log_std, dtype=x.dtype, device=x.device)
    eps = (x - mean) * torch.exp(-log_std)
    return sum_per_sample(-0.5 * eps**2 - log_std - 0.5 * LOG_2PI)


class StandardNormal(nn.Module):
    """N(0, I) over tensors of shape ``(N, *shape)``."""

    def __init__(self, shape: Sequence[int] | int):
        super().__init__()
        self.shape = (shape,) if isinstance(shape, int) else tuple(shape)

    def log_prob(self, z: Tensor) -> Tensor:
        check_tensor(z, "z", "StandardNormal.log_prob")
        return sum_per_sample(-0.5 * z**2 - 0.5 * LOG_2PI)

    def sample(
        self,
        n: int,
        *,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        _check_temperature(temperature)
        eps = torch.randn((n, *self.shape), generator=generator, dtype=dtype)
        return (temperature * eps).to(device) if device is not None else temperature * eps


class DiagonalGaussian(nn.Module):
    """N(mean, diag(exp(log_std)^2)) with learned (or fixed) mean and log-std per dimension."""

    def __init__(self, shape: Sequence[int] | int, *, learnable: bool = True):
        super().__init__()
        self.shape = (shape,) if isinstance(shape, int) else tuple(shape)
        mean, log_std = torch.zeros(self.shape), torch.zeros(self.shape)
        if learnable:
            self.mean, self.log_std = nn.Parameter(mean), nn.Parameter(log_std)
        else:
            self.register_buffer("mean", mean)
            self.register_buffer("log_std", log_std)

    def log_prob(self, z: Tensor) -> Tensor:
        check_tensor(z, "z", "DiagonalGaussian.log_prob")
        return gaussian_log_prob(z, self.mean.to(z.dtype), self.log_std.to(z.dtype))

    def sample(
        self, n: int, *, temperature: float = 1.0, generator: torch.Generator | None = None
    ) -> Tensor:
        _check_temperature(temperature)
        eps = torch.randn((n, *self.shape), generator=generator).to(self.mean.device)
        return self.mean + temperature * torch.exp(self.log_std) * eps


class ConditionalDiagonalGaussian(nn.Module):
    """Gaussian over ``channels`` channels whose mean and log-std are computed from ``cond``.

    ``cond`` is a feature map (N, cond_channels, H, W) (then the map is a zero-initialised 3x3
    conv) or a vector (N, cond_channels) with ``spatial=False`` (then it is a linear layer). Zero
    initialisation makes it N(0, I) at the start. ``clamp`` (optional) soft-clamps the log-std to
    (-clamp, clamp) with the atan clamp.
    """

    def __init__(self, cond_channels: int, channels: int, *, spatial: bool = True, clamp: float | None = None):
        super().__init__()
        for name, value in (("cond_channels", cond_channels), ("channels", channels)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.cond_channels, self.channels, self.spatial, self.clamp = cond_channels, channels, spatial, clamp
        if spatial:
            self.net = nn.Conv2d(cond_channels, 2 * channels, 3, padding=1)
        else:
            self.net = nn.Linear(cond_channels, 2 * channels)
        nn.init.zeros_(self.net.weight)
        nn.init.zeros_(self.net.bias)

    def params(self, cond: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log-std, each of shape (N, channels[, H, W])."""
        check_tensor(cond, "cond", "ConditionalDiagonalGaussian")
        if cond.shape[1] != self.cond_channels or cond.dim() != (4 if self.spatial else 2):
            expected = "(N, C, H, W)" if self.spatial else "(N, C)"
            raise ValueError(
                f"ConditionalDiagonalGaussian expects cond {expected} with C={self.cond_channels}, "
                f"got {tuple(cond.shape)}"
            )
        h = self.net(cond)
        mean, log_std = h[:, : self.channels], h[:, self.channels :]
        if self.clamp is not None:
            log_std = soft_clamp(log_std, self.clamp, "atan")
        return mean, log_std

    def log_prob(self, x: Tensor, cond: Tensor) -> Tensor:
        check_tensor(x, "x", "ConditionalDiagonalGaussian.log_prob")
        mean, log_std = self.params(cond)
        return gaussian_log_prob(x, mean, log_std)

    def sample(
        self, cond: Tensor, *, temperature: float = 1.0, generator: torch.Generator | None = None
    ) -> Tensor:
        _check_temperature(temperature)
        mean, log_std = self.params(cond)
        eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype).to(mean.device)
        return mean + temperature * torch.exp(log_std) * eps
