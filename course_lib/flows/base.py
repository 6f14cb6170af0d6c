"""The contract every invertible module follows, and the composition of modules into a flow.

One interface for every layer in ``course_lib.flows`` (and for IRN / HCFlow, built on it)::

    z, logdet = layer(x, cond=None)      # forward: data -> latent, logdet has shape (N,)
    x = layer.inverse(z, cond=None)      # inverse: latent -> data

``logdet`` is ``log |det dz/dx|`` per sample, so the change-of-variables formula reads

    log p_X(x) = log p_Z(z) + logdet                      (Dinh et al. 2017, eq. 3)

Subclasses implement ``_forward`` and ``_inverse``; the public ``forward`` / ``inverse`` check the
input once (floating dtype, batch dimension, finite values) and then call them. Containers such as
``FlowSequential`` check only their own input and call their children's ``_forward`` directly,
so a deep flow pays for one check per call, not one per layer.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

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

    def _forward(self, x: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def _inverse(self, z: Tensor, cond: Tensor | None) -> Tensor:
        raise NotImplementedError


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


class Inverse(InvertibleModule):
    """Run a layer backwards: forward is ``layer.inverse`` and the logdet changes sign.

    E.g. ``Inverse(HaarDownsampling(3))`` is Haar *up*-sampling. The logdet of the inverse is
    computed by running the wrapped layer forward on the output, which costs one extra pass.
    """

    def __init__(self, layer: InvertibleModule):
        super().__init__()
        self.layer = layer
        self.conditional = layer.conditional

    def _forward(self, x: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor]:
        y = self.layer._inverse(x, cond)
        _, logdet = self.layer._forward(y, cond)
        return y, -logdet

    def _inverse(self, z: Tensor, cond: Tensor | None) -> Tensor:
        return self.layer._forward(z, cond)[0]
