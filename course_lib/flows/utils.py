"""Units and checks: NLL in bits per dimension, and the two tests every invertible layer must pass.

Bits per dimension (Theis et al. 2016): ``bpd = -log p(x) / (D ln 2)`` for a log-likelihood in
nats of a D-dimensional sample. For 8-bit images it is comparable across image sizes once the
dequantization term ``-D log 256`` is part of ``log p`` (see ``course_lib.flows.dequantization``).

``autograd_logdet`` and ``check_invertible`` are what the unit tests use; IRN, HCFlow and
readers' own layers can be checked with them in one line.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from .base import InvertibleModule, Tensor

__all__ = ["autograd_logdet", "check_invertible", "nll_bits_per_dim", "num_dims"]


def num_dims(x: Tensor) -> int:
    """Number of dimensions of one sample of the batch ``x`` (C*H*W for images)."""
    return x[0].numel()


def nll_bits_per_dim(log_prob: Tensor, dims: int) -> Tensor:
    """Negative log-likelihood in bits per dimension from ``log_prob`` in nats (any shape)."""
    if not isinstance(dims, int) or dims < 1:
        raise ValueError(f"dims must be a positive int, got {dims!r}")
    return -log_prob / (dims * math.log(2.0))


def _flatten(out: Tensor | Sequence[Tensor]) -> Tensor:
    if isinstance(out, torch.Tensor):
        return out.reshape(-1)
    return torch.cat([o.reshape(-1) for o in out])


def autograd_logdet(fn: Callable[[Tensor], Tensor | Sequence[Tensor]], x: Tensor) -> Tensor:
    """``log |det J|`` of ``fn`` at every sample of ``x``, with the full Jacobian from autograd.

    ``fn`` maps a batch of one sample to a tensor (or a list of tensors, e.g. a multi-scale
    latent); each sample's Jacobian is computed on its own, so the batch must be tiny (D of a
    few dozen). Use float64 for comparisons at 1e-8.
    """
    return torch.stack([_sample_logdet(fn, x[i : i + 1]) for i in range(x.shape[0])])


def _sample_logdet(fn: Callable[[Tensor], Tensor | Sequence[Tensor]], xi: Tensor) -> Tensor:
    """``log |det J|`` of ``fn`` at the batch of one sample ``xi``."""
    jac = torch.autograd.functional.jacobian(lambda v: _flatten(fn(v.view_as(xi))), xi.reshape(-1))
    if jac.shape[0] != jac.shape[1]:
        raise ValueError(f"fn changes the dimension ({jac.shape[1]} -> {jac.shape[0]}); not a bijection")
    return torch.linalg.slogdet(jac)[1]


def check_invertible(
    layer: InvertibleModule, x: Tensor, cond: Tensor | None = None
) -> dict[str, float]:
    """Max errors of ``inverse(forward(x))`` against ``x`` and of the logdet against autograd's.

    Returns ``{"reconstruction": ..., "logdet": ...}``; both should be ~1e-12 in float64.
    """
    z, logdet = layer(x, cond)
    x_rec = layer.inverse(z, cond)
    values = []
    for i in range(x.shape[0]):
        ci = None if cond is None else cond[i : i + 1]
        values.append(autograd_logdet(lambda v, ci=ci: layer(v, ci)[0], x[i : i + 1])[0])
    reference = torch.stack(values)
    return {
        "reconstruction": float((x_rec - x).detach().abs().max()),
        "logdet": float((logdet - reference).detach().abs().max()),
    }
