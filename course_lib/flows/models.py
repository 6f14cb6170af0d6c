"""Flow models: an invertible map plus a base distribution.

* ``FlowModel``: any ``InvertibleModule`` with a prior; ``log_prob``, ``sample``.
* ``RealNVP2D``: affine couplings with MLP subnets for 2D toy densities (Dinh et al. 2017).
* ``MultiScaleFlow``: levels separated by ``Split`` layers (Dinh et al. 2017, sec. 3.6);
  ``forward(x, cond) -> (zs, logdet)`` with ``zs`` a **list** of latents, finest split-off part
  first and the coarsest (final) latent last. Every latent is scored under N(0, I), because the
  split priors are Gaussianize layers (see ``course_lib.flows.split``).
* ``Glow``: a ``MultiScaleFlow`` of Glow steps (ActNorm -> 1x1 conv -> affine coupling;
  Kingma & Dhariwal 2018) with squeeze or Haar downsampling.

Log-densities are in nats per sample; use ``course_lib.flows.nll_bits_per_dim`` for bits per dimension.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from torch import nn

from .actnorm import ActNorm
from .base import FlowSequential, InvertibleModule, Tensor, check_tensor
from .coupling import AdditiveCoupling, AffineCoupling, SubnetConstructor
from .dequantization import UniformDequantization
from .distributions import StandardNormal, _check_temperature
from .invconv import InvertibleConv1x1
from .reshape import HaarDownsampling, Squeeze
from .split import Split
from .subnets import MLP, ConvNet
from .utils import nll_bits_per_dim

__all__ = ["FlowModel", "Glow", "MultiScaleFlow", "RealNVP2D", "glow_step"]


class FlowModel(nn.Module):
    """A density ``log p(x) = log p_Z(f(x)) + log|det df/dx|`` from a flow ``f`` and a prior."""

    def __init__(self, flow: InvertibleModule, prior: nn.Module):
        super().__init__()
        if not isinstance(flow, InvertibleModule):
            raise TypeError(f"flow must be an InvertibleModule, got {type(flow).__name__}")
        self.flow = flow
        self.prior = prior

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(z, logdet)`` of the flow."""
        return self.flow(x, cond)

    def inverse(self, z: Tensor, cond: Tensor | None = None) -> Tensor:
        return self.flow.inverse(z, cond)

    def log_prob(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        """Exact log-density per sample in nats, shape (N,)."""
        z, logdet = self.flow(x, cond)
        return self.prior.log_prob(z) + logdet

    def sample(
        self,
        n: int,
        *,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        cond: Tensor | None = None,
    ) -> Tensor:
        """Draw ``z`` from the prior at ``temperature`` and map it back with the inverse flow."""
        z = self.prior.sample(n, temperature=temperature, generator=generator)
        param = next(self.parameters(), None)
        if param is not None:
            z = z.to(device=param.device, dtype=param.dtype)
        return self.flow.inverse(z, cond)


class RealNVP2D(FlowModel):
    """RealNVP for points in R^dim: ``n_couplings`` affine couplings with alternating halves.

    Optional ``actnorm`` (ActNorm before each coupling) and ``lu`` (a learned LU-parametrised
    linear map before each coupling, the 2D analogue of Glow's 1x1 conv). ``clamp_kind="none"``
    is the original RealNVP ``exp(s)``.
    """

    def __init__(
        self,
        dim: int = 2,
        n_couplings: int = 8,
        hidden: int = 64,
        layers: int = 2,
        *,
        clamp: float = 2.0,
        clamp_kind: str = "atan",
        actnorm: bool = False,
        lu: bool = False,
        cond_dim: int = 0,
    ):
        if not isinstance(dim, int) or dim < 2:
            raise ValueError(f"dim must be an int >= 2, got {dim!r}")
        if not isinstance(n_couplings, int) or n_couplings < 1:
            raise ValueError(f"n_couplings must be a positive int, got {n_couplings!r}")
        subnet = functools.partial(MLP, hidden=hidden, layers=layers)
        steps: list[InvertibleModule] = []
        for i in range(n_couplings):
            if actnorm:
                steps.append(ActNorm(dim))
            if lu:
                steps.append(InvertibleConv1x1(dim, lu=True))
            steps.append(
                AffineCoupling(
                    dim, subnet, clamp=clamp, clamp_kind=clamp_kind, cond_channels=cond_dim, swap=i % 2 == 1
                )
            )
        super().__init__(FlowSequential(steps), StandardNormal(dim))
        self.dim = dim


def glow_step(
    channels: int,
    subnet: SubnetConstructor,
    *,
    lu: bool = True,
    coupling: str = "affine",
    clamp: float = 2.0,
    clamp_kind: str = "atan",
    cond_channels: int = 0,
) -> FlowSequential:
    """One Glow step: ActNorm -> invertible 1x1 conv -> (affine or additive) coupling."""
    if coupling == "affine":
        couple: InvertibleModule = AffineCoupling(
            channels, subnet, clamp=clamp, clamp_kind=clamp_kind, cond_channels=cond_channels
        )
    elif coupling == "additive":
        couple = AdditiveCoupling(channels, subnet, cond_channels=cond_channels)
    else:
        raise ValueError(f"coupling must be 'affine' or 'additive', got {coupling!r}")
    return FlowSequential(ActNorm(channels), InvertibleConv1x1(channels, lu=lu), couple)


class MultiScaleFlow(nn.Module):
    """Levels ``f_1 .. f_L`` with a ``Split`` after every level but the last.

    ``forward(x, cond=None) -> (zs, logdet)``: ``zs[i]`` is the standardised part split off after
    level i and ``zs[-1]`` the output of the last level. ``cond`` is ``None``, one tensor handed
    to every level, or a list with one tensor per level (each at that level's resolution).
    ``inverse(zs, cond=None) -> x``. ``log_prob`` scores every latent under N(0, I).
    """

    def __init__(self, levels: Sequence[InvertibleModule], splits: Sequence[Split]):
        super().__init__()
        if len(splits) != len(levels) - 1:
            raise ValueError(f"need one split between consecutive levels: {len(levels)} levels, {len(splits)} splits")
        self.levels = nn.ModuleList(levels)
        self.splits = nn.ModuleList(splits)
        self.prior = StandardNormal(())

    def _cond(self, cond, i: int):
        if isinstance(cond, (list, tuple)):
            if len(cond) != len(self.levels):
                raise ValueError(f"cond list must have one entry per level ({len(self.levels)}), got {len(cond)}")
            return cond[i]
        return cond

    def forward(self, x: Tensor, cond: Tensor | Sequence[Tensor] | None = None) -> tuple[list[Tensor], Tensor]:
        check_tensor(x, "x", f"{type(self).__name__}.forward")
        zs: list[Tensor] = []
        logdet = x.new_zeros(x.shape[0])
        h = x
        for i, level in enumerate(self.levels):
            c = self._cond(cond, i)
            if c is not None:
                check_tensor(c, "cond", f"{type(self).__name__}.forward (level {i})")
            h, ld = level._forward(h, c)
            logdet = logdet + ld
            if i < len(self.splits):
                h, ld = self.splits[i]._forward(h, c)
                logdet = logdet + ld
                h, eps = self.splits[i].split(h)
                zs.append(eps)
        zs.append(h)
        return zs, logdet

    def inverse(self, zs: Sequence[Tensor], cond: Tensor | Sequence[Tensor] | None = None) -> Tensor:
        if not isinstance(zs, (list, tuple)) or len(zs) != len(self.levels):
            raise ValueError(f"inverse expects a list of {len(self.levels)} latents, got {type(zs).__name__}")
        for z in zs:
            check_tensor(z, "z", f"{type(self).__name__}.inverse")
        h = zs[-1]
        for i in reversed(range(len(self.levels))):
            c = self._cond(cond, i)
            if i < len(self.splits):
                h = self.splits[i]._inverse(torch.cat([h, zs[i]], dim=1), c)
            h = self.levels[i]._inverse(h, c)
        return h

    def log_prob(self, x: Tensor, cond: Tensor | Sequence[Tensor] | None = None) -> Tensor:
        """Exact log-density per sample in nats, shape (N,)."""
        zs, logdet = self(x, cond)
        return sum(self.prior.log_prob(z) for z in zs) + logdet

    def bits_per_dim(self, x: Tensor, cond=None, *, n_bins: int = 256) -> Tensor:
        """Dequantized NLL in bits per dimension of images with ``n_bins`` levels in [0, 1]."""
        y, ld = UniformDequantization(n_bins)(x)
        return nll_bits_per_dim(self.log_prob(y, cond) + ld, x[0].numel())

    @torch.no_grad()
    def latent_shapes(self, shape: Sequence[int], cond=None) -> list[tuple[int, ...]]:
        """Shapes (without batch) of the latents for inputs of shape ``(C, H, W)``."""
        was_training = self.training
        self.eval()  # a dummy pass must not trigger ActNorm's data-dependent initialisation
        try:
            param = next(self.parameters())
            zs, _ = self(torch.zeros(1, *shape, dtype=param.dtype, device=param.device), cond)
        finally:
            self.train(was_training)
        return [tuple(z.shape[1:]) for z in zs]

    @torch.no_grad()
    def sample(
        self,
        n: int,
        shape: Sequence[int],
        *,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        cond: Tensor | Sequence[Tensor] | None = None,
    ) -> Tensor:
        """``n`` samples of shape ``(C, H, W)``; every latent is drawn from N(0, temperature^2 I)."""
        _check_temperature(temperature)
        param = next(self.parameters())
        zs = [
            temperature * torch.randn((n, *s), generator=generator).to(device=param.device, dtype=param.dtype)
            for s in self.latent_shapes(shape, None if cond is None else self._first(cond))
        ]
        return self.inverse(zs, cond)

    @staticmethod
    def _first(cond):
        if isinstance(cond, (list, tuple)):
            return [c[:1] for c in cond]
        return cond[:1]


class Glow(MultiScaleFlow):
    """Glow-style multi-scale flow for images (Kingma & Dhariwal 2018, fig. 2).

    Level i: downsample (``"squeeze"`` or ``"haar"``) -> ``steps`` Glow steps; between levels a
    ``Split`` keeps half the channels and scores the rest under a Gaussian conditioned on the
    kept half (``split_prior="kept"``) or a learned one (``"learned"``).
    """

    def __init__(
        self,
        in_channels: int = 3,
        levels: int = 2,
        steps: int = 4,
        hidden: int = 64,
        *,
        downsample: str = "squeeze",
        coupling: str = "affine",
        lu: bool = True,
        clamp: float = 2.0,
        clamp_kind: str = "atan",
        split_prior: str = "kept",
        cond_channels: int = 0,
        subnet: SubnetConstructor | None = None,
    ):
        for name, value in (("in_channels", in_channels), ("levels", levels), ("steps", steps)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if downsample not in ("squeeze", "haar"):
            raise ValueError(f"downsample must be 'squeeze' or 'haar', got {downsample!r}")
        if split_prior not in ("kept", "learned"):
            raise ValueError(f"split_prior must be 'kept' or 'learned', got {split_prior!r}")
        subnet = subnet or functools.partial(ConvNet, hidden=hidden)
        level_modules, splits = [], []
        c = in_channels
        for i in range(levels):
            down = Squeeze(2) if downsample == "squeeze" else HaarDownsampling(c)
            c *= 4
            flow_steps = [
                glow_step(c, subnet, lu=lu, coupling=coupling, clamp=clamp, clamp_kind=clamp_kind,
                          cond_channels=cond_channels)
                for _ in range(steps)
            ]
            level_modules.append(FlowSequential(down, *flow_steps))
            if i < levels - 1:
                splits.append(Split(c, c // 2, cond_channels=cond_channels, condition_on_kept=split_prior == "kept"))
                c //= 2
        super().__init__(level_modules, splits)
        self.in_channels = in_channels
