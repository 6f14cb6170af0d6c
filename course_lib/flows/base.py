"""The contract every invertible module follows, and the composition of modules into a flow.

One interface for every layer in ``course_lib.flows`` (and for IRN / HCFlow, built on it)::

    z, logdet = layer(x, cond=None)                    # forward: data -> latent, logdet has shape (N,)
    x = layer.inverse(z, cond=None)                    # inverse: latent -> data
    x, logdet_inv = layer.inverse_and_logdet(z, cond)  # inverse with its own logdet, = -logdet

``logdet`` is ``log |det dz/dx|`` per sample, so the change-of-variables formula reads

    log p_X(x) = log p_Z(z) + logdet                      (Dinh et al. 2017, eq. 3)

Subclasses implement ``_forward`` and ``_inverse``; the public ``forward`` / ``inverse`` /
``inverse_and_logdet`` check the input once (floating dtype, batch dimension, finite values) and
then call them. Containers such as ``FlowSequential`` check only their own input and call their
children's ``_forward`` directly, so a deep flow pays for one check per call, not one per layer.

The log-determinant of the inverse, ``log |det dx/dz| = -log |det dz/dx|`` at ``x = inverse(z)``,
is what running a layer backwards needs (``Inverse``, e.g. Haar *up*-sampling). By default
``_inverse_and_logdet`` runs ``_inverse`` and then ``_forward`` on the result to get it, which
costs a second pass; every layer of ``course_lib.flows`` overrides it with its closed form (the
same log-scales the inverse computes anyway), so it costs one pass there. A layer of your own
needs only ``_forward`` and ``_inverse``; add ``_inverse_and_logdet`` when it is cheap.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

__all__ = [
    "FlowSequential",
    "Inverse",
    "InvertibleModule",
    "check_cond",
    "check_tensor",
    "spatial_size",
    "sum_per_sample",
]

Tensor = torch.Tensor


def check_tensor(x: Tensor, name: str, where: str, *, min_dim: int = 2) -> None:
    """Raise a clear TypeError / ValueError when ``x`` is not a finite floating batch tensor."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{where}: {name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{where}: {name} must have a floating dtype, got {x.dtype}")
    if x.dim() < min_dim:
        raise ValueError(
            f"{where}: {name} must be a batch of shape (N, D) or (N, C, H, W), got shape {tuple(x.shape)}"
        )
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{where}: {name} contains non-finite values (NaN or Inf)")


def check_cond(cond: Tensor | None, x: Tensor, where: str, *, required: bool) -> None:
    """Check a conditioning tensor against the batch it conditions."""
    if cond is None:
        if required:
            raise ValueError(f"{where}: this layer is conditional; pass cond=<tensor>")
        return
    check_tensor(cond, "cond", where)
    if cond.shape[0] != x.shape[0]:
        raise ValueError(
            f"{where}: cond has batch size {cond.shape[0]} but the input has {x.shape[0]}"
        )
    if x.dim() == 4 and (cond.dim() != 4 or cond.shape[2:] != x.shape[2:]):
        raise ValueError(
            f"{where}: cond must be a feature map of shape (N, C_cond, {x.shape[2]}, {x.shape[3]}), "
            f"got {tuple(cond.shape)}"
        )


def sum_per_sample(x: Tensor) -> Tensor:
    """Sum over every dimension but the batch dimension: (N, ...) -> (N,)."""
    return x.reshape(x.shape[0], -1).sum(dim=1)


def spatial_size(x: Tensor) -> int:
    """Number of positions a per-channel operation is applied at: H*W for images, 1 for vectors."""
    return x[0, 0].numel()


