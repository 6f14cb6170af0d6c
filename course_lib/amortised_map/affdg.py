"""AffDG: denoiser-guided amortised MAP (Sønderby et al. 2017).

The gradient of the cross-entropy ``E_y[-log p_X(f(y))]`` with respect to the weights of the
projected network needs the score ``grad_x log p_X`` at the outputs. A denoiser gives it without
a density model (Alain & Bengio 2014; Tweedie's formula): if ``D_sigma`` is the minimum-MSE
denoiser of ``x + sigma * eps``, then

    (D_sigma(x) - x) / sigma^2 = grad_x log p_sigma(x),     p_sigma = p_X * N(0, sigma^2 I),

the score of the prior blurred by the noise. AffDG plugs this estimate into the chain rule:
``grad_theta = -E[(df/dtheta)^T score(f(y))]``, which autograd computes from the surrogate loss
``-<stop_gradient(score), f(y)>``. Because ``f`` is projected, ``df/dtheta = (I - A^+ A) dg/dtheta``
and only the null-space part of the score moves the outputs. ``sigma`` is annealed from large
(a smooth, almost unimodal ``p_sigma`` that steers towards the bigger mode) to small.

* :class:`MLPDenoiser` (vectors) and :class:`ConvDenoiser` (images): noise-conditional
  denoisers ``D(x_noisy, sigma)`` that predict the noise, ``D = x - sigma * eps_hat``.
* :func:`denoiser_loss`, :func:`train_denoiser`: denoising score matching on prior samples.
* :func:`score_estimate`, :func:`affdg_loss`, :func:`gaussian_mmse_denoiser` (the exact optimal
  denoiser of a Gaussian prior, for checks).
* :func:`map_by_score_ascent`: the MAP of one input by optimisation, not amortised: projected
  gradient ascent along the same score, ``sigma`` annealed (what AffDG's network learns to output).
* :func:`denoiser_residual`: the prior's own score of an image, ``||D_sigma(x) - x||^2 / sigma^2``
  per pixel (small where the learned prior puts its mass).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from ..training import History, fit
from .affgan import instance_noise_sigma
from .baselines import mlp

__all__ = [
    "MLPDenoiser",
    "ConvDenoiser",
    "sample_sigmas",
    "denoiser_loss",
    "train_denoiser",
    "score_estimate",
    "affdg_loss",
    "gaussian_mmse_denoiser",
    "map_by_score_ascent",
    "denoiser_residual",
]

Tensor = torch.Tensor


def _sigma_column(sigma, x: Tensor) -> Tensor:
    """``sigma`` (float or (N,) tensor) as a tensor broadcastable against ``x``."""
    s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    if s.ndim == 0:
        s = s.expand(x.shape[0])
    if s.shape != (x.shape[0],):
        raise ValueError(f"sigma must be a number or one value per sample ({x.shape[0]}), got shape {tuple(s.shape)}")
    if not (s > 0).all():
        raise ValueError("sigma must be positive")
    return s.reshape(-1, *([1] * (x.ndim - 1)))


class MLPDenoiser(nn.Module):
    """``D(x, sigma) = x - sigma * eps_hat(x, log sigma)`` for vectors ``x`` of shape (N, dim)."""

    def __init__(self, dim: int = 2, hidden: int = 128, layers: int = 3):
        super().__init__()
        self.dim = dim
        self.net = mlp(dim + 1, dim, hidden, layers)

    def forward(self, x: Tensor, sigma) -> Tensor:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"MLPDenoiser expects (N, {self.dim}) inputs, got {tuple(x.shape)}")
        s = _sigma_column(sigma, x)
        return x - s * self.net(torch.cat([x, s.log()], dim=1))


class ConvDenoiser(nn.Module):
    """``D(x, sigma) = x - sigma * eps_hat``; ``eps_hat`` from 3x3 convolutions of ``x`` and a
    constant ``log sigma`` channel (a small noise-conditional DnCNN-style network)."""

    def __init__(self, channels: int = 3, features: int = 32, layers: int = 5):
        super().__init__()
        if not isinstance(layers, int) or layers < 2:
            raise ValueError(f"layers must be an int >= 2, got {layers!r}")
        self.channels = channels
        mods: list[nn.Module] = [nn.Conv2d(channels + 1, features, 3, padding=1), nn.ReLU()]
        for _ in range(layers - 2):
            mods += [nn.Conv2d(features, features, 3, padding=1), nn.ReLU()]
        mods.append(nn.Conv2d(features, channels, 3, padding=1))
        self.net = nn.Sequential(*mods)

    def forward(self, x: Tensor, sigma) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(f"ConvDenoiser expects (N, {self.channels}, H, W) inputs, got {tuple(x.shape)}")
        s = _sigma_column(sigma, x)
        level = s.log().expand(-1, 1, *x.shape[2:])
        return x - s * self.net(torch.cat([x, level], dim=1))


def sample_sigmas(n: int, sigma_min: float, sigma_max: float, *, generator: torch.Generator | None = None,
                  device=None) -> Tensor:
    """``n`` noise levels log-uniform in ``[sigma_min, sigma_max]``."""
    if not 0 < sigma_min <= sigma_max:
        raise ValueError(f"need 0 < sigma_min <= sigma_max, got {sigma_min}, {sigma_max}")
    u = torch.rand(n, generator=generator)
    return torch.exp(math.log(sigma_min) + u * (math.log(sigma_max) - math.log(sigma_min))).to(device)


def denoiser_loss(denoiser: nn.Module, x: Tensor, sigma_min: float, sigma_max: float) -> Tensor:
    """Denoising score matching: ``E || D(x + sigma eps, sigma) - x ||^2 / sigma^2`` with
    ``sigma`` log-uniform; dividing by ``sigma^2`` weighs every noise level alike (it is the MSE
    of the predicted noise).

    Paper: Sønderby et al. 2017 (ICLR), AffDG · Book: ch. 3, "AffDG: denoiser-guided" · Official code: none public
    """
    sigma = sample_sigmas(x.shape[0], sigma_min, sigma_max, device=x.device).to(x.dtype)
    s = sigma.reshape(-1, *([1] * (x.ndim - 1)))
    noisy = x + s * torch.randn_like(x)
    return ((denoiser(noisy, sigma) - x) / s).pow(2).mean()


def train_denoiser(denoiser: nn.Module, hr_batch_fn: Callable[[int], Tensor], steps: int, *,
                   sigma_min: float, sigma_max: float, lr: float = 1e-3, device=None, seed: int = 0,
                   progress: bool = True, checkpoint=None, desc: str = "denoiser") -> History:
    """Train ``denoiser`` on prior samples ``hr_batch_fn(step)`` for all levels in ``[sigma_min, sigma_max]``."""
    return fit(denoiser, lambda d, x: denoiser_loss(d, x, sigma_min, sigma_max), hr_batch_fn, steps,
               lr=lr, device=device, seed=seed, progress=progress, checkpoint=checkpoint, desc=desc,
               tag=f"denoiser:{type(denoiser).__name__}")


def score_estimate(denoiser: Callable[[Tensor, Tensor], Tensor], x: Tensor, sigma) -> Tensor:
    """``(D_sigma(x) - x) / sigma^2``: the denoiser's estimate of ``grad_x log p_sigma(x)``.

    Paper: Sønderby et al. 2017 (ICLR), AffDG · Book: ch. 3, "AffDG: denoiser-guided" · Official code: none public
    """
    s = _sigma_column(sigma, x)
    return (denoiser(x, sigma) - x) / s**2


def affdg_loss(model: nn.Module, y: Tensor, denoiser: nn.Module, sigma: float) -> tuple[Tensor, dict]:
    """Surrogate whose gradient is AffDG's: ``-mean_i <score(f(y_i)), f(y_i)>`` with the score
    held constant, so ``d loss / d theta = -mean_i (df/dtheta)^T score``.

    Its value is meaningless; the logged ``score_null`` is the mean norm of the score's
    null-space part (what the projected network can still improve; zero at a MAP).

    Paper: Sønderby et al. 2017 (ICLR), AffDG · Book: ch. 3, "AffDG: denoiser-guided" · Official code: none public
    """
    out = model(y)
    with torch.no_grad():
        score = score_estimate(denoiser, out, sigma)
    loss = -(score * out).reshape(out.shape[0], -1).sum(dim=1).mean()
    stats = {"sigma": float(sigma)}
    operator = getattr(getattr(model, "projection", None), "operator", None)
    if operator is not None and hasattr(operator, "nullspace_project"):
        null = operator.nullspace_project(score)
        stats["score_null"] = float(null.reshape(null.shape[0], -1).norm(dim=1).mean())
    return loss, stats


def gaussian_mmse_denoiser(mean: Tensor, cov: Tensor) -> Callable[[Tensor, Tensor], Tensor]:
    """The minimum-MSE denoiser of ``x ~ N(mean, cov)`` seen through ``N(0, sigma^2 I)`` noise:
    ``D(x~) = mean + cov (cov + sigma^2 I)^{-1} (x~ - mean)`` (the Wiener filter)."""
    mean = torch.as_tensor(mean)
    cov = torch.as_tensor(cov)
    if mean.ndim != 1 or cov.shape != (mean.shape[0], mean.shape[0]):
        raise ValueError(f"need mean (d,) and cov (d, d), got {tuple(mean.shape)} and {tuple(cov.shape)}")

    def denoise(x: Tensor, sigma) -> Tensor:
        s = _sigma_column(sigma, x).reshape(-1)
        eye = torch.eye(mean.shape[0], dtype=x.dtype, device=x.device)
        c = cov.to(x)
        gain = c @ torch.linalg.inv(c + s[:, None, None] ** 2 * eye)  # (N, d, d)
        return mean.to(x) + torch.einsum("nij,nj->ni", gain, x - mean.to(x))

    return denoise


def map_by_score_ascent(denoiser: Callable[[Tensor, Tensor], Tensor], operator, x0: Tensor, *, steps: int = 150,
                        sigma_start: float = 0.3, sigma_end: float = 0.02, step_size: float = 0.5) -> Tensor:
    """MAP estimates by optimisation, one per input: ``x <- x + step_size * sigma^2 * (I - A^+ A) score``.

    The ascent starts from consistent images ``x0`` (``A x0 = y``, e.g. Aff-MSE outputs) and moves
    only in the null space of ``operator``, so every iterate stays consistent. ``sigma`` falls
    geometrically from ``sigma_start`` to ``sigma_end``; ``step_size = 1`` would be a full Tweedie
    step ``x <- D_sigma(x)`` before the projection. This is the per-image counterpart of AffDG: the
    same objective, solved for each input instead of learned by a network.
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if not 0 < sigma_end <= sigma_start:
        raise ValueError(f"need 0 < sigma_end <= sigma_start, got {sigma_start}, {sigma_end}")
    x = x0.detach().clone()
    with torch.no_grad():
        for k in range(steps):
            sigma = instance_noise_sigma(k, steps, sigma_start, sigma_end)  # the same geometric annealing
            x = x + step_size * sigma**2 * operator.nullspace_project(score_estimate(denoiser, x, sigma))
    return x


def denoiser_residual(denoiser: Callable[[Tensor, Tensor], Tensor], x: Tensor, sigma: float = 0.05) -> Tensor:
    """``mean ((D_sigma(x) - x) / sigma)^2`` per sample, ``= sigma^2 * mean |score|^2``: how far the
    learned prior wants to move ``x``. Near zero for images where the prior puts its mass (the
    denoiser leaves them alone), large for images it finds improbable, e.g. blurred edges."""
    with torch.no_grad():
        r = (denoiser(x, sigma) - x) / sigma
    return r.pow(2).reshape(x.shape[0], -1).mean(dim=1)
