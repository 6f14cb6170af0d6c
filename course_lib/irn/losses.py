"""IRN's training objective (Xiao et al., ECCV 2020; official ``IRN_model.py``)::

    L = lambda_fit * L_guide + lambda_rec * L_recon + lambda_ce * L_distr'

* :func:`guide_loss`: ``sum (y - y_bicubic)^2`` per image (MATLAB-bicubic LR target), ``lambda_fit = s^2``;
* :func:`reconstruction_loss`: Charbonnier ``sum sqrt((x - f^{-1}(Q(y), z'))^2 + 1e-6)`` per image,
  with ``Q`` the 8-bit quantiser (straight-through gradient) and a *fresh* ``z' ~ N(0, I)``;
* :func:`distribution_loss`: ``sum z^2`` per image, the paper's cross-entropy surrogate
  ``-log N(z; 0, I)`` (up to constants); with no entropy term it pulls ``z`` towards 0, not to unit
  variance (chapter 5 measures this); all averaged over the batch, ``lambda_rec = lambda_ce = 1``.

IRN+ fine-tunes the x4 model with a GAN and a VGG feature loss instead of the surrogate (full
distribution matching on ``x``) for perceptual quality; :func:`irn_plus_loss` is the generator's
side of that objective (:func:`course_lib.irn.train.train_plus` the fine-tuning loop).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from course_lib import training
from course_lib.degradation import imresize
from course_lib.rescaling import as_rgb_batch, check_divisible, quantize, upcast

from .model import IRN, check_scale

__all__ = [
    "LossWeights", "bicubic_target", "distribution_loss", "guide_loss", "irn_loss", "irn_plus_loss",
    "reconstruction_loss",
]

Tensor = torch.Tensor


@dataclass(frozen=True)
class LossWeights:
    """lambda_fit (LR guidance), lambda_rec (HR reconstruction), lambda_ce (z distribution).

    Official ``train_IRN_x*.yml``: ``lambda_fit_forw = scale^2`` (4, 16, 64 for x2, x4, x8),
    ``lambda_rec_back = 1``, ``lambda_ce_forw = 1``.
    """

    fit: float
    rec: float = 1.0
    ce: float = 1.0

    @classmethod
    def paper(cls, scale: int) -> LossWeights:
        scale = check_scale(scale)
        return cls(fit=float(scale**2), rec=1.0, ce=1.0)


def bicubic_target(hr: Tensor, scale: int) -> Tensor:
    """The LR guidance target: MATLAB-bicubic ``imresize(hr, 1/scale)`` (not quantised), as the
    official data loader's ``imresize_np(GT, 1/scale)``.

    Paper: Xiao et al. 2020, sec. 3 (ECCV version; the LR guidance target, equation number not verified) · Book:
    chapter 5, section "The three losses" · Official code: pkuxmq/Invertible-Image-Rescaling,
    codes/data/LQGT_dataset.py:LQGTDataset
    """
    return imresize(hr, 1.0 / scale)


def guide_loss(lr: Tensor, lr_target: Tensor) -> Tensor:
    """L_guide = sum over C,H,W of (y - y_bicubic)^2, averaged over the batch.

    Paper: Xiao et al. 2020, sec. 3 (ECCV version; the LR guidance loss, equation number not verified) · Book:
    chapter 5, section "The three losses" · Official code: pkuxmq/Invertible-Image-Rescaling,
    codes/models/IRN_model.py:IRNModel.loss_forward
    """
    return ((lr - lr_target) ** 2).flatten(1).sum(1).mean()


def reconstruction_loss(hr: Tensor, hr_rec: Tensor, eps: float = 1e-6) -> Tensor:
    """L_recon = sum over C,H,W of sqrt((x - x_rec)^2 + eps) (Charbonnier L1), batch mean.

    Paper: Xiao et al. 2020, sec. 3 (ECCV version; the HR reconstruction loss, equation number not verified) · Book:
    chapter 5, section "The three losses" · Official code: pkuxmq/Invertible-Image-Rescaling,
    codes/models/IRN_model.py:IRNModel.loss_backward
    """
    return torch.sqrt((hr - hr_rec) ** 2 + eps).flatten(1).sum(1).mean()


def distribution_loss(z: Tensor) -> Tensor:
    """L_distr' = sum of z^2 per image, batch mean: the cross-entropy surrogate of the
    distribution matching loss.

    Up to a constant it is ``-2 log N(z; 0, I)``. A cross-entropy without the entropy term, it is
    minimised by ``z = 0``: it pulls the forward latent towards 0, not towards the N(0, I) we sample
    from when upscaling (chapter 5, "What z is in a trained IRN", measures the result).

    Paper: Xiao et al. 2020, sec. 3 (ECCV version; the distribution matching loss and its surrogate, equation number
    not verified) · Book: chapter 5, section "The three losses" · Official code: pkuxmq/Invertible-Image-Rescaling,
    codes/models/IRN_model.py:IRNModel.loss_forward
    """
    return (z**2).flatten(1).sum(1).mean()


def irn_loss(model: IRN, hr: Tensor, weights: LossWeights | None = None, *,
             generator: torch.Generator | None = None,
             z_fresh: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
    """The IRN objective on an HR batch: ``(total, {'guide', 'recon', 'distr'})``.

    Forward pass HR -> (y, z); ``guide`` compares y with the bicubic LR; ``distr`` is the z^2
    surrogate; ``recon`` inverts the *quantised* y with a *freshly sampled* z (official code): drawn
    with ``generator``, or ``z_fresh`` when given (N(0, I) numbers of the latent's shape, e.g.
    :func:`course_lib.training.batch_noise`). ``weights`` defaults to :meth:`LossWeights.paper`.

    Paper: Xiao et al. 2020, sec. 3 (ECCV version; the total objective, equation number not verified) · Book:
    chapter 5, section "The three losses" · Official code: pkuxmq/Invertible-Image-Rescaling,
    codes/models/IRN_model.py:IRNModel.optimize_parameters
    """
    x, _ = as_rgb_batch(hr, "hr", "irn_loss")
    check_divisible(x, model.scale, "irn_loss")
    w = weights if weights is not None else LossWeights.paper(model.scale)
    lr, z = model.encode(x)
    with training.full_precision():  # the sums of squares in float32 under mixed precision (float16 overflows at 65504)
        lr = upcast(lr)
        l_guide = guide_loss(lr, bicubic_target(x, model.scale).detach())
        l_distr = distribution_loss(upcast(z))
        lr_q = quantize(lr)
    z_new = model.sample_z(lr_q, 1.0, generator) if z_fresh is None else z_fresh.to(lr_q)
    x_rec = model.decode(lr_q, z_new)
    with training.full_precision():
        l_recon = reconstruction_loss(x, upcast(x_rec))
        total = w.fit * l_guide + w.rec * l_recon + w.ce * l_distr
    return total, {"guide": l_guide.item(), "recon": l_recon.item(), "distr": l_distr.item()}


def irn_plus_loss(model: IRN, hr: Tensor, discriminator: nn.Module, *, perceptual: nn.Module | None = None,
                  lambda_fit: float | None = None, lambda_rec: float = 0.01, lambda_gan: float = 1.0,
                  lambda_feature: float = 0.01,
                  generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float], Tensor]:
    """Generator side of IRN+ (official ``train_IRN+_x4.yml``).

    IRN+ replaces the z^2 surrogate by distribution matching on the *reconstructed* images: a
    discriminator tells real HR from ``f^{-1}(Q(y), z)``. Weights: lambda_fit = s^2, lambda_rec =
    0.01, GAN 1 and, when ``perceptual(sr, hr)`` is given, a feature loss of weight 0.01 (the
    official one is an L1 on VGG features; :class:`course_lib.losses.PerceptualLoss` is a squared
    error). Uses the non-saturating GAN loss. Returns ``(loss, logs, x_rec)``; the discriminator is
    trained on ``x_rec.detach()`` versus ``hr`` (:func:`course_lib.irn.train.train_plus` does both).

    Paper: Xiao et al. 2020, sec. 4 (ECCV version; IRN+, equation number not verified) · Book: chapter 5, section
    "IRN+: matching the distribution of images, not only of z" · Official code: pkuxmq/Invertible-Image-Rescaling,
    codes/models/IRNp_model.py:IRNpModel.optimize_parameters
    """
    x, _ = as_rgb_batch(hr, "hr", "irn_plus_loss")
    check_divisible(x, model.scale, "irn_plus_loss")
    lambda_fit = float(model.scale**2) if lambda_fit is None else lambda_fit
    lr, _ = model.encode(x)
    l_guide = guide_loss(lr, bicubic_target(x, model.scale).detach())
    lr_q = quantize(lr)
    x_rec = model.decode(lr_q, model.sample_z(lr_q, 1.0, generator))
    l_recon = reconstruction_loss(x, x_rec)
    logits = discriminator(x_rec)
    l_gan = nn.functional.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
    total = lambda_fit * l_guide + lambda_rec * l_recon + lambda_gan * l_gan
    logs = {"guide": l_guide.item(), "recon": l_recon.item(), "gan": l_gan.item()}
    if perceptual is not None:
        l_feature = perceptual(x_rec, x)
        total = total + lambda_feature * l_feature
        logs["feature"] = l_feature.item()
    return total, logs, x_rec
