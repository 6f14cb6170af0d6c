"""HCFlow's training objectives (Liang et al. 2021, sec. 3.3-3.4; official ``HCFlow_*_model.py``).

**Super-resolution: negative log-likelihood.** With ``F(x) = (LR_x, eps)`` the bijection and the
LR modelled as a near-Dirac Gaussian around the reference (bicubic) LR image ``y``::

    log p(x | y) = log N(y; LR_x, sigma^2 I) + log N(eps; 0, I) + log |det dF/dx|,   log sigma = -6

(``sigma = e^-6 ~ 0.0025``, about 0.6 grey levels, official ``normal_flow_diracLR``). Training
images are dequantised first, ``x + u / quant`` with ``u ~ U(0, 1)`` (logdet ``-D log quant``,
quant = 64 for x4), and the flow's LR is 8-bit quantised with a straight-through gradient before
it is scored. The NLL is reported in bits per dimension of the HR image (``D = 3 H W``).

* HCFlow: NLL only. HCFlow+: ``2e-3 NLL + 1 * L1(x, x_hat_0)`` with ``x_hat_0`` decoded at
  temperature 0. HCFlow++: also ``5e-2`` perceptual (VGG features, L1) and ``0.5`` GAN on a sample
  at temperature 0.9. The authors' note (issue #3 of the official repository): training ++ from
  scratch gives NaN; fine-tune from a likelihood-trained model.

**Image rescaling: three losses.** ``0.05 * mean (clamp(LR_x) - y)^2  +  1e-5 * mean eps^2  +
1 * mean |x - F^{-1}(Q(LR_x), eps' ~ N(0, I))|`` (official ``train_Rescaling_DF2K_4X_HCFlow.yml``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from course_lib import training
from course_lib.degradation import bicubic_downscale
from course_lib.flows import gaussian_log_prob
from course_lib.rescaling import CHANNELS, as_rgb_batch, check_divisible, quantize, upcast

from .model import QUANT, HCFlow

__all__ = [
    "LR_LOG_SIGMA", "QUANT", "VARIANTS", "RescalingLossWeights", "SRLossWeights", "dequantize",
    "dequantized_nll_bits_per_dim", "dirac_lr_log_prob", "log_likelihood", "nll_parts_bits_per_dim", "reference_lr",
    "rescaling_loss", "sr_loss",
]

Tensor = torch.Tensor

LR_LOG_SIGMA = -6.0
VARIANTS = ("hcflow", "plus", "plusplus")


def reference_lr(hr: Tensor, scale: int) -> Tensor:
    """The LR image the LR part of the flow is matched to: MATLAB-bicubic, 8-bit quantised (always
    in float32, also under mixed precision)."""
    with training.full_precision():
        return bicubic_downscale(upcast(hr), scale, quantize=True)


def dirac_lr_log_prob(lr: Tensor, lr_ref: Tensor, log_sigma: float = LR_LOG_SIGMA) -> Tensor:
    """``log N(lr_ref; mean = lr, sigma^2 I)`` per image (nats, shape (N,)), ``log sigma = -6``.

    A narrow Gaussian stands in for a Dirac delta at the reference LR: it is finite, so the flow's
    LR output gets a gradient pulling it to ``lr_ref``, and ``-D_lr (log sigma + log(2 pi)/2)`` is
    the best the term can give (when ``lr == lr_ref``).
    """
    if lr.shape != lr_ref.shape:
        raise ValueError(f"lr {tuple(lr.shape)} and lr_ref {tuple(lr_ref.shape)} must have the same shape")
    return gaussian_log_prob(lr_ref.to(lr.dtype), lr, log_sigma)


def dequantize(hr: Tensor, quant: int, generator: torch.Generator | None = None, *,
               u: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``(hr + u / quant, -D log quant)`` with ``u ~ U(0, 1)``: uniform dequantisation (Glow/HCFlow);
    ``u`` is drawn with ``generator`` unless given (e.g. :func:`course_lib.training.batch_noise`)."""
    if isinstance(quant, bool) or not isinstance(quant, int) or quant < 1:
        raise ValueError(f"quant must be a positive int, got {quant!r}")
    if u is None:
        where = generator.device if generator is not None else hr.device
        u = torch.rand(hr.shape, generator=generator, dtype=hr.dtype, device=where).to(hr.device)
    elif u.shape != hr.shape:
        raise ValueError(f"u {tuple(u.shape)} must have the shape of hr {tuple(hr.shape)}")
    u = u.to(hr)
    logdet = hr.new_full((hr.shape[0],), -hr[0].numel() * math.log(quant))
    return hr + u / quant, logdet


