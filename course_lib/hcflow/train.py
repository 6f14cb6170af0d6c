"""Training and loading of HCFlow models (same shape as :mod:`course_lib.irn.train`).

* :func:`train` runs the shared loop (:class:`course_lib.training.Trainer`: progress bar,
  checkpoints, exact resume, seeding) with HCFlow's optimiser settings: Adam(0.9, 0.99), gradient
  value clip 5 and norm clip 100, learning rate halved at 50/75/90/95 % of the steps (SR) or
  20/40/60/80/90 % (rescaling), as the official configurations do for 300k / 500k iterations;
  on the packaged photos, DIV2K or a folder (``data``), with mixed precision on CUDA and an
  optional wall-clock limit per session.
* ``TRAIN_CONFIGS[mode][profile]`` holds the sizes of a run (profiles ``test`` / ``cpu`` / ``gpu``
  of :mod:`course_lib.config`), :func:`train_config` picks one and overrides fields.
* :func:`load_hcflow` rebuilds a model from a checkpoint (its ``model_config``, or for older
  checkpoints such as the shipped ones :func:`course_lib.hcflow.model.legacy_config`) and refuses
  a checkpoint made for another mode or scale.

The held-out evaluation is :func:`course_lib.evaluation.evaluate`, shared with IRN (SR models:
pass ``nll=dequantized_nll_bits_per_dim`` for the NLL).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from course_lib import config, evaluation, training
from course_lib.data.loader import training_batches

from .losses import RescalingLossWeights, SRLossWeights, reference_lr, rescaling_loss, sr_loss
from .model import Architecture, HCFlow, check_mode, check_scale, legacy_config

__all__ = [
    "CHECKPOINT_DIR", "TRAIN_CONFIGS", "TrainConfig", "load_hcflow", "loss_function",
    "milestones", "model_config", "pretrained_path", "train", "train_config",
]

Tensor = torch.Tensor

CHECKPOINT_DIR = Path(__file__).resolve().parent.parent / "checkpoints"


@dataclass(frozen=True)
class TrainConfig:
    """Model sizes and optimisation settings of one run.

    The ``gpu`` profile is the paper's model (:meth:`Architecture.paper`), 160x160 patches, batch
    16, lr 2.5e-4, on a much shorter schedule than the paper's 300k (SR) / 500k (rescaling)
    iterations. ``cpu`` is a small model that learns something in tens of minutes on a laptop.
    """

    flow_steps: int
    cond_steps: int
    hidden: int
    cond_hidden: int
    rrdb0: int
    rrdb1: int
    nf: int
    gc: int
    patch: int
    batch: int
    steps: int
    lr: float
    grad_clip_value: float = 5.0
    grad_clip_norm: float = 100.0
    dead_leaves_fraction: float = 0.25
    hierarchical: bool = True
    variant: str = "hcflow"  # SR loss: hcflow | plus (plusplus needs a discriminator, see sr_loss)

    def architecture(self) -> Architecture:
        return Architecture(self.flow_steps, self.cond_steps, self.hidden, self.cond_hidden,
                            (self.rrdb0, self.rrdb1), self.nf, self.gc)


def _paper(mode: str, **kw) -> TrainConfig:
    a = Architecture.paper(mode)
    return TrainConfig(a.flow_steps, a.cond_steps, a.hidden, a.cond_hidden, *a.rrdb_blocks, a.nf, a.gc, **kw)


# The training configuration of each mode and run profile (course_lib.config.PROFILES names the profiles).
TRAIN_CONFIGS: dict[str, dict[str, TrainConfig]] = {
    "sr": {
        "test": TrainConfig(1, 1, 8, 8, 1, 0, 8, 4, patch=16, batch=2, steps=4, lr=2.5e-4),
        "cpu": TrainConfig(3, 3, 32, 32, 1, 1, 32, 16, patch=48, batch=8, steps=1500, lr=5e-4),
        "gpu": _paper("sr", patch=160, batch=16, steps=20000, lr=2.5e-4),
    },
    "rescale": {
        "test": TrainConfig(2, 1, 8, 8, 1, 0, 8, 4, patch=16, batch=2, steps=4, lr=2.5e-4),
        "cpu": TrainConfig(4, 2, 16, 32, 1, 0, 32, 8, patch=32, batch=12, steps=1500, lr=5e-4),
        "gpu": _paper("rescale", patch=160, batch=16, steps=20000, lr=2.5e-4),
    },
}


def train_config(mode: str, profile: str | None = None, **overrides) -> TrainConfig:
    """The :class:`TrainConfig` of a mode and profile (default: the active one), fields overridden
    by the keyword arguments that are not ``None``."""
    check_mode(mode)
    profile = profile or config.get_profile()
    if profile not in TRAIN_CONFIGS[mode]:
        raise ValueError(f"unknown profile {profile!r}; choose one of {tuple(TRAIN_CONFIGS[mode])}")
    base = asdict(TRAIN_CONFIGS[mode][profile])
    unknown = set(overrides) - set(base)
    if unknown:
        raise ValueError(f"unknown TrainConfig fields {sorted(unknown)}")
    base.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**base)


def loss_function(model: HCFlow, cfg: TrainConfig | None = None, *, perceptual: torch.nn.Module | None = None,
                  discriminator: torch.nn.Module | None = None) -> Callable[[HCFlow, Tensor], tuple]:
    """``loss_fn(model, hr, **noise) -> (loss, logs)`` for the model's mode (SR variant from ``cfg``);
    ``noise`` may give the draws of the step (``u=`` for SR, ``z_fresh=`` for rescaling).
    HCFlow++ needs the ``perceptual`` loss and the ``discriminator`` (:func:`course_lib.losses.gan_critics`)."""
    if model.mode == "rescale":
        weights = RescalingLossWeights()
        return lambda m, hr, **noise: rescaling_loss(m, hr, weights, **noise)
    variant = cfg.variant if cfg is not None else "hcflow"
    if variant == "plusplus" and (perceptual is None or discriminator is None):
        raise ValueError("HCFlow++ needs a perceptual loss and a discriminator: loss_function(model, cfg, "
                         "perceptual=..., discriminator=...), see course_lib.losses.gan_critics")
    weights = SRLossWeights.paper(variant)
    return lambda m, hr, **noise: sr_loss(m, hr, weights, perceptual=perceptual, discriminator=discriminator, **noise)


def milestones(mode: str, steps: int) -> list[int]:
    fractions = (0.5, 0.75, 0.9, 0.95) if mode == "sr" else (0.2, 0.4, 0.6, 0.8, 0.9)
    return sorted({max(1, int(steps * f)) for f in fractions})


def train(mode: str, scale: int, cfg: TrainConfig, *, checkpoint: str | os.PathLike | None = None,
          seed: int = 0, device: torch.device | str | None = None, eval_every: int = 0,
          eval_crop: int = 128, progress: bool = True, model: HCFlow | None = None,
          checkpoint_every: int | None = None, images: Sequence | None = None,
          features: str | os.PathLike | None = None, data: str | os.PathLike | None = None,
          workers: int | None = None, amp: bool | None = None,
          max_seconds: float | None = None, download: bool = False) -> tuple[HCFlow, training.History]:
    """Train an HCFlow of ``mode`` ('sr' or 'rescale') and ``scale`` on the training photos.

    With ``checkpoint`` an existing file of the same tag is resumed (exactly: batches depend on the
    step only, and the random state is saved); the checkpoint stores the model's constructor
    arguments (``model_config``). A step whose loss is not finite is skipped, as in the official
    code (counted in the ``skipped`` log). ``eval_every`` > 0 logs held-out figures on centre crops
    (:func:`course_lib.evaluation.training_logs`: ``eval_psnr`` and ``eval_lr_psnr`` (SR) or
    ``eval_lr_vs_bicubic_psnr`` (rescaling)). Pass ``model`` to fine-tune an existing model (e.g.
    HCFlow+ from HCFlow), and ``images`` (names or tensors) to train on other images than
    ``data.TRAIN_PHOTOS``.

    ``cfg.variant == "plusplus"`` (SR) fine-tunes ``model`` adversarially (HCFlow++, paper sec. 3.4):
    each step updates the flow on ``sr_loss`` with the perceptual and GAN terms, then the
    discriminator on real patches vs samples at temperature 0.9 (:func:`course_lib.losses.gan_critics`;
    ``features`` is an optional VGG-19 weights file). The checkpoint holds the discriminator too.

    ``data``: ``None``/``"photos"`` (the packaged photos and dead leaves), ``"div2k"`` (from the data
    cache; fetched into it only with ``download=True``) or a folder of images
    (:func:`course_lib.data.loader.training_batches`); ``workers`` DataLoader processes
    build the batches ahead (default: 2 on CUDA, else none). ``amp``: mixed precision for the
    flow's update (default: on for CUDA; the likelihood and log-determinants are summed in float32,
    :func:`course_lib.hcflow.losses.log_likelihood`). ``max_seconds``: stop after that much
    wall-clock time in this session, checkpoint written; calling again resumes
    (:meth:`course_lib.training.Trainer.run`).
    """
    check_mode(mode)
    check_scale(scale)
    if cfg.patch % scale:
        raise ValueError(f"patch size {cfg.patch} is not divisible by the scale {scale}")
    device = torch.device(device) if device is not None else config.get_device()
    fine_tune = model is not None
    if model is None:
        torch.manual_seed(seed)  # the initial weights depend on the seed too: a rerun is identical
        model = HCFlow(scale, mode, hierarchical=cfg.hierarchical, arch=cfg.architecture())
    elif model.mode != mode or model.scale != scale:
        raise ValueError(f"model is {model.tag}, asked to train hcflow-{mode}-x{scale}")
    model.to(device)
    workers = (2 if device.type == "cuda" else 0) if workers is None else workers
    batch_fn, source = training_batches(data, cfg.patch, cfg.batch, scale=scale, seed=seed,
                                        dead_leaves_fraction=cfg.dead_leaves_fraction, images=images,
                                        workers=workers, stop=cfg.steps, pin_memory=device.type == "cuda",
                                        download=download, progress=progress)
    if data is not None and str(data) != "photos" and training.is_main_process():
        print(f"HCFlow {mode} x{scale}: training on {source}", flush=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.99))
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones(mode, cfg.steps), gamma=0.5)
    modules, optimizers = {"model": model}, {"optimizer": optimizer}
    mixed = training.MixedPrecision(device, amp if device.type == "cuda" else False)  # float16 on CUDA
    perceptual = discriminator = None
    if mode == "sr" and cfg.variant == "plusplus":
        if not fine_tune and not (checkpoint is not None and Path(checkpoint).exists()):
            raise ValueError("HCFlow++ is trained by fine-tuning a likelihood-trained HCFlow (the authors: "
                             "from scratch the GAN term gives NaN); pass model= (command line: --init)")
        torch.manual_seed(seed)
        from course_lib.losses import gan_critics

        perceptual, discriminator = gan_critics(features=features)
        perceptual.to(device)
        modules["discriminator"] = discriminator.to(device)
        optimizers["discriminator"] = torch.optim.Adam(discriminator.parameters(), lr=cfg.lr, betas=(0.9, 0.99))
    loss_fn = loss_function(model, cfg, perceptual=perceptual, discriminator=discriminator)
    params = [p for p in model.parameters() if p.requires_grad]
    gan_temperature = SRLossWeights.paper(cfg.variant).temperature if mode == "sr" else 1.0
    last: dict[str, float] = {}

    def discriminator_step(hr: Tensor) -> float:
        """One update of HCFlow++'s discriminator: real HR patches vs samples at the GAN temperature."""
        with torch.no_grad():
            lr = reference_lr(hr, scale)
            fake = model.decode(lr, model.sample_z(lr, gan_temperature))
        return training.discriminator_step(discriminator, optimizers["discriminator"], hr, fake)

    def step_fn(step: int) -> dict[str, float]:
        hr = training.shard_batch(batch_fn(step)).to(device, non_blocking=True)  # this process's share
        # the step's noise sample by sample, the same for any number of processes (HCFlow++'s
        # samples for its perceptual and GAN terms still come from each process's own stream)
        if mode == "sr":
            noise = {"u": training.batch_noise(hr.shape, step, seed, uniform=True, device=device)}
        else:
            noise = {"z_fresh": training.batch_noise(
                (hr.shape[0], model.z_channels, hr.shape[2] // scale, hr.shape[3] // scale), step, seed, device=device)}
        optimizer.zero_grad(set_to_none=True)
        with mixed.autocast():
            loss, logs = loss_fn(model, hr, **noise)
        if not training.all_ranks(torch.isfinite(loss)):  # skip on every process together; keep the last log
            return {**last, "skipped": 1.0} if last else {"loss": 0.0, "skipped": 1.0}
        mixed.backward(loss)
        mixed.unscale_(optimizer)
        torch.nn.utils.clip_grad_value_(params, cfg.grad_clip_value)
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip_norm)
        mixed.step(optimizer)
        last.update({"loss": loss.item(), **logs})
        if discriminator is not None:
            last["d_loss"] = discriminator_step(hr)
        return {**last, "skipped": 0.0}

    def eval_fn(step: int) -> dict[str, float]:
        return evaluation.training_logs(model, crop=eval_crop, device=device)

    trainer = training.Trainer(
        modules, optimizers, step_fn, schedulers={"scheduler": scheduler}, amp=mixed,
        checkpoint=checkpoint,
        checkpoint_every=checkpoint_every or max(1, min(250, cfg.steps // 10 or 1)),
        eval_fn=eval_fn if eval_every else None, eval_every=eval_every, tag=model.tag,
        desc=f"HCFlow {mode} x{scale}", progress=progress, model_config=model.config(),
    )
    if trainer.step == 0 and seed is not None:
        torch.manual_seed(seed)
    try:
        history = trainer.run(cfg.steps, max_seconds=max_seconds)
    finally:
        if hasattr(batch_fn, "close"):
            batch_fn.close()
    model.eval()
    return model, history


# ------------------------------------------------------------------------------------------------
# checkpoints
# ------------------------------------------------------------------------------------------------


def pretrained_path(mode: str, scale: int = 4) -> Path:
    """Path of the shipped checkpoint (``hcflow_sr_x4.pt``, ``hcflow_rescale_x4.pt``)."""
    return CHECKPOINT_DIR / f"hcflow_{check_mode(mode)}_x{check_scale(scale)}.pt"


def load_hcflow(source: str | os.PathLike, *, mode: str | None = None, scale: int | None = None,
                device: torch.device | str | None = None) -> HCFlow:
    """Build an HCFlow and load its weights (``weights_only=True``), in eval mode.

    ``source``: ``"sr"`` or ``"rescale"`` for the shipped x4 checkpoint, or a checkpoint path. The
    architecture comes from the checkpoint (:func:`model_config`). With ``mode``/``scale`` given, a
    checkpoint made for another model is refused with a clear error; so are other sources (``"SR"``,
    ``4``, a missing file), naming the shipped ones, and a checkpoint whose tag and weights disagree.
    """
    names = "the shipped HCFlow checkpoints are 'sr' and 'rescale' (x4)"
    if isinstance(source, bool) or not isinstance(source, (str, os.PathLike)):
        hint = f"; for the scale pass scale={source!r}" if isinstance(source, (int, float)) else ""
        raise TypeError(f"load_hcflow: source must be a shipped name or a checkpoint path, got {source!r} "
                        f"({type(source).__name__}){hint}; {names}")
    if not (isinstance(source, str) and source in ("sr", "rescale")) and not Path(source).is_file():
        hint = f"; did you mean {str(source).strip().lower()!r}?" if str(source).strip().lower() in (
            "sr", "rescale") else ""
        raise FileNotFoundError(f"load_hcflow: {str(source)!r} is neither a shipped name nor a checkpoint file"
                                f"{hint}; {names}")
    if isinstance(source, str) and source in ("sr", "rescale"):
        mode = mode or source
        if mode != source:
            raise ValueError(f"asked for the shipped {source!r} checkpoint with mode={mode!r}")
        path = pretrained_path(source, scale or 4)
        if not path.is_file():
            raise FileNotFoundError(f"no shipped HCFlow checkpoint for {source} x{scale or 4} (looked for {path}); "
                                    f"{names}")
    else:
        path = Path(source)
    tag = None
    if mode is not None or scale is not None:
        if mode is None or scale is None:
            state = training.load_checkpoint(path)
            found = re.fullmatch(r"hcflow-(sr|rescale)-x(\d+)", str(state["tag"]))
            if not found:
                raise ValueError(f"checkpoint {path} was made for {state['tag']!r}, not an HCFlow")
            mode = mode or found.group(1)
            scale = scale or int(found.group(2))
        tag = f"hcflow-{check_mode(mode)}-x{check_scale(scale)}"
    state = training.load_checkpoint(path, tag=tag)
    if not re.fullmatch(r"hcflow-(sr|rescale)-x(\d+)", str(state["tag"])):
        raise ValueError(f"checkpoint {path} was made for {state['tag']!r}, not an HCFlow")
    if "model" not in state["modules"]:
        raise ValueError(f"checkpoint {path} holds {sorted(state['modules'])}, not 'model'")
    model = HCFlow(**model_config(state))
    if model.tag != state["tag"]:
        built_from = "model_config" if state.get("model_config") is not None else "weights (their arch_code)"
        raise ValueError(f"checkpoint {path} is tagged {state['tag']!r} but its {built_from} build {model.tag!r}: "
                         "the tag and the weights disagree")
    weights = dict(state["modules"]["model"])
    if "model_config" not in state:
        weights.pop("arch_code", None)  # the legacy copy of the sizes (legacy_config), not a weight
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        raise ValueError(f"checkpoint {path} does not fit {model.tag} ({model.extra_repr()}): {err}") from err
    model.eval()
    return model.to(device) if device is not None else model


def model_config(state: dict) -> dict:
    """The constructor arguments of the HCFlow in a loaded checkpoint (``training.load_checkpoint``):
    its ``model_config`` entry, or for a checkpoint made before checkpoints stored it (the shipped
    ``hcflow_sr_x4.pt`` / ``hcflow_rescale_x4.pt``) :func:`course_lib.hcflow.model.legacy_config`,
    read from the ``arch_code`` buffer those weights carry."""
    stored = state.get("model_config")
    if stored is not None:
        return dict(stored)
    return legacy_config(state["modules"]["model"])
