"""Multi-scale splits with a learned (optionally conditional) Gaussian prior.

Design used throughout course_lib: **a Gaussian prior is written as an invertible layer.**
Scoring ``x`` under ``N(mean, std^2)`` is the same as mapping it to ``eps = (x - mean) / std`` and
scoring ``eps`` under N(0, I), because

    log N(x; mean, std^2) = log N(eps; 0, I) - sum(log std).

``Gaussianize`` is that map (its logdet is ``-sum(log std)``); ``mean`` and ``log std`` come
from a conditioning tensor (HCFlow: features of the coarser level) or are learned constants.
``Split`` applies it to the channels a multi-scale flow factors out (Dinh et al. 2017,
sec. 3.6; Glow's split prior conditioned on the kept half). Both keep the tensor's shape, so they
obey the ``forward(x, cond) -> (z, logdet)`` contract, and every latent of a model is then scored
under N(0, I). Sampling at temperature T draws ``eps ~ N(0, T^2 I)`` and runs the inverse, which
is ``mean + T std eps0``: the split priors' temperature comes for free.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import InvertibleModule, Tensor, sum_per_sample
from .distributions import ConditionalDiagonalGaussian

__all__ = ["Gaussianize", "Split"]


class Gaussianize(InvertibleModule):
    """``z = (x - mean) / std``, ``logdet = -sum(log std)``; mean/std from ``cond`` or learned.

    With ``cond_channels > 0`` the parameters come from a zero-initialised 3x3 conv of ``cond``
    (or a linear layer for vectors, ``spatial=False``); otherwise they are learned per channel.
    """

    def __init__(self, channels: int, cond_channels: int = 0, *, spatial: bool = True, clamp: float | None = None):
        super().__init__()
        if not isinstance(channels, int) or channels < 1:
            raise ValueError(f"channels must be a positive int, got {channels!r}")
        self.channels = channels
        self.cond_channels = cond_channels
        self.conditional = cond_channels > 0
        if self.conditional:
            self.prior = ConditionalDiagonalGaussian(cond_channels, channels, spatial=spatial, clamp=clamp)
        else:
            self.mean = nn.Parameter(torch.zeros(channels))
            self.log_std = nn.Parameter(torch.zeros(channels))

    def params(self, x: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor]:
        """Mean and log-std broadcastable to ``x``."""
        if x.shape[1] != self.channels:
            raise ValueError(f"Gaussianize expects {self.channels} channels, got {x.shape[1]}")
        if self.conditional:
            if cond is None:
                raise ValueError("Gaussianize is conditional; pass cond=<tensor>")
            mean, log_std = self.prior.params(cond)
            return mean.to(x.dtype), log_std.to(x.dtype)
        shape = (1, -1, *([1] * (x.dim() - 2)))
        return self.mean.view(shape).to(x.dtype), self.log_std.view(shape).to(x.dtype)

    def _forward(self, x: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor]:
        mean, log_std = self.params(x, cond)
        z = (x - mean) * torch.exp(-log_std)
        return z, -sum_per_sample(log_std.expand_as(x))

    def _inverse(self, z: Tensor, cond: Tensor | None) -> Tensor:
        return self._inverse_and_logdet(z, cond)[0]

    def _inverse_and_logdet(self, z: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor]:
        mean, log_std = self.params(z, cond)
        return mean + torch.exp(log_std) * z, sum_per_sample(log_std.expand_as(z))


class Split(InvertibleModule):
    """Factor out channels ``keep_channels:`` and Gaussianize them; keep ``:keep_channels`` as is.

    The prior of the split-off part is conditioned on the kept part (``condition_on_kept=True``,
    as in Glow) and/or on an external ``cond`` map (``cond_channels > 0``, as in HCFlow); with
    neither it is a learned per-channel Gaussian. The output has the input's shape: the kept
    channels first, then the standardised split-off channels; ``split`` separates them.
    """

    def __init__(
        self,
        in_channels: int,
        keep_channels: int | None = None,
        *,
        cond_channels: int = 0,
        condition_on_kept: bool = True,
        spatial: bool = True,
        clamp: float | None = None,
    ):
        super().__init__()
        if keep_channels is None:
            keep_channels = in_channels // 2
        if not 0 < keep_channels < in_channels:
            raise ValueError(f"keep_channels must be between 1 and {in_channels - 1}, got {keep_channels}")
        self.in_channels = in_channels
        self.keep_channels = keep_channels
        self.off_channels = in_channels - keep_channels
        self.cond_channels = cond_channels
        self.condition_on_kept = condition_on_kept
        self.conditional = cond_channels > 0
        prior_cond = (keep_channels if condition_on_kept else 0) + cond_channels
        self.gaussianize = Gaussianize(self.off_channels, prior_cond, spatial=spatial, clamp=clamp)

    def split(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """(kept, split-off) parts of a tensor of ``in_channels`` channels."""
        if z.shape[1] != self.in_channels:
            raise ValueError(f"Split expects {self.in_channels} channels, got {z.shape[1]}")
        return z[:, : self.keep_channels], z[:, self.keep_channels :]

    def _prior_cond(self, kept: Tensor, cond: Tensor | None) -> Tensor | None:
        parts = ([kept] if self.condition_on_kept else []) + ([cond.to(kept.dtype)] if self.conditional else [])
        if self.conditional and cond.shape[1] != self.cond_channels:
            raise ValueError(f"Split expects cond with {self.cond_channels} channels, got {cond.shape[1]}")
        return torch.cat(parts, dim=1) if parts else None

    def _forward(self, x: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor]:
        kept, off = self.split(x)
        eps, logdet = self.gaussianize._forward(off, self._prior_cond(kept, cond))
        return torch.cat([kept, eps], dim=1), logdet

    def _inverse(self, z: Tensor, cond: Tensor | None) -> Tensor:
        return self._inverse_and_logdet(z, cond)[0]

    def _inverse_and_logdet(self, z: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor]:
        kept, eps = self.split(z)
        off, logdet = self.gaussianize._inverse_and_logdet(eps, self._prior_cond(kept, cond))
        return torch.cat([kept, off], dim=1), logdet