def log_likelihood(model: HCFlow, hr: Tensor, lr: Tensor | None = None, *, quant: int | None = None,
                   quantize_lr: bool = True, generator: torch.Generator | None = None,
                   log_sigma: float = LR_LOG_SIGMA, u: Tensor | None = None) -> Tensor:
    """``log p(hr | lr)`` per image in nats, shape (N,) (module docstring; dequantised, so a bound
    on the discrete likelihood). ``lr`` defaults to :func:`reference_lr`. ``quant=1`` with
    ``generator`` fixed (or the dequantisation noise ``u`` given), or pass already continuous data
    with ``quant=None`` and the model's mode.
    Under mixed precision the flow runs in float16 where autocast allows it; the sum of the terms
    (the LR term weighs errors by ``e^12``) is taken in float32."""
    x, _ = as_rgb_batch(hr, "hr", "log_likelihood")
    check_divisible(x, model.scale, "log_likelihood")
    lr_ref = reference_lr(x, model.scale) if lr is None else as_rgb_batch(lr, "lr", "log_likelihood")[0]
    if lr_ref.shape[-2:] != (x.shape[-2] // model.scale, x.shape[-1] // model.scale):
        raise ValueError(f"lr {tuple(lr_ref.shape)} must be 1/{model.scale} the size of hr {tuple(x.shape)}")
    y, ld_deq = dequantize(x, quant if quant is not None else QUANT[model.mode], generator, u=u)
    out, logdet = model(y)
    lr_out, z = out[:, :CHANNELS], out[:, CHANNELS:]
    with training.full_precision():
        lr_out, z = upcast(lr_out), upcast(z)
        if quantize_lr:
            lr_out = quantize(lr_out)
        return gaussian_log_prob(z) + dirac_lr_log_prob(lr_out, upcast(lr_ref), log_sigma) + upcast(logdet) + ld_deq


def dequantized_nll_bits_per_dim(model: HCFlow, hr: Tensor, lr: Tensor | None = None, **kwargs) -> Tensor:
    """``-log p(hr | lr) / (3 H W ln 2)`` per image: the NLL in bits per HR dimension of the
    *dequantised* HR image (``hr + u / quant``, quant = 64 for SR, the LR scored by the near-Dirac
    Gaussian; :func:`log_likelihood`, whose keywords ``quant``, ``quantize_lr``, ``generator``,
    ``log_sigma`` and ``u`` it takes). Not :func:`course_lib.flows.nll_bits_per_dim`, which converts a given
    log-density.

    Paper: Liang et al. 2021 (ICCV), sec. 3 (the likelihood with the LR as a near-Dirac Gaussian; equation number
    not verified) · Book: chapter 6, section "The likelihood, term by term" · Official code: JingyunLiang/HCFlow,
    codes/models/modules/HCFlowNet_SR_arch.py:HCFlowNet_SR.normal_flow_diracLR
    """
    x, _ = as_rgb_batch(hr, "hr", "dequantized_nll_bits_per_dim")
    return -log_likelihood(model, x, lr, **kwargs) / (x[0].numel() * math.log(2.0))


def nll_parts_bits_per_dim(model: HCFlow, hr: Tensor, lr: Tensor | None = None, *, quant: int | None = None,
                           generator: torch.Generator | None = None, quantize_lr: bool = True,
                           log_sigma: float = LR_LOG_SIGMA) -> dict[str, Tensor]:
    """:func:`dequantized_nll_bits_per_dim` split into its pieces, each ``(N,)`` in bits per HR dimension.

    ``"lr"``: the near-Dirac LR term, ``-log N(y*; F_y(x), sigma^2 I)``; ``"level l"``: the bits of
    band ``a_l`` given the coarser levels and the LR image
    (:meth:`course_lib.hcflow.model.HCFlow.level_terms`);
    ``"main flow"``: minus the log-determinant of the unconditional steps; ``"dequantization"``:
    ``log2 quant``. ``"hr given lr"`` is the sum of all but ``"lr"``: the bits the model spends on
    the HR image once its LR image is known, the part a better conditioning (the hierarchy) can
    lower. The pieces add up to ``dequantized_nll_bits_per_dim`` with the same ``generator``.
    """
    x, _ = as_rgb_batch(hr, "hr", "nll_parts_bits_per_dim")
    check_divisible(x, model.scale, "nll_parts_bits_per_dim")
    lr_ref = reference_lr(x, model.scale) if lr is None else as_rgb_batch(lr, "lr", "nll_parts_bits_per_dim")[0]
    y, ld_deq = dequantize(x, quant if quant is not None else QUANT[model.mode], generator)
    terms = model.level_terms(y)
    lr_out = upcast(terms.pop("lr"))
    if quantize_lr:
        lr_out = quantize(lr_out)
    to_bits = -1.0 / (x[0].numel() * math.log(2.0))
    parts = {name: to_bits * upcast(value) for name, value in terms.items()}
    parts["dequantization"] = to_bits * ld_deq
    parts["hr given lr"] = sum(parts.values())
    parts["lr"] = to_bits * dirac_lr_log_prob(lr_out, upcast(lr_ref), log_sigma)
    return parts


# ------------------------------------------------------------------------------------------------
# super-resolution
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SRLossWeights:
    """Weights of NLL (bits/dim), L1 at temperature 0, perceptual and GAN at ``temperature``."""

    nll: float = 1.0
    l1: float = 0.0
    perceptual: float = 0.0
    gan: float = 0.0
    temperature: float = 0.9

    @classmethod
    def paper(cls, variant: str = "hcflow") -> SRLossWeights:
        """Official ``train_SR_DF2K_4X_HCFlow{,+,++}.yml``."""
        if variant == "hcflow":
            return cls()
        if variant == "plus":
            return cls(nll=2e-3, l1=1.0)
        if variant == "plusplus":
            return cls(nll=2e-3, l1=1.0, perceptual=5e-2, gan=0.5)
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")


def sr_loss(model: HCFlow, hr: Tensor, weights: SRLossWeights | None = None, *, lr: Tensor | None = None,
            perceptual: nn.Module | None = None, discriminator: nn.Module | None = None,
            generator: torch.Generator | None = None, u: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
    """The SR objective on an HR batch: ``(total, logs)`` (module docstring). ``u``: the
    dequantisation noise (default: drawn with ``generator``).

    ``perceptual(sr, hr) -> loss`` (e.g. :class:`course_lib.losses.PerceptualLoss`) and
    ``discriminator(images) -> logits`` are needed only when their weights are non-zero; the
    discriminator is trained separately (:func:`course_lib.losses.discriminator_loss`). The
    official code takes one optimiser step per term; here the terms are summed into one step.
    """
    from course_lib import losses

    w = weights if weights is not None else SRLossWeights()
    x, _ = as_rgb_batch(hr, "hr", "sr_loss")
    check_divisible(x, model.scale, "sr_loss")
    lr_ref = reference_lr(x, model.scale) if lr is None else as_rgb_batch(lr, "lr", "sr_loss")[0]
    bpd = dequantized_nll_bits_per_dim(model, x, lr_ref, generator=generator, u=u).mean()
    total = w.nll * bpd
    logs = {"nll_bpd": bpd.item()}
    if w.l1:
        n, _, lr_h, lr_w = lr_ref.shape
        sr0 = model.decode(lr_ref, lr_ref.new_zeros(n, model.z_channels, lr_h, lr_w))  # temperature 0
        l1 = (sr0 - x).abs().mean()
        total = total + w.l1 * l1
        logs["l1"] = l1.item()
    if w.perceptual or w.gan:
        sr_t = model.decode(lr_ref, model.sample_z(lr_ref, w.temperature, generator))
        if w.perceptual:
            if perceptual is None:
                raise ValueError("the perceptual weight is non-zero: pass perceptual=<loss module>")
            l_per = perceptual(sr_t, x)
            total = total + w.perceptual * l_per
            logs["perceptual"] = l_per.item()
        if w.gan:
            if discriminator is None:
                raise ValueError("the GAN weight is non-zero: pass discriminator=<module>")
            l_gan = losses.generator_adversarial_loss(discriminator(sr_t))
            total = total + w.gan * l_gan
            logs["gan"] = l_gan.item()
    return total, logs


# ------------------------------------------------------------------------------------------------
# rescaling
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RescalingLossWeights:
    """``lr`` (L2 to the bicubic LR), ``z`` (mean eps^2), ``hr`` (L1 reconstruction) and the
    temperature of the eps drawn for the reconstruction (official: 0.05, 1e-5, 1, 1.0)."""

    lr: float = 0.05
    z: float = 1e-5
    hr: float = 1.0
    temperature: float = 1.0


def rescaling_loss(model: HCFlow, hr: Tensor, weights: RescalingLossWeights | None = None, *,
                   generator: torch.Generator | None = None,
                   z_fresh: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
    """HCFlow's rescaling objective on an HR batch: ``(total, {'lr', 'z', 'hr'})``.

    Forward: ``hr -> (LR, eps)``; ``lr`` = MSE between the clamped LR and the 8-bit bicubic LR
    (the official data loader reads it from PNG files); ``z`` = ``mean eps^2``; then the LR is 8-bit
    quantised (straight-through) and decoded with a *fresh* ``eps' ~ N(0, T^2 I)`` (``T`` times
    ``z_fresh`` when given, else drawn with ``generator``); ``hr`` = mean absolute error to the input.
    """
    w = weights if weights is not None else RescalingLossWeights()
    x, _ = as_rgb_batch(hr, "hr", "rescaling_loss")
    check_divisible(x, model.scale, "rescaling_loss")
    lr, z = model.encode(x)
    with training.full_precision():  # the losses in float32 under mixed precision
        lr_c = upcast(lr).clamp(0.0, 1.0)
        l_lr = ((lr_c - reference_lr(x, model.scale)) ** 2).mean()
        l_z = (upcast(z) ** 2).mean()
        lr_q = quantize(lr_c)
    z_new = model.sample_z(lr_q, w.temperature, generator) if z_fresh is None else w.temperature * z_fresh.to(lr_q)
    x_rec = model.decode(lr_q, z_new)
    with training.full_precision():
        l_hr = (upcast(x_rec) - x).abs().mean()
    total = w.lr * l_lr + w.z * l_z + w.hr * l_hr
    return total, {"lr": l_lr.item(), "z": l_z.item(), "hr": l_hr.item()}
