"""Invertible 1x1 convolution (Kingma & Dhariwal 2018, sec. 3.2).

A learned C x C matrix W mixes the channels at every pixel: ``y[:, :, i, j] = W x[:, :, i, j]``,
``logdet = H * W_img * log|det W|``. It generalises a fixed channel permutation, so the next
coupling layer sees a learned mixture of all channels. With ``lu=True`` W is stored as
``P L (U + diag(sign * exp(log_s)))`` (eq. 10 of the Glow paper) so that ``log|det W| = sum(log_s)``
costs O(C) instead of O(C^3). Works on (N, C) vectors too (then it is an invertible linear layer).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import InvertibleModule, Tensor, spatial_size

__all__ = ["InvertibleConv1x1"]


def _random_rotation(channels: int, generator: torch.Generator | None) -> Tensor:
    q, _ = torch.linalg.qr(torch.randn(channels, channels, generator=generator))
    return q


class InvertibleConv1x1(InvertibleModule):
    """Learned channel mixing, initialised to a random rotation; plain or LU-parametrised."""

    def __init__(self, channels: int, *, lu: bool = False, generator: torch.Generator | None = None):
        super().__init__()
        if not isinstance(channels, int) or channels < 1:
            raise ValueError(f"channels must be a positive int, got {channels!r}")
        self.channels = channels
        self.lu = lu
        w = _random_rotation(channels, generator)
        if not lu:
            self.weight = nn.Parameter(w)
            return
        p, lower, upper = torch.linalg.lu(w)
        s = torch.diagonal(upper)
        self.register_buffer("perm", p)
        self.register_buffer("sign_s", torch.sign(s))
        self.register_buffer("lower_mask", torch.tril(torch.ones(channels, channels), -1))
        self.lower = nn.Parameter(lower)
        self.upper = nn.Parameter(torch.triu(upper, 1))
        self.log_s = nn.Parameter(torch.log(torch.abs(s)))

    def matrix(self) -> Tensor:
        """The current C x C mixing matrix W."""
        if not self.lu:
            return self.weight
        eye = torch.eye(self.channels, dtype=self.lower.dtype, device=self.lower.device)
        lower = self.lower * self.lower_mask + eye
        upper = self.upper * self.lower_mask.T + torch.diag(self.sign_s * torch.exp(self.log_s))
        return self.perm @ lower @ upper

    def log_abs_det(self) -> Tensor:
        """``log |det W|`` (one pixel's contribution)."""
        if self.lu:
            return self.log_s.sum()
        return torch.linalg.slogdet(self.weight)[1]

    @staticmethod
    def _mix(x: Tensor, w: Tensor) -> Tensor:
        w = w.to(x.dtype)
        if x.dim() == 2:
            return x @ w.T
        return F.conv2d(x, w.view(*w.shape, 1, 1))

    def _check(self, x: Tensor) -> None:
        if x.dim() not in (2, 4) or x.shape[1] != self.channels:
            raise ValueError(
                f"InvertibleConv1x1 expects (N, {self.channels}) or (N, {self.channels}, H, W), "
                f"got {tuple(x.shape)}"
            )

    def _forward(self, x: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor]:
        self._check(x)
        logdet = spatial_size(x) * self.log_abs_det().to(x.dtype)
        return self._mix(x, self.matrix()), logdet.expand(x.shape[0])

    def _inverse(self, z: Tensor, cond: Tensor | None) -> Tensor:
        self._check(z)
        return self._mix(z, torch.linalg.inv(self.matrix()))

    def _inverse_and_logdet(self, z: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor]:
        logdet = -spatial_size(z) * self.log_abs_det().to(z.dtype)
        return self._inverse(z, cond), logdet.expand(z.shape[0])
