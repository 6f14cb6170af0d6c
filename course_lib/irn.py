"""Invertible Image Rescaling (IRN; Xiao et al., ECCV 2020), composed from :mod:`course_lib.flows`.

Image *rescaling* differs from super-resolution: we design the downscaler too. IRN learns one
bijection ``f`` that maps an HR image ``x`` to a (visually pleasing) LR image ``y`` plus a latent
``z`` that holds what downscaling throws away (paper, sec. 3.1)::

    f(x) = (y, z),          x = f^{-1}(y, z),          z ~ N(0, I) at upscaling time.

Architecture (paper sec. 3.2; official ``InvRescaleNet``): ``log2(scale)`` stages, each one
:class:`~course_lib.flows.HaarDownsampling` (LL bands first) followed by ``blocks`` IRN couplings
(:class:`~course_lib.flows.AdditiveAffineCoupling`, the official ``InvBlockExp``)::

    y1 = x1 + phi(x2);   y2 = x2 * exp(clamp * (2 sigmoid(rho(y1)) - 1)) + eta(y1)    (eq. 4-5)

with ``x1`` = the first 3 channels (the low-pass image) and dense-block subnets phi, rho, eta.
After the last stage the first 3 channels are the LR image and the other ``3 s^2 - 3`` are ``z``.
``downscale(model, hr)`` gives the 8-bit LR image and ``upscale(model, lr, T)`` the HR image for a
fresh ``z ~ N(0, T^2 I)``: ``irn.downscale``, ``irn.upscale`` and ``irn.quantize`` are the functions
of :mod:`course_lib.rescaling`, shared with HCFlow.

Training objective (paper eq. 7-10; official ``IRN_model.py``)::

    L = lambda_fit * L_guide + lambda_rec * L_recon + lambda_ce * L_distr'

* :func:`guide_loss`: ``sum (y - y_bicubic)^2`` per image (MATLAB-bicubic LR target), ``lambda_fit = s^2``;
* :func:`reconstruction_loss`: Charbonnier ``sum sqrt((x - f^{-1}(Q(y), z'))^2 + 1e-6)`` per image,
  with ``Q`` the 8-bit quantiser (straight-through gradient) and a *fresh* ``z' ~ N(0, I)``;
* :func:`distribution_loss`: ``sum z^2`` per image, the cross-entropy surrogate that pushes ``z``
  towards ``N(0, I)``; all averaged over the batch, ``lambda_rec = lambda_ce = 1``.

IRN+ (paper sec. 4.4) fine-tunes the x4 model with a GAN and a VGG feature loss instead of the
surrogate (full distribution matching on ``x``) for perceptual quality; :func:`irn_plus_loss` is
the generator's side of that objective and :func:`train_plus` the fine-tuning loop.

Command line (the shipped checkpoints were made with it)::

    python -m course_lib.irn train --scale 4 --profile gpu --out runs/irn_x4.pt [--steps N]
    python -m course_lib.irn train --scale 4 --variant plus --init runs/irn_x4.pt --out runs/irn+_x4.pt
    python -m course_lib.irn evaluate --checkpoint runs/irn_x4.pt      # or --scale 4: shipped model
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from course_lib import config, rescaling, training
from course_lib.data import training_sampler
from course_lib.degradation import imresize
from course_lib.flows import AdditiveAffineCoupling, FlowSequential, HaarDownsampling, InvertibleModule, subnet
from course_lib.rescaling import (
    CHANNELS,
    RescalingFlow,
    as_rgb_batch,
    check_divisible,
    evaluation_images,
    round_8bit,
)

# Shared with HCFlow and kept under the names chapter 5 uses (irn.quantize, irn.make_batch_fn, ...).
from course_lib.data import training_sampler as make_batch_fn
from course_lib.rescaling import downscale, quantize, upscale
from course_lib.training import export_weights

Tensor = torch.Tensor

# Smallest LR side of a training patch worth training on. A model trained on LR patches of 8 px
# (x4 with 32 px HR patches) learned to use the zero padding of its convolutions and decoded whole
# images 5 dB worse than bicubic after 8k steps (see course_lib/checkpoints/irn_x4.md).
MIN_LR_PATCH = 16

CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoints"


# ------------------------------------------------------------------------------------------------
# validation helpers
# ------------------------------------------------------------------------------------------------


def check_scale(scale) -> int:
    """Return ``scale`` as an int if it is a power of two >= 2 (IRN stacks x2 Haar stages)."""
    return rescaling.check_scale(scale, "IRN downscales by x2 per Haar stage")


# ------------------------------------------------------------------------------------------------
# the model
# ------------------------------------------------------------------------------------------------


class IRN(RescalingFlow):
    """The IRN bijection ``x (N,3,H,W) -> (N, 3 s^2, H/s, W/s)`` = ``[y | z]`` (Xiao et al. 2020).

    Args:
        scale: rescaling factor, a power of two; one Haar stage + ``blocks`` couplings per x2.
        blocks: couplings per stage (an int for every stage, or one int per stage). Paper: 8.
        growth: channels of each conv in the dense-block subnets. Paper: 32.
        clamp: bound of the log-scale in the couplings (paper/official code: 1).

    ``forward(x) -> (out, logdet)`` and ``inverse(out) -> x`` follow the flows contract; the
    ``(y, z)`` views ``encode`` / ``decode`` / ``sample_z`` come from
    :class:`course_lib.rescaling.RescalingFlow`, images in and out from
    :func:`course_lib.rescaling.downscale` / :func:`course_lib.rescaling.upscale` (also
    ``irn.downscale`` / ``irn.upscale``).
    """

    def __init__(self, scale: int = 4, blocks: int | Sequence[int] = 8, growth: int = 32,
                 clamp: float = 1.0):
        super().__init__()
        self.scale = check_scale(scale)
        self.stages = int(math.log2(self.scale))
        if isinstance(blocks, int) and not isinstance(blocks, bool):
            blocks = [blocks] * self.stages
        blocks = list(blocks)
        if len(blocks) != self.stages or not all(isinstance(b, int) and b >= 1 for b in blocks):
            raise ValueError(f"blocks must be a positive int or {self.stages} positive ints "
                             f"(one per x2 stage), got {blocks!r}")
        if not isinstance(growth, int) or growth < 1:
            raise ValueError(f"growth must be a positive int, got {growth!r}")
        self.blocks, self.growth, self.clamp = tuple(blocks), growth, float(clamp)
        dense = subnet("dense", growth=growth)
        layers: list[InvertibleModule] = []
        channels = CHANNELS
        for n_blocks in blocks:
            layers.append(HaarDownsampling(channels))
            channels *= 4
            layers += [AdditiveAffineCoupling(channels, dense, split_channels=CHANNELS, clamp=clamp,
                                              clamp_kind="sigmoid") for _ in range(n_blocks)]
        self.flow = FlowSequential(layers)
        self.out_channels = channels

    @property
    def tag(self) -> str:
        """Checkpoint tag; a checkpoint of another scale is refused when loading."""
        return f"irn-x{self.scale}"

    def extra_repr(self) -> str:
        return f"scale={self.scale}, blocks={self.blocks}, growth={self.growth}, clamp={self.clamp}"

    # -- the flows contract ---------------------------------------------------------------------
    def _forward(self, x: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor]:
        self._check_hr(x, "IRN.forward")
        return self.flow._forward(x, None)

    def _inverse(self, z: Tensor, cond: Tensor | None) -> Tensor:
        self._check_packed(z, "IRN.inverse")
        return self.flow._inverse(z, None)


# ------------------------------------------------------------------------------------------------
# losses
# ------------------------------------------------------------------------------------------------


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
    official data loader's ``imresize_np(GT, 1/scale)``."""
    return imresize(hr, 1.0 / scale)


