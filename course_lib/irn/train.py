"""Training and loading of IRN models (same shape as :mod:`course_lib.hcflow.train`).

* :func:`train` runs the shared loop (:class:`course_lib.training.Trainer`: progress bar,
  checkpoints, exact resume, seeding) on :func:`course_lib.irn.losses.irn_loss` with the official
  optimiser settings, on the packaged photos, DIV2K or a folder (``data``), with mixed precision on
  CUDA and an optional wall-clock limit per session; :func:`train_plus` fine-tunes a trained IRN
  into IRN+ with a discriminator.
* ``TRAIN_CONFIGS`` holds the sizes of a run per profile (``test`` / ``cpu`` / ``gpu``, the
  profiles of :mod:`course_lib.config`), :func:`train_config` picks one and overrides fields.
* :func:`load_irn` rebuilds a model from a checkpoint: from its ``model_config`` (the
  constructor arguments, stored since the checkpoints carry them) or, for older checkpoints such
  as the shipped ones, from :func:`course_lib.irn.model.legacy_config`.

The held-out evaluation is :func:`course_lib.evaluation.evaluate`, shared with HCFlow.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from course_lib import config, evaluation, training
from course_lib.data.loader import training_batches

from .losses import LossWeights, irn_loss, irn_plus_loss
from .model import IRN, check_scale, legacy_config

__all__ = [
    "CHECKPOINT_DIR", "MIN_LR_PATCH", "TRAIN_CONFIGS", "TrainConfig", "load_irn", "lr_schedule",
    "model_config", "pretrained_path", "train", "train_config", "train_plus",
]

# Smallest LR side of a training patch worth training on. A model trained on LR patches of 8 px
# (x4 with 32 px HR patches) learned to use the zero padding of its convolutions and decoded whole
# images 5 dB worse than bicubic after 8k steps (see course_lib/checkpoints/irn_x4.md).
MIN_LR_PATCH = 16

CHECKPOINT_DIR = Path(__file__).resolve().parent.parent / "checkpoints"


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


# The training configuration of each run profile (course_lib.config.PROFILES names the profiles).
TRAIN_CONFIGS: dict[str, TrainConfig] = {
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
    if profile not in TRAIN_CONFIGS:
        raise ValueError(f"unknown profile {profile!r}; choose one of {tuple(TRAIN_CONFIGS)}")
    base = asdict(TRAIN_CONFIGS[profile])
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
          seed: int = 0, device: torch.device | str | None = None, amp: bool | None = None,
          eval_every: int = 0, eval_crop: int = 128, progress: bool = True,
          model: IRN | None = None, images: Sequence | None = None, data: str | os.PathLike | None = None,
          workers: int | None = None, max_seconds: float | None = None,
          weights: LossWeights | None = None, download: bool = False) -> tuple[IRN, training.History]:
    """Train an IRN on the shared loop (:class:`course_lib.training.Trainer`; Adam, MultiStepLR
    halving at ``cfg.milestones``: 20/40/60/80% of the steps like the official schedule by default;
    gradient clipping). With ``checkpoint`` an existing file of the same scale is resumed; the
    checkpoint stores the model's constructor arguments (``model_config``). ``eval_every`` > 0 logs
    held-out figures on centre crops (:func:`course_lib.evaluation.training_logs`: ``eval_psnr``
    and ``eval_lr_vs_bicubic_psnr``). ``seed`` fixes the initial weights and the batches (a rerun
    gives the same model); ``images`` (names or tensors) replaces ``data.TRAIN_PHOTOS``.

    ``data``: ``None``/``"photos"`` (the packaged photos and dead leaves), ``"div2k"`` (from the data
    cache; fetched into it only with ``download=True``) or a folder of images
    (:func:`course_lib.data.loader.training_batches`); ``workers`` DataLoader processes
    build the batches ahead (default: 2 on CUDA, else none). ``amp``: mixed precision (default: on
    for CUDA; the losses stay float32). ``max_seconds``: stop after that much wall-clock time in
    this session, checkpoint written; calling again resumes (:meth:`course_lib.training.Trainer.run`).
    ``weights``: the loss weights (default :meth:`LossWeights.paper`; e.g. ``ce=0`` drops the
    ``sum z^2`` surrogate, an ablation of chapter 5's exercises).

    Paper: Xiao et al. 2020, sec. 4 (ECCV version; training settings, equation numbers not verified) · Book: chapter
    5, section "A short training run" · Official code: pkuxmq/Invertible-Image-Rescaling,
    codes/models/IRN_model.py:IRNModel.optimize_parameters
    """
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
    workers = (2 if device.type == "cuda" else 0) if workers is None else workers
    batch_fn, source = training_batches(data, cfg.patch, cfg.batch, scale=scale, seed=seed,
                                        dead_leaves_fraction=cfg.dead_leaves_fraction, images=images,
                                        workers=workers, stop=cfg.steps, pin_memory=device.type == "cuda",
                                        download=download, progress=progress)
    if data is not None and str(data) != "photos" and training.is_main_process():
        print(f"IRN x{scale}: training on {source}", flush=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.999),
                                 weight_decay=cfg.weight_decay)
    scheduler = lr_schedule(optimizer, cfg)
    weights = LossWeights.paper(scale) if weights is None else weights
    mixed = training.MixedPrecision(device, amp if device.type == "cuda" else False)  # float16 on CUDA

    def step_fn(step: int) -> dict[str, float]:
        hr = training.shard_batch(batch_fn(step)).to(device, non_blocking=True)  # this process's share
        # the reconstruction's fresh z, sample by sample: the same for any number of processes
        z_fresh = training.batch_noise((hr.shape[0], model.z_channels, hr.shape[2] // scale, hr.shape[3] // scale),
                                       step, seed, device=device)
        optimizer.zero_grad(set_to_none=True)
        with mixed.autocast():
            loss, logs = irn_loss(model, hr, weights, z_fresh=z_fresh)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} at step {step}; "
                                     "lower the learning rate or clip gradients")
        mixed.backward(loss)
        mixed.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        mixed.step(optimizer)
        return {"loss": loss.item(), **logs}

    def eval_fn(step: int) -> dict[str, float]:
        return evaluation.training_logs(model, crop=eval_crop, device=device)

    trainer = training.Trainer(
        {"model": model}, {"optimizer": optimizer}, step_fn, schedulers={"scheduler": scheduler}, checkpoint=checkpoint,
        checkpoint_every=max(1, min(500, cfg.steps // 10 or 1)), eval_fn=eval_fn if eval_every else None,
        eval_every=eval_every, tag=model.tag, desc=f"IRN x{scale}", progress=progress,
        model_config=model.config(), amp=mixed,
    )
    if trainer.step == 0 and seed is not None:
        torch.manual_seed(seed)  # as training.fit: the random z of the first steps depend on the seed
    try:
        history = trainer.run(cfg.steps, max_seconds=max_seconds)
    finally:
        if hasattr(batch_fn, "close"):
            batch_fn.close()
    return model, history


def train_plus(model: IRN, cfg: TrainConfig, *, checkpoint: str | os.PathLike | None = None,
               seed: int = 0, device: torch.device | str | None = None, d_init_steps: int = 0,
               features: str | os.PathLike | None = None, progress: bool = True,
               images: Sequence | None = None, data: str | os.PathLike | None = None,
               max_seconds: float | None = None, download: bool = False) -> tuple[IRN, training.History]:
    """Fine-tune a trained IRN into IRN+ (official ``train_IRN+_x4.yml``).

    Each step updates the IRN on :func:`course_lib.irn.losses.irn_plus_loss` (with the perceptual
    term), then the discriminator on real patches against reconstructions (non-saturating loss;
    both Adam with ``cfg.lr``, the discriminator with betas (0.9, 0.99) as the official code). For
    the first ``d_init_steps`` steps only the discriminator learns (official ``D_init_iters``). The
    critics come from :func:`course_lib.losses.gan_critics` (``features``: a VGG-19 weights file).
    The checkpoint holds both networks and the IRN's ``model_config``, so an interrupted run
    resumes exactly. ``data``, ``download`` and ``max_seconds`` as in :func:`train` (no mixed precision here).

    Paper: Xiao et al. 2020, sec. 4 (ECCV version; IRN+, equation numbers not verified) · Book: chapter 5, section
    "IRN+: matching the distribution of images, not only of z" · Official code: pkuxmq/Invertible-Image-Rescaling,
    codes/models/IRNp_model.py:IRNpModel.optimize_parameters
    """
    from course_lib import losses

    device = torch.device(device) if device is not None else config.get_device()
    model.to(device)
    torch.manual_seed(seed)
    perceptual, discriminator = losses.gan_critics(features=features)
    perceptual.to(device)
    discriminator.to(device)
    batch_fn, _ = training_batches(data, cfg.patch, cfg.batch, scale=model.scale, seed=seed,
                                   dead_leaves_fraction=cfg.dead_leaves_fraction, images=images, download=download,
                                   progress=progress)
    opt_g = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.999), weight_decay=cfg.weight_decay)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=cfg.lr, betas=(0.9, 0.99))
    scheduler = lr_schedule(opt_g, cfg)

    def step_fn(step: int) -> dict[str, float]:
        hr = training.shard_batch(batch_fn(step)).to(device)
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
        desc=f"IRN+ x{model.scale}", progress=progress, model_config=model.config(),
    )
    history = trainer.run(cfg.steps, max_seconds=max_seconds)
    model.eval()
    return model, history


# ------------------------------------------------------------------------------------------------
# loading
# ------------------------------------------------------------------------------------------------


def pretrained_path(scale: int) -> Path:
    """Path of the shipped checkpoint for ``scale`` (x2 and x4 ship with course_lib)."""
    return CHECKPOINT_DIR / f"irn_x{check_scale(scale)}.pt"


def model_config(state: dict) -> dict:
    """The constructor arguments of the IRN in a loaded checkpoint (``training.load_checkpoint``):
    its ``model_config`` entry, or for a checkpoint made before checkpoints stored it (the shipped
    ``irn_x2.pt`` / ``irn_x4.pt``) :func:`course_lib.irn.model.legacy_config`, read from the tag and
    the weights."""
    stored = state.get("model_config")
    if stored is not None:
        return dict(stored)
    return legacy_config(state["tag"], state["modules"]["model"])


def load_irn(source: int | str | os.PathLike, *, scale: int | None = None,
             device: torch.device | str | None = None) -> IRN:
    """Build an IRN and load its weights (``weights_only=True``), in eval mode.

    ``source`` is a scale (2 or 4: the shipped checkpoint) or a checkpoint path. The architecture
    comes from the checkpoint (:func:`model_config`). With ``scale`` given, a checkpoint made for
    another scale is refused. Anything else (``2.0``, ``True``, ``"2"``, a missing file) is refused
    with an error that names the shipped scales; so is a checkpoint whose tag and weights disagree.
    """
    shipped = sorted(int(f.stem[5:]) for f in CHECKPOINT_DIR.glob("irn_x*.pt") if f.stem[5:].isdigit())  # irn_x4
    names = f"the shipped scales are {', '.join(map(str, shipped))} (pass an int, e.g. load_irn({shipped[-1]}))"
    if isinstance(source, bool) or not isinstance(source, (int, str, os.PathLike)):
        hint = f"; for the shipped x{int(source)} model pass the int {int(source)}" if (
            isinstance(source, float) and source.is_integer()) else ""
        raise TypeError(f"load_irn: source must be a scale or a checkpoint path, got {source!r} "
                        f"({type(source).__name__}){hint}; {names}")
    if isinstance(source, int):
        if source not in shipped:
            raise FileNotFoundError(f"load_irn: no shipped IRN checkpoint for scale {source}; {names}, or give "
                                    f"a checkpoint path (python -m course_lib.irn train --scale {source} makes one)")
        path = pretrained_path(source)
    else:
        path = Path(source)
        if not path.is_file():
            hint = (f"; for the shipped x{source} model pass the int {source}, not the string"
                    if str(source).strip().isdigit() else "")
            raise FileNotFoundError(f"load_irn: no checkpoint file at {str(path)!r}{hint}; {names}")
    state = training.load_checkpoint(path, tag=f"irn-x{check_scale(scale)}" if scale is not None else None)
    if not str(state["tag"]).startswith("irn-x"):
        raise ValueError(f"checkpoint {path} was made for {state['tag']!r}, not an IRN")
    try:
        model = IRN(**model_config(state))
    except ValueError as err:  # e.g. a tag that disagrees with the weights (legacy_config)
        raise ValueError(f"checkpoint {path}: {err}") from err
    if model.tag != state["tag"]:
        raise ValueError(f"checkpoint {path} is tagged {state['tag']!r} but its model_config builds {model.tag!r}")
    try:
        training.load_weights(model, path, tag=model.tag)
    except ValueError as err:
        raise ValueError(f"checkpoint {path}: its tag {state['tag']!r} and model_config {model_config(state)} "
                         f"disagree with its weights: {err}") from err
    model.eval()
    return model.to(device) if device is not None else model
