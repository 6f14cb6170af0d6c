"""Invertible Image Rescaling (IRN; Xiao et al., ECCV 2020), composed from :mod:`course_lib.flows`.

Image *rescaling* differs from super-resolution: we design the downscaler too. IRN learns one
bijection ``f`` that maps an HR image ``x`` to a (visually pleasing) LR image ``y`` plus a latent
``z`` that holds what downscaling throws away::

    f(x) = (y, z),          x = f^{-1}(y, z),          z ~ N(0, I) at upscaling time.

* :mod:`course_lib.irn.model`: :class:`~course_lib.irn.model.IRN`, Haar stages and IRN couplings; a
  :class:`course_lib.rescaling.RescalingFlow`, so ``irn.downscale``, ``irn.upscale`` and
  ``irn.quantize`` are the functions of :mod:`course_lib.rescaling`, shared with HCFlow.
* :mod:`course_lib.irn.losses`: the LR guidance, HR reconstruction and ``z`` distribution losses, and IRN+'s.
* :mod:`course_lib.irn.train`: training on the shared loop, the training configurations of the run profiles
  (``TRAIN_CONFIGS``), checkpoints (:func:`~course_lib.irn.train.load_irn`).
* The held-out evaluation ``irn.evaluate`` / ``irn.format_results`` is
  :func:`course_lib.evaluation.evaluate` / :func:`course_lib.evaluation.format_results`, one loop
  for IRN and HCFlow.

Command line (the shipped checkpoints were made with it; ``course_lib.irn.__main__``)::

    python -m course_lib.irn train --scale 4 --profile gpu --out runs/irn_x4.pt [--steps N]
    python -m course_lib.irn train --scale 4 --variant plus --init runs/irn_x4.pt --out runs/irn+_x4.pt
    python -m course_lib.irn evaluate --checkpoint runs/irn_x4.pt      # or --scale 4: shipped model
"""

from __future__ import annotations

from collections.abc import Sequence

# Shared with HCFlow and kept under the names chapter 5 uses (irn.quantize, irn.make_batch_fn, ...).
from course_lib.data import training_sampler as make_batch_fn
from course_lib.evaluation import evaluate, format_results
from course_lib.rescaling import downscale, quantize, upscale
from course_lib.training import export_weights

from .losses import (
    LossWeights,
    bicubic_target,
    distribution_loss,
    guide_loss,
    irn_loss,
    irn_plus_loss,
    reconstruction_loss,
)
from .model import IRN, check_scale, legacy_config
from .train import (
    CHECKPOINT_DIR,
    MIN_LR_PATCH,
    TRAIN_CONFIGS,
    TrainConfig,
    load_irn,
    lr_schedule,
    model_config,
    pretrained_path,
    train,
    train_config,
    train_plus,
)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m course_lib.irn ...`` as a function: :func:`course_lib.irn.__main__.main`."""
    from .__main__ import main as _main  # imported here: `python -m` runs __main__ as a script

    return _main(argv)


__all__ = [
    "CHECKPOINT_DIR", "IRN", "LossWeights", "MIN_LR_PATCH", "TRAIN_CONFIGS", "TrainConfig", "bicubic_target",
    "check_scale", "distribution_loss", "downscale", "evaluate", "export_weights", "format_results", "guide_loss",
    "irn_loss", "irn_plus_loss", "legacy_config", "load_irn", "lr_schedule", "main", "make_batch_fn",
    "model_config", "pretrained_path", "quantize", "reconstruction_loss", "train", "train_config", "train_plus",
    "upscale",
]