def guide_loss(lr: Tensor, lr_target: Tensor) -> Tensor:
    """L_guide = sum over C,H,W of (y - y_bicubic)^2, averaged over the batch (paper eq. 7)."""
    return ((lr - lr_target) ** 2).flatten(1).sum(1).mean()


def reconstruction_loss(hr: Tensor, hr_rec: Tensor, eps: float = 1e-6) -> Tensor:
    """L_recon = sum over C,H,W of sqrt((x - x_rec)^2 + eps) (Charbonnier L1), batch mean (eq. 8)."""
    return torch.sqrt((hr - hr_rec) ** 2 + eps).flatten(1).sum(1).mean()


def distribution_loss(z: Tensor) -> Tensor:
    """L_distr' = sum of z^2 per image, batch mean: the cross-entropy surrogate of eq. 10.

    Up to a constant it is ``-2 log N(z; 0, I)``, i.e. it pulls the latent's distribution
    towards the N(0, I) we sample from when upscaling.
    """
    return (z**2).flatten(1).sum(1).mean()


def irn_loss(model: IRN, hr: Tensor, weights: LossWeights | None = None, *,
             generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
    """The IRN objective on an HR batch: ``(total, {'guide', 'recon', 'distr'})`` (paper eq. 11).

    Forward pass HR -> (y, z); ``guide`` compares y with the bicubic LR; ``distr`` is the z^2
    surrogate; ``recon`` inverts the *quantised* y with a *freshly sampled* z (official code).
    ``weights`` defaults to :meth:`LossWeights.paper`.
    """
    x, _ = as_rgb_batch(hr, "hr", "irn_loss")
    check_divisible(x, model.scale, "irn_loss")
    w = weights if weights is not None else LossWeights.paper(model.scale)
    lr, z = model.encode(x)
    l_guide = guide_loss(lr, bicubic_target(x, model.scale).detach())
    l_distr = distribution_loss(z)
    lr_q = quantize(lr)
    x_rec = model.decode(lr_q, model.sample_z(lr_q, 1.0, generator))
    l_recon = reconstruction_loss(x, x_rec)
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
    trained on ``x_rec.detach()`` versus ``hr`` (:func:`train_plus` does both).
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


# ------------------------------------------------------------------------------------------------
# data and evaluation
# ------------------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate(model: IRN, photos: Sequence[str] | Sequence[Tensor] | None = None, *,
             crop: int | None = None, temperature: float = 1.0, draws: int = 1, seed: int = 0,
             device: torch.device | str | None = None) -> dict:
    """Y-PSNR/SSIM (shave = scale) of IRN and of bicubic-down + bicubic-up on held-out images.

    ``photos``: names of packaged photos (default ``data.EVAL_PHOTOS``) or image tensors.
    ``crop``: centre crop to at most ``crop x crop`` (fast previews). Each image is mod-cropped to
    the scale. HR figures are the mean over ``draws`` samples of z (outputs rounded to 8 bits).
    LR figures compare the quantised IRN LR with the 8-bit bicubic LR (same shave). Returns the
    means (``hr_psnr``, ``hr_ssim``, ``lr_psnr``, ``lr_ssim``, ``bicubic_psnr``, ``bicubic_ssim``)
    and per-image ``rows``.
    """
    from course_lib import metrics
    from course_lib.degradation import bicubic_downscale

    if not isinstance(draws, int) or draws < 1:
        raise ValueError(f"draws must be a positive int, got {draws!r}")
    s = model.scale
    with training.evaluation_mode(model):
        gen = torch.Generator().manual_seed(seed)
        rows = []
        for name, hr in evaluation_images(model, photos, crop, device):
            lr = downscale(model, hr)
            hr_psnr, hr_ssim = [], []
            for _ in range(draws):
                sr = upscale(model, lr, temperature, generator=gen)
                sr = round_8bit(sr)  # evaluated as saved 8-bit images
                hr_psnr.append(metrics.psnr(sr, hr, shave=s))
                hr_ssim.append(metrics.ssim(sr, hr, shave=s))
            lr_bic = bicubic_downscale(hr, s, quantize=True)
            up = round_8bit(imresize(lr_bic, s))
            rows.append({
                "image": name,
                "hr_psnr": float(sum(map(float, hr_psnr)) / draws),
                "hr_ssim": float(sum(map(float, hr_ssim)) / draws),
                "lr_psnr": float(metrics.psnr(lr, lr_bic, shave=s)),
                "lr_ssim": float(metrics.ssim(lr, lr_bic, shave=s)),
                "bicubic_psnr": float(metrics.psnr(up, hr, shave=s)),
                "bicubic_ssim": float(metrics.ssim(up, hr, shave=s)),
            })
    keys = [k for k in rows[0] if k != "image"]
    means = {k: sum(r[k] for r in rows) / len(rows) for k in keys}
    return {**means, "rows": rows}


