"""AffGAN: amortised MAP with a GAN whose generator is the projected network (Sønderby et al. 2017).

With the projection, ``f(y)`` only chooses the null-space part of ``x``, and amortised MAP becomes
minimising the cross-entropy ``E_y[-log p_X(f(y))]`` of ``q``, the distribution of the outputs,
under the image prior ``p_X``. A GAN gets at it through the reverse KL divergence
``KL(q || p_X) = E_q[log q - log p_X]``: for a deterministic projected ``f`` the entropy of ``q``
is fixed by the distribution of ``y`` (up to a Jacobian term, see the chapter), so the reverse KL
and the cross-entropy share their minimiser.

**Generator loss.** For a discriminator trained with the logistic loss, the optimum is
``D*(x) = p(x) / (p(x) + q(x))``, so its logit is ``log p(x) - log q(x)``. Hence

    E_q[-log D(x) + log(1 - D(x))] = E_q[-logit D(x)]  ->  E_q[log q - log p] = KL(q || p),

the "reverse-KL" generator loss (written out in :func:`generator_loss`).

**Instance noise** (Sønderby et al. 2017; Huszár's inference.vc note): ``q`` is concentrated on a
set of lower dimension than ``p_X`` (one output per ``y``), the two do not overlap, and a
discriminator can separate them perfectly. Adding the same Gaussian noise ``N(0, sigma^2 I)`` to
real and generated inputs of ``D`` makes both distributions full-dimensional, so the divergence
is finite and its gradient informative; ``sigma`` is annealed towards 0 during training
(:func:`instance_noise_sigma`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from ..losses import discriminator_loss
from ..training import History, Trainer

__all__ = [
    "instance_noise_sigma",
    "add_instance_noise",
    "noisy_discriminator_loss",
    "affgan_step",
    "generator_loss",
    "ImageDiscriminator",
    "train_affgan",
]

Tensor = torch.Tensor


def instance_noise_sigma(step: int, steps: int, start: float, end: float, *, schedule: str = "geometric") -> float:
    """The noise level at ``step`` of ``steps``, going from ``start`` to ``end``.

    ``"geometric"`` interpolates ``log sigma`` linearly (equal time per octave of noise),
    ``"linear"`` interpolates ``sigma``. ``end`` is reached at the last step.

    Paper: Sønderby et al. 2017 (ICLR), AffGAN · Book: ch. 3, "AffGAN: a GAN ..." · Official code: none public
    """
    if not (start >= 0 and end >= 0 and math.isfinite(start) and math.isfinite(end)):
        raise ValueError(f"noise levels must be finite and >= 0, got start={start}, end={end}")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if schedule not in ("geometric", "linear"):
        raise ValueError(f"schedule must be 'geometric' or 'linear', got {schedule!r}")
    t = min(max(step / max(steps - 1, 1), 0.0), 1.0)
    if schedule == "linear" or start == 0 or end == 0:
        return start + t * (end - start)
    return math.exp(math.log(start) + t * (math.log(end) - math.log(start)))


def add_instance_noise(x: Tensor, sigma: float) -> Tensor:
    """``x + sigma * eps`` with ``eps ~ N(0, I)`` (drawn from torch's global generator)."""
    if not sigma >= 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    return x if sigma == 0 else x + sigma * torch.randn_like(x)


def _logits(discriminator: nn.Module, x: Tensor) -> Tensor:
    out = discriminator(x)
    return out.reshape(out.shape[0], -1).mean(dim=1)


def noisy_discriminator_loss(discriminator: nn.Module, real: Tensor, fake: Tensor, sigma: float
                             ) -> tuple[Tensor, dict]:
    """:func:`course_lib.losses.discriminator_loss` (logistic) of ``D`` on real and generated images,
    both with instance noise of standard deviation ``sigma``.

    ``fake`` is detached: this loss trains only the discriminator. Returns ``(loss, stats)`` with
    the fraction of correctly classified real and fake inputs.

    Paper: Sønderby et al. 2017 (ICLR), AffGAN · Book: ch. 3, "AffGAN: a GAN ..." · Official code: none public
    """
    if real.shape[1:] != fake.shape[1:]:
        raise ValueError(f"real {tuple(real.shape)} and fake {tuple(fake.shape)} images differ in shape")
    logit_real = _logits(discriminator, add_instance_noise(real, sigma))
    logit_fake = _logits(discriminator, add_instance_noise(fake.detach(), sigma))
    loss = discriminator_loss(logit_real, logit_fake, kind="nonsaturating")
    stats = {"d_acc_real": float((logit_real > 0).float().mean()),
             "d_acc_fake": float((logit_fake < 0).float().mean())}
    return loss, stats


def generator_loss(discriminator: nn.Module, fake: Tensor, sigma: float) -> Tensor:
    """``E[-log D(x) + log(1 - D(x))] = E[-logit D(x)]`` on noisy generated images ``x``.

    At the optimal discriminator this is ``KL(q_sigma || p_sigma)`` between the noisy output
    distribution and the noisy prior: the reverse KL, which is mode-seeking.

    Paper: Sønderby et al. 2017 (ICLR), AffGAN · Book: ch. 3, "AffGAN: a GAN ..." · Official code: none public
    """
    return -_logits(discriminator, add_instance_noise(fake, sigma)).mean()


class ImageDiscriminator(nn.Module):
    """A small convolutional discriminator on HR images: strided convolutions, LeakyReLU, and one
    logit per image (the mean of a patch map of logits)."""

    def __init__(self, channels: int = 3, features: int = 32, downsamplings: int = 2):
        super().__init__()
        if not isinstance(downsamplings, int) or downsamplings < 0:
            raise ValueError(f"downsamplings must be a non-negative int, got {downsamplings!r}")
        layers: list[nn.Module] = [nn.Conv2d(channels, features, 3, padding=1), nn.LeakyReLU(0.2)]
        width = features
        for _ in range(downsamplings):
            layers += [nn.Conv2d(width, 2 * width, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            width *= 2
        layers.append(nn.Conv2d(width, 1, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).mean(dim=(1, 2, 3))


def affgan_step(generator: nn.Module, discriminator: nn.Module, opt_g: torch.optim.Optimizer,
                opt_d: torch.optim.Optimizer, y: Tensor, real: Tensor, sigma: float, *, d_steps: int = 1
                ) -> dict[str, float]:
    """One AffGAN update: ``d_steps`` discriminator steps on noisy real and generated images, then one
    generator step on :func:`generator_loss`. The instance noise is drawn from torch's global generator.
    Returns the logged scalars (``loss_d``, ``loss_g``, ``sigma`` and the discriminator's accuracies).

    Paper: Sønderby et al. 2017 (ICLR), AffGAN · Book: ch. 3, "AffGAN: a GAN ..." · Official code: none public
    """
    for _ in range(d_steps):
        with torch.no_grad():
            fake = generator(y)
        loss_d, stats = noisy_discriminator_loss(discriminator, real, fake, sigma)
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
    loss_g = generator_loss(discriminator, generator(y), sigma)
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()
    return {"loss_d": loss_d.item(), "loss_g": loss_g.item(), "sigma": sigma, **stats}


def train_affgan(
    generator: nn.Module,
    discriminator: nn.Module,
    lr_batch_fn: Callable[[int], Tensor],
    hr_batch_fn: Callable[[int], Tensor],
    steps: int,
    *,
    sigma_start: float,
    sigma_end: float,
    schedule: str = "geometric",
    lr_g: float = 1e-3,
    lr_d: float = 1e-3,
    betas: tuple[float, float] = (0.5, 0.999),
    d_steps: int = 1,
    device: torch.device | str | None = None,
    checkpoint=None,
    eval_fn=None,
    eval_every: int = 0,
    seed: int = 0,
    progress: bool = True,
    desc: str = "AffGAN",
) -> History:
    """Alternate ``d_steps`` discriminator updates and one generator update per step.

    ``lr_batch_fn(step)`` gives LR inputs ``y`` (the generator's only input: no pairs needed),
    ``hr_batch_fn(step)`` real HR samples of the prior. The instance noise follows
    :func:`instance_noise_sigma` from ``sigma_start`` to ``sigma_end``. Logs ``loss_d``,
    ``loss_g``, ``sigma`` and the discriminator's accuracies. Returns the training history.

    Paper: Sønderby et al. 2017 (ICLR), AffGAN · Book: ch. 3, "AffGAN: a GAN ..." · Official code: none public
    """
    if not isinstance(d_steps, int) or d_steps < 1:
        raise ValueError(f"d_steps must be a positive int, got {d_steps!r}")
    device = torch.device(device) if device is not None else next(generator.parameters()).device
    generator.to(device)
    discriminator.to(device)
    opt_g = torch.optim.Adam([p for p in generator.parameters() if p.requires_grad], lr=lr_g, betas=betas)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=lr_d, betas=betas)

    def step_fn(step: int) -> dict[str, float]:
        sigma = instance_noise_sigma(step, steps, sigma_start, sigma_end, schedule=schedule)
        return affgan_step(generator, discriminator, opt_g, opt_d, lr_batch_fn(step).to(device),
                           hr_batch_fn(step).to(device), sigma, d_steps=d_steps)

    trainer = Trainer({"generator": generator, "discriminator": discriminator},
                      {"generator": opt_g, "discriminator": opt_d}, step_fn,
                      checkpoint=checkpoint, eval_fn=eval_fn, eval_every=eval_every,
                      tag=f"AffGAN:{type(generator).__name__}+{type(discriminator).__name__}",
                      desc=desc, progress=progress)
    if trainer.step == 0:
        torch.manual_seed(seed)
    return trainer.run(steps)
