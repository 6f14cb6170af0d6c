"""AffLL: amortised MAP with an explicit density model of the prior (Sønderby et al. 2017).

The most direct route to the cross-entropy ``E_y[-log p_X(f(y))]``: fit a density model
``p_model`` to HR samples by maximum likelihood, freeze it, and train the projected network to
maximise ``log p_model(f(y))``. The paper calls it a baseline (it used an autoregressive model);
here the density model is a normalizing flow from ``course_lib.flows`` (a RealNVP for the 2D
toy, a small Glow for images), whose exact ``log_prob`` is differentiable in its input.

The result can be no better than the density model: a flow that puts mass between the modes, or
likes smooth images, pulls the outputs there.

* :func:`density_nll`, :func:`train_density`: maximum likelihood for the flow (images get uniform
  dequantization noise of one 8-bit level, Theis et al. 2016).
* :func:`affll_loss`: ``-mean log p_model(f(y))`` for :func:`course_lib.training.fit`.
* :func:`bits_per_dim`: a density's cross-entropy on images in bits per dimension.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..flows import nll_bits_per_dim
from ..training import History, fit

__all__ = ["density_nll", "train_density", "affll_loss", "bits_per_dim", "freeze"]

Tensor = torch.Tensor


def _log_prob(density: nn.Module, x: Tensor) -> Tensor:
    if not hasattr(density, "log_prob"):
        raise TypeError(f"the density model must have a log_prob method, got {type(density).__name__}")
    return density.log_prob(x)


def density_nll(density: nn.Module, x: Tensor, *, dequantize: float = 0.0) -> Tensor:
    """Mean negative log-likelihood per dimension (nats); ``dequantize`` adds uniform noise of that width."""
    if dequantize:
        x = x + dequantize * (torch.rand_like(x) - 0.5)
    return -_log_prob(density, x).mean() / x[0].numel()


def train_density(density: nn.Module, hr_batch_fn: Callable[[int], Tensor], steps: int, *,
                  dequantize: float = 0.0, lr: float = 1e-3, grad_clip: float | None = 10.0, device=None,
                  seed: int = 0, progress: bool = True, checkpoint=None, desc: str = "density") -> History:
    """Maximum likelihood for ``density`` on ``hr_batch_fn(step)``; logs the NLL in nats per dimension.

    For 8-bit images pass ``dequantize=1/256``: the model then learns a continuous density of
    the images smeared over their quantisation bins.
    """
    return fit(density, lambda d, x: density_nll(d, x, dequantize=dequantize), hr_batch_fn, steps,
               lr=lr, grad_clip=grad_clip, device=device, seed=seed, progress=progress,
               checkpoint=checkpoint, desc=desc, tag=f"density:{type(density).__name__}")


def freeze(module: nn.Module) -> nn.Module:
    """Turn off the gradients of a trained model's weights and put it in eval mode (returns it)."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


def affll_loss(model: nn.Module, y: Tensor, density: nn.Module) -> tuple[Tensor, dict]:
    """``-mean_i log p_model(f(y_i))`` per dimension (nats): the cross-entropy under the model.

    Gradients reach the network through ``f(y)`` only; freeze the density with :func:`freeze`.

    Paper: Sønderby et al. 2017 (ICLR), AffLL · Book: ch. 3, "AffLL: a density model ..." · Official code: none public
    """
    out = model(y)
    log_p = _log_prob(density, out)
    loss = -log_p.mean() / out[0].numel()
    return loss, {"nll_per_dim": loss.item()}


def bits_per_dim(density: nn.Module, images: Tensor) -> Tensor:
    """Cross-entropy of images in [0, 1] under ``density``, in bits per dimension on the 8-bit scale:
    ``-log p(x) / (D ln 2) + 8`` (the ``+ 8`` converts a density on [0, 1] to one on [0, 256]).
    One value per image."""
    if images.ndim != 4:
        raise ValueError(f"images must be a batch (N, C, H, W), got shape {tuple(images.shape)}")
    with torch.no_grad():
        log_p = _log_prob(density, images)
    return nll_bits_per_dim(log_p, images[0].numel()) + 8.0