def format_results(results: dict) -> str:
    """A plain-text table of :func:`evaluate`'s output."""
    head = f"{'image':<14}{'IRN PSNR':>10}{'SSIM':>8}{'LR PSNR':>10}{'LR SSIM':>9}{'bicubic':>10}{'SSIM':>8}"
    lines = [head]
    for r in results["rows"] + [{"image": "mean", **results}]:
        lines.append(f"{r['image']:<14}{r['hr_psnr']:>10.2f}{r['hr_ssim']:>8.4f}{r['lr_psnr']:>10.2f}"
                     f"{r['lr_ssim']:>9.4f}{r['bicubic_psnr']:>10.2f}{r['bicubic_ssim']:>8.4f}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# training
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainConfig:
    """Sizes of a training run. ``gpu`` is the paper's model (8 blocks per stage, growth 32,
    144x144 patches, batch 16, Adam lr 2e-4, weight decay 1e-5, clip 10) for a shorter schedule."""

    blocks: int
    growth: int
    patch: int
    batch: int
    steps: int
    lr: float
    weight_decay: float = 1e-5
    grad_clip: float = 10.0
    dead_leaves_fraction: float = 0.25
    milestones: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8)  # lr halvings, as fractions of the steps


PROFILES: dict[str, TrainConfig] = {
    "test": TrainConfig(blocks=1, growth=8, patch=32, batch=2, steps=10, lr=2e-4),
    "cpu": TrainConfig(blocks=8, growth=8, patch=32, batch=8, steps=1500, lr=1e-3,
                       milestones=(0.5, 0.75, 0.9)),
    "gpu": TrainConfig(blocks=8, growth=32, patch=144, batch=16, steps=5000, lr=2e-4),
}


