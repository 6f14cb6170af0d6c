"""Uniform dequantization: turn discrete pixel values into a continuous variable a density can fit.

A flow has a *density*; images are *discrete* (n_bins levels per value). Fitting a density to
discrete points is degenerate (it can put infinite density on them), so we model
``y = (k + u) / n_bins`` with ``k`` the level index and ``u ~ U(0, 1)^D`` (Theis et al. 2016,
sec. 3.1; Dinh et al. 2017). For the discrete probability P(k) Jensen's inequality gives

    log P(k) >= E_u[ log p(y) ] - D log(n_bins),

so the module returns the term ``-D log(n_bins)`` (the log-volume of one bin) next to ``y``: adding
it to the flow's log-density gives a lower bound on the discrete log-likelihood, which is what
bits per dimension are reported on. (HCFlow adds the same ``-log(quant) * pixels`` term, with
quant = 64 or 256.)

It is **not** an invertible layer, and so not an ``InvertibleModule``: it adds random noise, the
term it returns is a bin volume, not the log-determinant of a bijection, and no inverse recovers
``y``'s noise. It cannot be put inside a ``FlowSequential``; apply it to the data before the flow.
``requantize`` maps ``y`` back to the grid ``k / (n_bins - 1)``, so ``requantize(forward(x)) == x``
holds for ``x`` on that grid.

``quantize=False`` is the noise-only variant of SRFlow / HCFlow: ``y = x + u / n_bins`` for
continuous ``x`` (no rounding to ``n_bins`` levels first), with the same ``-D log(n_bins)`` term;
``requantize`` then returns ``y`` unchanged (the noise cannot be removed).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .base import Tensor, check_tensor

__all__ = ["UniformDequantization"]


class UniformDequantization(nn.Module):
    """``x in {0, 1/(n-1), ..., 1}`` -> ``(y, -D log n)`` with ``y = (k + u) / n`` in [0, 1).

    A plain ``nn.Module``, not an invertible layer (see the module docstring): ``forward(x)``
    returns the dequantized ``y`` and the per-sample log bin volume, shape (N,).
    ``noise=False`` uses the bin centres ``u = 1/2`` (deterministic, e.g. for plots);
    ``quantize=False`` adds the noise to ``x`` as it is (see the module docstring).
    """

    def __init__(self, n_bins: int = 256, *, noise: bool = True, quantize: bool = True):
        super().__init__()
        if not isinstance(n_bins, int) or n_bins < 2:
            raise ValueError(f"n_bins must be an int >= 2, got {n_bins!r}")
        self.n_bins = n_bins
        self.noise = noise
        self.quantize = quantize

    def levels(self, x: Tensor) -> Tensor:
        """Integer level index k in {0, ..., n_bins - 1} of values in [0, 1]."""
        return torch.round(x * (self.n_bins - 1))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(y, log_volume)``: dequantized values and ``-D log(n_bins)`` per sample."""
        check_tensor(x, "x", "UniformDequantization")
        if float(x.min()) < 0.0 or float(x.max()) > 1.0:
            raise ValueError(
                "UniformDequantization expects values in [0, 1], "
                f"got range [{float(x.min()):.3g}, {float(x.max()):.3g}]"
            )
        u = torch.rand_like(x) if self.noise else torch.full_like(x, 0.5)
        y = (self.levels(x) + u) / self.n_bins if self.quantize else x + u / self.n_bins
        num_dims = x[0].numel()
        return y, x.new_full((x.shape[0],), -num_dims * math.log(self.n_bins))

    def requantize(self, y: Tensor) -> Tensor:
        """The grid value ``k / (n_bins - 1)`` of the bin ``y`` lies in (``y`` itself if ``quantize=False``).

        A left inverse of ``forward`` on the grid, not an inverse: the noise is lost.
        """
        check_tensor(y, "y", "UniformDequantization.requantize")
        if not self.quantize:
            return y
        k = torch.clamp(torch.floor(y * self.n_bins), 0, self.n_bins - 1)
        return k / (self.n_bins - 1)
