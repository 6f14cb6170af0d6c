"""ActNorm: a per-channel affine map with data-dependent initialisation (Kingma & Dhariwal 2018, sec. 3.1).

``y = (x + b) * exp(log_s)`` per channel, ``logdet = H * W * sum(log_s)``. On the first forward
pass in training mode ``b`` and ``log_s`` are set so that the output of that batch has zero mean
and unit variance per channel (under torchrun: of the global batch, all processes' shares together);
afterwards they are ordinary parameters. Unlike batch norm, it is
the same function at training and test time, so it stays invertible.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import InvertibleModule, Tensor, spatial_size

__all__ = ["ActNorm"]


class ActNorm(InvertibleModule):
    """Per-channel scale and shift for (N, C) vectors or (N, C, H, W) images."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        if not isinstance(channels, int) or channels < 1:
            raise ValueError(f"channels must be a positive int, got {channels!r}")
        self.channels = channels
        self.eps = eps
        self.bias = nn.Parameter(torch.zeros(channels))
        self.log_scale = nn.Parameter(torch.zeros(channels))
        self.register_buffer("initialized", torch.tensor(False))

    def _shape(self, p: Tensor, x: Tensor) -> Tensor:
        return p.view(1, -1, *([1] * (x.dim() - 2))).to(x.dtype)

    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        """Set bias and scale so that ``x`` maps to zero mean, unit variance per channel."""
        if x.shape[1] != self.channels:
            raise ValueError(f"ActNorm expects {self.channels} channels, got {x.shape[1]}")
        flat = x.transpose(0, 1).reshape(self.channels, -1)
        if flat.shape[1] < 2:
            raise ValueError("ActNorm data initialisation needs at least 2 values per channel")
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            # under torchrun: the statistics of the global batch, as one process would see it
            f = flat.double()
            stats = torch.stack([torch.full_like(f[:, 0], f.shape[1]), f.sum(1), (f * f).sum(1)])
            dist.all_reduce(stats)
            n, total, squares = stats
            mean = total / n
            std = ((squares - n * mean * mean) / (n - 1)).clamp_min(0).sqrt()
            self.bias.copy_(-mean.to(flat.dtype))
            self.log_scale.copy_(-torch.log(std.to(flat.dtype) + self.eps))
        else:
            self.bias.copy_(-flat.mean(dim=1))
            self.log_scale.copy_(-torch.log(flat.std(dim=1) + self.eps))
        self.initialized.fill_(True)

    def _forward(self, x: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor]:
        if x.shape[1] != self.channels:
            raise ValueError(f"ActNorm expects {self.channels} channels, got {x.shape[1]}")
        if self.training and not bool(self.initialized):
            self.initialize(x)
        y = (x + self._shape(self.bias, x)) * torch.exp(self._shape(self.log_scale, x))
        return y, self._logdet(x)

    def _logdet(self, x: Tensor) -> Tensor:
        """Forward logdet ``H * W * sum(log_s)`` for a batch shaped like ``x``, shape (N,)."""
        return (spatial_size(x) * self.log_scale.sum().to(x.dtype)).expand(x.shape[0])

    def _inverse(self, z: Tensor, cond: Tensor | None) -> Tensor:
        if z.shape[1] != self.channels:
            raise ValueError(f"ActNorm expects {self.channels} channels, got {z.shape[1]}")
        return z * torch.exp(-self._shape(self.log_scale, z)) - self._shape(self.bias, z)

    def _inverse_and_logdet(self, z: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor]:
        # the inverse never runs the data-dependent initialisation; its logdet is -H W sum(log_s)
        return self._inverse(z, cond), -self._logdet(z)