def train_config(profile: str | None = None, *, scale: int | None = None, **overrides) -> TrainConfig:
    """The :class:`TrainConfig` of a profile (default: the active one), with fields overridden.

    With ``scale`` the profile's patch grows, unless overridden, to at least ``MIN_LR_PATCH * scale``
    (LR patches of 16 px or more; the profiles' 32 px patches are sized for x2)."""
    profile = profile or config.get_profile()
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {tuple(PROFILES)}")
    base = asdict(PROFILES[profile])
    unknown = set(overrides) - set(base)
    if unknown:
        raise ValueError(f"unknown TrainConfig fields {sorted(unknown)}")
    if scale is not None:
        base["patch"] = max(base["patch"], MIN_LR_PATCH * check_scale(scale))
    base.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**base)


def lr_schedule(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.MultiStepLR:
    """The learning rate halves at ``cfg.milestones`` (fractions of ``cfg.steps``), as the official
    MultiStepLR schedule."""
    milestones = sorted({max(1, int(cfg.steps * f)) for f in cfg.milestones})
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=0.5)


def train(scale: int, cfg: TrainConfig, *, checkpoint: str | os.PathLike | None = None,
          seed: int = 0, device: torch.device | str | None = None, amp: bool = False,
          eval_every: int = 0, eval_crop: int = 128, progress: bool = True,
          model: IRN | None = None, images: Sequence | None = None) -> tuple[IRN, training.History]:
    """Train an IRN with :func:`course_lib.training.fit` (Adam, MultiStepLR halving at
    ``cfg.milestones``: 20/40/60/80% of the steps like the official schedule by default; gradient
    clipping). With ``checkpoint`` an existing file of the same scale is resumed. ``eval_every`` > 0
    logs held-out Y-PSNR on centre crops. ``seed`` fixes the initial weights and the batches (a rerun
    gives the same model); ``images`` (names or tensors) replaces ``data.TRAIN_PHOTOS``."""
    check_scale(scale)
    if cfg.patch % scale:
        raise ValueError(f"patch size {cfg.patch} is not divisible by the scale {scale}")
    if cfg.patch // scale < MIN_LR_PATCH:
        warnings.warn(f"HR patches of {cfg.patch} px give LR patches of {cfg.patch // scale} px at x{scale}: "
                      f"almost every pixel is near the zero-padded border, and a long run learns to rely on "
                      f"it and fails on whole images; use patches of at least {MIN_LR_PATCH * scale} px",
                      stacklevel=2)
    device = torch.device(device) if device is not None else config.get_device()
    if model is None:
        torch.manual_seed(seed)  # the initial weights depend on the seed too: a rerun is identical
        model = IRN(scale, cfg.blocks, cfg.growth)
    model.to(device)
    batch_fn = training_sampler(cfg.patch, cfg.batch, scale=scale, seed=seed,
                                dead_leaves_fraction=cfg.dead_leaves_fraction, images=images)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.999),
                                 weight_decay=cfg.weight_decay)
    scheduler = lr_schedule(optimizer, cfg)
    weights = LossWeights.paper(scale)

    def eval_fn(step: int) -> dict[str, float]:
        res = evaluate(model, crop=eval_crop, device=device)
        return {"eval_psnr": res["hr_psnr"], "eval_lr_psnr": res["lr_psnr"]}

    history = training.fit(
        model, lambda m, batch: irn_loss(m, batch, weights), batch_fn, cfg.steps,
        optimizer=optimizer, scheduler=scheduler, grad_clip=cfg.grad_clip, amp=amp,
        checkpoint=checkpoint, checkpoint_every=max(1, min(500, cfg.steps // 10 or 1)),
        eval_fn=eval_fn if eval_every else None, eval_every=eval_every, seed=seed,
        tag=model.tag, device=device, desc=f"IRN x{scale}", progress=progress,
    )
    return model, history


def train_plus(model: IRN, cfg: TrainConfig, *, checkpoint: str | os.PathLike | None = None,
               seed: int = 0, device: torch.device | str | None = None, d_init_steps: int = 0,
               features: str | os.PathLike | None = None, progress: bool = True,
               images: Sequence | None = None) -> tuple[IRN, training.History]:
    """Fine-tune a trained IRN into IRN+ (paper sec. 4.4; official ``train_IRN+_x4.yml``).

    Each step updates the IRN on :func:`irn_plus_loss` (with the perceptual term), then the
    discriminator on real patches against reconstructions (non-saturating loss; both Adam with
    ``cfg.lr``, the discriminator with betas (0.9, 0.99) as the official code). For the first
    ``d_init_steps`` steps only the discriminator learns (official ``D_init_iters``). The critics
    come from :func:`course_lib.losses.gan_critics` (``features``: a VGG-19 weights file). The
    checkpoint holds both networks, so an interrupted run resumes exactly.
    """
    from course_lib import losses

    device = torch.device(device) if device is not None else config.get_device()
    model.to(device)
    torch.manual_seed(seed)
    perceptual, discriminator = losses.gan_critics(features=features)
    perceptual.to(device)
    discriminator.to(device)
    batch_fn = training_sampler(cfg.patch, cfg.batch, scale=model.scale, seed=seed,
                                dead_leaves_fraction=cfg.dead_leaves_fraction, images=images)
    opt_g = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.999), weight_decay=cfg.weight_decay)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=cfg.lr, betas=(0.9, 0.99))
    scheduler = lr_schedule(opt_g, cfg)

    def step_fn(step: int) -> dict[str, float]:
        hr = batch_fn(step).to(device)
        opt_g.zero_grad(set_to_none=True)
        loss, logs, x_rec = irn_plus_loss(model, hr, discriminator, perceptual=perceptual)
        if step >= d_init_steps:  # the official D_init_iters: the discriminator learns first
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt_g.step()  # without gradients (D-only steps) Adam leaves every parameter as it is
        d_loss = training.discriminator_step(discriminator, opt_d, hr, x_rec)
        return {"loss": loss.item(), **logs, "d_loss": d_loss}

    trainer = training.Trainer(
        {"model": model, "discriminator": discriminator}, {"model": opt_g, "discriminator": opt_d}, step_fn,
        schedulers={"scheduler": scheduler}, checkpoint=checkpoint,
        checkpoint_every=max(1, min(500, cfg.steps // 10 or 1)), tag=model.tag,
        desc=f"IRN+ x{model.scale}", progress=progress,
    )
    history = trainer.run(cfg.steps)
    model.eval()
    return model, history


# ------------------------------------------------------------------------------------------------
# loading
# ------------------------------------------------------------------------------------------------


def architecture_from_state(state_dict: dict[str, Tensor]) -> dict:
    """Infer ``blocks`` (per stage) and ``growth`` of an IRN from its weights."""
    layer_ids = sorted({int(m.group(1)) for k in state_dict if (m := re.match(r"flow\.layers\.(\d+)\.", k))})
    blocks: list[int] = []
    growth = None
    for i in layer_ids:
        if f"flow.layers.{i}.matrix" in state_dict:  # a Haar layer starts a stage
            blocks.append(0)
        elif blocks:
            blocks[-1] += 1
            growth = growth or int(state_dict[f"flow.layers.{i}.phi.convs.0.weight"].shape[0])
    if not blocks or growth is None or min(blocks) < 1:
        raise ValueError("these weights do not look like an IRN (no Haar stage / coupling found)")
    return {"blocks": blocks, "growth": growth}


def pretrained_path(scale: int) -> Path:
    """Path of the shipped checkpoint for ``scale`` (x2 and x4 ship with course_lib)."""
    return CHECKPOINT_DIR / f"irn_x{check_scale(scale)}.pt"


def load_irn(source: int | str | os.PathLike, *, scale: int | None = None,
             device: torch.device | str | None = None) -> IRN:
    """Build an IRN and load its weights (``weights_only=True``).

    ``source`` is a scale (2 or 4: the shipped checkpoint) or a checkpoint path. The architecture
    is read from the weights. With ``scale`` given, a checkpoint made for another scale is refused.
    """
    path = pretrained_path(source) if isinstance(source, int) and not isinstance(source, bool) else Path(source)
    if isinstance(source, int) and not path.is_file():
        raise FileNotFoundError(f"no shipped IRN checkpoint for x{source} (looked for {path})")
    state = training.load_checkpoint(path, tag=f"irn-x{check_scale(scale)}" if scale is not None else None)
    match = re.fullmatch(r"irn-x(\d+)", str(state["tag"]))
    if not match:
        raise ValueError(f"checkpoint {path} was made for {state['tag']!r}, not an IRN")
    arch = architecture_from_state(state["modules"]["model"])
    model = IRN(int(match.group(1)), arch["blocks"], arch["growth"])
    training.load_weights(model, path, tag=model.tag)
    model.eval()
    return model.to(device) if device is not None else model


# ------------------------------------------------------------------------------------------------
# command line
# ------------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m course_lib.irn", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train an IRN (checkpoints, resume, progress bar)")
    t.add_argument("--scale", type=int, required=True, help="2, 4, 8, ...")
    t.add_argument("--profile", choices=tuple(PROFILES), default=None,
                   help="sizes of the run (default: $COURSE_PROFILE or the hardware)")
    t.add_argument("--out", required=True,
                   help="checkpoint file (written every few hundred steps); resumed from when it exists")
    t.add_argument("--steps", type=int, default=None, help="total training steps (overrides the profile)")
    t.add_argument("--resume", action="store_true",
                   help="accepted for older commands: an existing --out is always resumed")
    t.add_argument("--blocks", type=int, default=None, help="couplings per x2 stage (paper: 8)")
    t.add_argument("--growth", type=int, default=None, help="dense-block width (paper: 32)")
    t.add_argument("--patch", type=int, default=None, help="HR patch size (paper: 144)")
    t.add_argument("--batch", type=int, default=None, help="batch size (paper: 16)")
    t.add_argument("--lr", type=float, default=None, help="Adam learning rate (paper: 2e-4)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default=None, help="cpu, cuda, ... (default: best available)")
    t.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    t.add_argument("--amp", action="store_true", help="mixed precision on CUDA")
    t.add_argument("--eval-every", type=int, default=0, help="held-out PSNR on crops every N steps")
    t.add_argument("--init", default=None,
                   help="start from the weights of this IRN checkpoint (fine-tuning; the optimiser starts "
                        "fresh and the architecture comes from the checkpoint)")
    t.add_argument("--variant", choices=("irn", "plus"), default="irn",
                   help="irn: the three losses; plus: IRN+ adversarial fine-tuning of --init")
    t.add_argument("--d-init-steps", type=int, default=0,
                   help="IRN+: steps that train only the discriminator first (official: 5000)")
    t.add_argument("--features", default=None,
                   help="IRN+: VGG-19 weights file for the feature loss (default: the Gabor stand-in)")
    t.add_argument("--weights", default=None,
                   help="also write a weights-only copy (no optimiser state) here at the end")
    e = sub.add_parser("evaluate", help="held-out Y-PSNR/SSIM of a checkpoint")
    src = e.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="checkpoint file")
    src.add_argument("--scale", type=int, help="evaluate the shipped checkpoint of this scale")
    e.add_argument("--crop", type=int, default=None, help="centre crop size (default: whole photos)")
    e.add_argument("--draws", type=int, default=1, help="z samples per image")
    e.add_argument("--temperature", type=float, default=1.0)
    e.add_argument("--threads", type=int, default=None)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.threads is not None:
        config.set_threads(args.threads)
    if args.command == "train":
        scale = check_scale(args.scale)
        out = Path(args.out)
        if out.exists():
            print(f"resuming from {out}", flush=True)
        cfg = train_config(args.profile, scale=scale, steps=args.steps, blocks=args.blocks, growth=args.growth,
                           patch=args.patch, batch=args.batch, lr=args.lr)
        device = torch.device(args.device) if args.device else config.get_device()
        print(f"IRN x{scale} | profile {args.profile or config.get_profile()} | device {device} | "
              f"threads {torch.get_num_threads()} | {cfg}", flush=True)
        init = None
        if args.init:
            init = load_irn(args.init, scale=scale)
            cfg = train_config(args.profile, **{**asdict(cfg), "blocks": init.blocks[0], "growth": init.growth})
            print(f"initialised from {args.init} ({init.extra_repr()})", flush=True)
        start = time.perf_counter()
        if args.variant == "plus":
            if init is None:
                raise SystemExit("IRN+ fine-tunes a trained IRN: pass --init <IRN checkpoint> "
                                 "(also when resuming, for the architecture)")
            model, history = train_plus(init, cfg, checkpoint=out, seed=args.seed, device=device,
                                        d_init_steps=args.d_init_steps, features=args.features)
        else:
            model, history = train(scale, cfg, checkpoint=out, seed=args.seed, device=device, amp=args.amp,
                                   eval_every=args.eval_every, model=init)
        rescaling.report_training(model, history, time.perf_counter() - start, out, args.weights)
        return 0
    model = load_irn(args.scale if args.scale is not None else args.checkpoint)
    results = evaluate(model, crop=args.crop, draws=args.draws, temperature=args.temperature)
    print(f"IRN x{model.scale} ({sum(p.numel() for p in model.parameters())} parameters), held-out "
          f"photos, Y channel, shave {model.scale}, temperature {args.temperature}, {args.draws} draw(s)")
    print(format_results(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