class InvertibleModule(nn.Module):
    """Base class: ``forward(x, cond=None) -> (z, logdet)``, ``inverse(z, cond=None) -> x``.

    ``inverse_and_logdet(z, cond=None) -> (x, logdet)`` gives the inverse together with its own
    log-determinant ``log |det dx/dz|`` (minus the forward one). Subclasses implement
    ``_forward`` and ``_inverse``, and override ``_inverse_and_logdet`` where the inverse's
    log-determinant has a cheap closed form (the default runs the layer forward once more).
    Set ``conditional = True`` in a subclass whose transform needs ``cond``.
    """

    conditional: bool = False

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        where = f"{type(self).__name__}.forward"
        check_tensor(x, "x", where)
        check_cond(cond, x, where, required=self.conditional)
        return self._forward(x, cond)

    def inverse(self, z: Tensor, cond: Tensor | None = None) -> Tensor:
        where = f"{type(self).__name__}.inverse"
        check_tensor(z, "z", where)
        check_cond(cond, z, where, required=self.conditional)
        return self._inverse(z, cond)

    def inverse_and_logdet(self, z: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(x, logdet)`` with ``x = inverse(z)`` and ``logdet = log |det dx/dz|`` per sample.

        It equals minus the forward logdet at ``x``; layers with a closed form compute it in the
        same pass as the inverse.
        """
        where = f"{type(self).__name__}.inverse_and_logdet"
        check_tensor(z, "z", where)
        check_cond(cond, z, where, required=self.conditional)
        return self._inverse_and_logdet(z, cond)

    def _forward(self, x: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def _inverse(self, z: Tensor, cond: Tensor | None) -> Tensor:
        raise NotImplementedError

    def _inverse_and_logdet(self, z: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor]:
        # generic fallback: no closed form, so run the layer forward on the result
        x = self._inverse(z, cond)
        _, logdet = self._forward(x, cond)
        return x, -logdet


class FlowSequential(InvertibleModule):
    """Compose invertible modules: the logdets of the layers add up (chain rule).

    ``cond`` is handed to every layer; unconditional layers ignore it.
    """

    def __init__(self, *layers: InvertibleModule | Iterable[InvertibleModule]):
        super().__init__()
        if len(layers) == 1 and not isinstance(layers[0], nn.Module):
            layers = tuple(layers[0])
        for layer in layers:
            if not isinstance(layer, InvertibleModule):
                raise TypeError(
                    f"FlowSequential takes InvertibleModule layers, got {type(layer).__name__}"
                )
        self.layers = nn.ModuleList(layers)
        self.conditional = any(layer.conditional for layer in layers)

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, i: int) -> InvertibleModule:
        return self.layers[i]

    def __iter__(self):
        return iter(self.layers)

    def _forward(self, x: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor]:
        logdet = x.new_zeros(x.shape[0])
        for layer in self.layers:
            x, ld = layer._forward(x, cond)
            logdet = logdet + ld
        return x, logdet

    def _inverse(self, z: Tensor, cond: Tensor | None) -> Tensor:
        for layer in reversed(self.layers):
            z = layer._inverse(z, cond)
        return z

    def _inverse_and_logdet(self, z: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor]:
        logdet = z.new_zeros(z.shape[0])
        for layer in reversed(self.layers):
            z, ld = layer._inverse_and_logdet(z, cond)
            logdet = logdet + ld
        return z, logdet


class Inverse(InvertibleModule):
    """Run a layer backwards: forward is ``layer.inverse`` and the logdet changes sign.

    E.g. ``Inverse(HaarDownsampling(3))`` is Haar *up*-sampling. Both directions run the wrapped
    layer once: the forward calls ``layer``'s ``inverse_and_logdet`` (a closed form for every
    layer of ``course_lib.flows``; layers without one fall back to an extra forward pass).
    """

    def __init__(self, layer: InvertibleModule):
        super().__init__()
        if not isinstance(layer, InvertibleModule):
            raise TypeError(f"Inverse takes an InvertibleModule, got {type(layer).__name__}")
        self.layer = layer
        self.conditional = layer.conditional

    def _forward(self, x: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor]:
        return self.layer._inverse_and_logdet(x, cond)

    def _inverse(self, z: Tensor, cond: Tensor | None) -> Tensor:
        return self.layer._forward(z, cond)[0]

    def _inverse_and_logdet(self, z: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor]:
        return self.layer._forward(z, cond)  # the inverse of the inverse is the layer itself
