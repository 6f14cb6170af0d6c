"""Coupling layers: split the channels in two, transform one part with parameters computed from
the other. The Jacobian is block-triangular, so its log-determinant is the sum of the log-scales.

* ``AffineCoupling``: RealNVP / Glow (Dinh et al. 2017, eq. 6-7; Kingma & Dhariwal 2018)
  ``y_b = x_b * exp(s(x_a)) + t(x_a)``, with a soft clamp on ``s``.
* ``AdditiveCoupling``: NICE (Dinh et al. 2015, eq. 5), ``y_b = x_b + t(x_a)``, volume preserving.
* ``AdditiveAffineCoupling``: IRN's ``InvBlockExp`` (Xiao et al. 2020, eq. 4-5)
  ``y_a = x_a + phi(x_b)``; ``y_b = x_b * exp(s(rho(y_a))) + eta(y_a)``.
* ``AffineInjector``: SRFlow's conditional affine map of all channels, ``y = x * exp(s(c)) + t(c)``.

Every coupling takes an optional conditioning tensor ``cond`` (a feature map with the same height
and width as ``x``, or a vector for 2D data) that is concatenated to the subnet input. That is how
SRFlow / HCFlow-style conditional flows see the low-resolution image.

Every coupling's inverse computes the same log-scales as its forward, so ``inverse_and_logdet``
returns ``-sum c(s)`` in the same pass (``Inverse(coupling)`` runs the subnets once).

Subnets come from a *constructor* ``subnet(c_in, c_out) -> nn.Module`` (see
``course_lib.flows.subnets``), as in FrEIA and IRN.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from .base import InvertibleModule, Tensor, sum_per_sample

__all__ = [
    "AdditiveAffineCoupling",
    "AdditiveCoupling",
    "AffineCoupling",
    "AffineInjector",
    "soft_clamp",
]

SubnetConstructor = Callable[[int, int], nn.Module]

CLAMP_KINDS = ("atan", "sigmoid", "tanh", "none")


def soft_clamp(s: Tensor, clamp: float, kind: str = "atan") -> Tensor:
    """Squash a raw log-scale into ``(-clamp, clamp)`` smoothly and monotonically.

    Near 0 the slope is 2/pi (atan), 1 (tanh) or clamp/2 (sigmoid); the bound keeps ``exp(s)``
    within ``[exp(-clamp), exp(clamp)]`` whatever the subnet outputs, so a large learning rate
    cannot make the scales overflow.

    * ``"atan"``: ``clamp * (2/pi) * atan(s / clamp)`` (FrEIA's default). With ``clamp=0.5`` this is
      HCFlow's ``0.318 * atan(2 s)``.
    * ``"sigmoid"``: ``clamp * (2 * sigmoid(s) - 1)`` as in IRN's ``InvBlockExp`` (clamp = 1 there).
    * ``"tanh"``: ``clamp * tanh(s / clamp)``.
    * ``"none"``: no clamp (plain RealNVP ``exp(s)``); large learning rates can then overflow.
    """
    if kind == "atan":
        return clamp * (2.0 / math.pi) * torch.atan(s / clamp)
    if kind == "sigmoid":
        return clamp * (2.0 * torch.sigmoid(s) - 1.0)
    if kind == "tanh":
        return clamp * torch.tanh(s / clamp)
    if kind == "none":
        return s
    raise ValueError(f"unknown clamp kind {kind!r}; choose one of {CLAMP_KINDS}")


def _check_clamp(clamp: float, kind: str) -> None:
    if kind not in CLAMP_KINDS:
        raise ValueError(f"unknown clamp kind {kind!r}; choose one of {CLAMP_KINDS}")
    if kind != "none" and not clamp > 0:
        raise ValueError(f"clamp must be positive, got {clamp}")


class _Coupling(InvertibleModule):
    """Shared bookkeeping: which channels condition (part a) and which are transformed (part b)."""

    def __init__(self, in_channels: int, split_channels: int | None, cond_channels: int, swap: bool):
        super().__init__()
        if in_channels < 2:
            raise ValueError(f"a coupling layer needs at least 2 channels, got {in_channels}")
        if split_channels is None:
            split_channels = in_channels // 2
        if not 0 < split_channels < in_channels:
            raise ValueError(
                f"split_channels must be between 1 and {in_channels - 1}, got {split_channels}"
            )
        if cond_channels < 0:
            raise ValueError(f"cond_channels must be >= 0, got {cond_channels}")
        self.in_channels = in_channels
        self.split_channels = split_channels
        self.cond_channels = cond_channels
        self.conditional = cond_channels > 0
        self.swap = swap
        first, second = split_channels, in_channels - split_channels
        # part a conditions part b; swap=True exchanges the roles of the two channel groups
        self.channels_a, self.channels_b = (second, first) if swap else (first, second)

    def _check_channels(self, x: Tensor) -> None:
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"{type(self).__name__} expects {self.in_channels} channels, got {x.shape[1]}"
            )

    def _split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        self._check_channels(x)
        first, second = x[:, : self.split_channels], x[:, self.split_channels :]
        return (second, first) if self.swap else (first, second)

    def _merge(self, a: Tensor, b: Tensor) -> Tensor:
        return torch.cat((b, a) if self.swap else (a, b), dim=1)

    def _with_cond(self, h: Tensor, cond: Tensor | None) -> Tensor:
        if not self.conditional:
            return h
        if cond is None:
            raise ValueError(f"{type(self).__name__} is conditional; pass cond=<tensor>")
        if cond.shape[1] != self.cond_channels:
            raise ValueError(
                f"{type(self).__name__} expects cond with {self.cond_channels} channels, "
                f"got {cond.shape[1]}"
            )
        return torch.cat((h, cond.to(h.dtype)), dim=1)


class AffineCoupling(_Coupling):
    """RealNVP/Glow affine coupling with a soft-clamped log-scale.

    ``y_a = x_a``, ``y_b = x_b * exp(c(s)) + t`` with ``(s, t) = subnet([x_a, cond])`` and ``c`` the
    soft clamp; ``logdet = sum c(s)``. Part a is the first ``split_channels`` channels (the last
    ones if ``swap``). The subnet's last layer should be zero-initialised so the layer starts as
    the identity.
    """

    def __init__(
        self,
        in_channels: int,
        subnet: SubnetConstructor,
        *,
        split_channels: int | None = None,
        clamp: float = 2.0,
        clamp_kind: str = "atan",
        cond_channels: int = 0,
        swap: bool = False,
    ):
        super().__init__(in_channels, split_channels, cond_channels, swap)
        _check_clamp(clamp, clamp_kind)
        self.clamp, self.clamp_kind = clamp, clamp_kind
        self.subnet = subnet(self.channels_a + cond_channels, 2 * self.channels_b)

    def scale_and_shift(self, a: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor]:
        """The clamped log-scale and the shift for part b, computed from part a (and cond)."""
        h = self.subnet(self._with_cond(a, cond))
        s, t = h[:, : self.channels_b], h[:, self.channels_b :]
        return soft_clamp(s, self.clamp, self.clamp_kind), t

    def _forward(self, x: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor]:
        a, b = self._split(x)
        s, t = self.scale_and_shift(a, cond)
        return self._merge(a, b * torch.exp(s) + t), sum_per_sample(s)

    def _inverse(self, z: Tensor, cond: Tensor | None) -> Tensor:
        return self._inverse_and_logdet(z, cond)[0]

    def _inverse_and_logdet(self, z: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor]:
        a, b = self._split(z)
        s, t = self.scale_and_shift(a, cond)
        return self._merge(a, (b - t) * torch.exp(-s)), -sum_per_sample(s)


class AdditiveCoupling(_Coupling):
    """NICE additive coupling ``y_b = x_b + t([x_a, cond])``; logdet is zero."""

    def __init__(
        self,
        in_channels: int,
        subnet: SubnetConstructor,
        *,
        split_channels: int | None = None,
        cond_channels: int = 0,
        swap: bool = False,
    ):
        super().__init__(in_channels, split_channels, cond_channels, swap)
        self.subnet = subnet(self.channels_a + cond_channels, self.channels_b)

    def _forward(self, x: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor]:
        a, b = self._split(x)
        y = b + self.subnet(self._with_cond(a, cond))
        return self._merge(a, y), x.new_zeros(x.shape[0])

    def _inverse(self, z: Tensor, cond: Tensor | None) -> Tensor:
        a, b = self._split(z)
        return self._merge(a, b - self.subnet(self._with_cond(a, cond)))

    def _inverse_and_logdet(self, z: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor]:
        return self._inverse(z, cond), z.new_zeros(z.shape[0])


class AdditiveAffineCoupling(_Coupling):
    """IRN's ``InvBlockExp``: an additive update of part a, then an affine update of part b.

    ``y_a = x_a + phi([x_b, cond])``;
    ``s = c(rho([y_a, cond]))``; ``y_b = x_b * exp(s) + eta([y_a, cond])``; ``logdet = sum s``.

    IRN uses ``split_channels = 3`` (the LR image, i.e. the LL Haar bands), ``clamp = 1`` and the
    sigmoid clamp ``c(s) = clamp * (2 sigmoid(s) - 1)``; phi, rho, eta are three dense blocks.
    """

    def __init__(
        self,
        in_channels: int,
        subnet: SubnetConstructor,
        *,
        split_channels: int | None = None,
        clamp: float = 1.0,
        clamp_kind: str = "sigmoid",
        cond_channels: int = 0,
        swap: bool = False,
    ):
        super().__init__(in_channels, split_channels, cond_channels, swap)
        _check_clamp(clamp, clamp_kind)
        self.clamp, self.clamp_kind = clamp, clamp_kind
        self.phi = subnet(self.channels_b + cond_channels, self.channels_a)
        self.rho = subnet(self.channels_a + cond_channels, self.channels_b)
        self.eta = subnet(self.channels_a + cond_channels, self.channels_b)

    def _forward(self, x: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor]:
        a, b = self._split(x)
        ya = a + self.phi(self._with_cond(b, cond))
        h = self._with_cond(ya, cond)
        s = soft_clamp(self.rho(h), self.clamp, self.clamp_kind)
        yb = b * torch.exp(s) + self.eta(h)
        return self._merge(ya, yb), sum_per_sample(s)

    def _inverse(self, z: Tensor, cond: Tensor | None) -> Tensor:
        return self._inverse_and_logdet(z, cond)[0]

    def _inverse_and_logdet(self, z: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor]:
        ya, yb = self._split(z)
        h = self._with_cond(ya, cond)
        s = soft_clamp(self.rho(h), self.clamp, self.clamp_kind)
        b = (yb - self.eta(h)) * torch.exp(-s)
        a = ya - self.phi(self._with_cond(b, cond))
        return self._merge(a, b), -sum_per_sample(s)


class AffineInjector(InvertibleModule):
    """SRFlow's affine injector: every channel is scaled and shifted by functions of ``cond`` only.

    ``y = x * exp(c(s)) + t`` with ``(s, t) = subnet(cond)``; ``logdet = sum c(s)``. It injects the
    conditioning (e.g. features of the low-resolution image) into all channels, which a coupling
    cannot do for the channels it passes through (Lugmayr et al. 2020, sec. 3).
    """

    conditional = True

    def __init__(
        self,
        channels: int,
        cond_channels: int,
        subnet: SubnetConstructor,
        *,
        clamp: float = 2.0,
        clamp_kind: str = "atan",
    ):
        super().__init__()
        if channels < 1 or cond_channels < 1:
            raise ValueError(f"channels and cond_channels must be >= 1, got {channels}, {cond_channels}")
        _check_clamp(clamp, clamp_kind)
        self.channels, self.cond_channels = channels, cond_channels
        self.clamp, self.clamp_kind = clamp, clamp_kind
        self.subnet = subnet(cond_channels, 2 * channels)

    def scale_and_shift(self, x: Tensor, cond: Tensor) -> tuple[Tensor, Tensor]:
        if x.shape[1] != self.channels:
            raise ValueError(f"AffineInjector expects {self.channels} channels, got {x.shape[1]}")
        if cond.shape[1] != self.cond_channels:
            raise ValueError(f"AffineInjector expects cond with {self.cond_channels} channels, got {cond.shape[1]}")
        h = self.subnet(cond.to(x.dtype))
        s, t = h[:, : self.channels], h[:, self.channels :]
        return soft_clamp(s, self.clamp, self.clamp_kind), t

    def _forward(self, x: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor]:
        s, t = self.scale_and_shift(x, cond)
        return x * torch.exp(s) + t, sum_per_sample(s)

    def _inverse(self, z: Tensor, cond: Tensor | None) -> Tensor:
        return self._inverse_and_logdet(z, cond)[0]

    def _inverse_and_logdet(self, z: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor]:
        s, t = self.scale_and_shift(z, cond)
        return (z - t) * torch.exp(-s), -sum_per_sample(s)
