"""HCFlow: a hierarchical conditional flow for super-resolution and image rescaling (chapter 6).

Liang, Lugmayr, Zhang, Danelljan, Van Gool, Timofte, "Hierarchical Conditional Flow: A Unified
Framework for Image Super-Resolution and Image Rescaling", ICCV 2021. One bijection
``HR <-> (LR, a_1, ..., a_L)``: the LR part is scored as a near-Dirac Gaussian around the
reference LR image, and each lost high-frequency band ``a_l`` gets a conditional flow and a
conditional Gaussian whose parameters come from the coarser levels (the hierarchy).

* :mod:`.model`: :class:`HCFlow` (built from :mod:`course_lib.flows`) and :func:`sample`; like IRN,
  a :class:`course_lib.rescaling.RescalingFlow`, so ``downscale``, ``upscale``, ``quantize`` and
  ``center_crop`` here are those of :mod:`course_lib.rescaling`.
* :mod:`.conditioning`: the RRDB feature extractor of each level.
* :mod:`.losses`: NLL with the Dirac LR term (SR, HCFlow+/++), the three rescaling losses.
* :mod:`.train`: training on the shared loop, the training configurations of the run profiles
  (``TRAIN_CONFIGS``), checkpoints (:func:`~course_lib.hcflow.train.load_hcflow`).
* The held-out evaluation ``hcflow.evaluate`` / ``hcflow.format_results`` is
  :func:`course_lib.evaluation.evaluate` / :func:`course_lib.evaluation.format_results`, one loop
  for IRN and HCFlow (SR: ``nll=hcflow.dequantized_nll_bits_per_dim`` adds the NLL).

Command line: ``python -m course_lib.hcflow train --mode sr|rescale --scale 4 --profile gpu
--out PATH [--steps N]`` and ``python -m course_lib.hcflow evaluate --mode sr``.
"""

from __future__ import annotations

# Shared with IRN and kept under the names chapter 6 uses (hcflow.downscale, hcflow.make_batch_fn, ...).
from course_lib.data import training_sampler as make_batch_fn
from course_lib.evaluation import evaluate, format_results
from course_lib.models import count_parameters
from course_lib.rescaling import center_crop, downscale, quantize, upscale
from course_lib.training import export_weights

from .conditioning import RRDB, ConditionEncoder, ResidualDenseBlock
from .losses import (
    LR_LOG_SIGMA,
    RescalingLossWeights,
    SRLossWeights,
    dequantize,
    dequantized_nll_bits_per_dim,
    dirac_lr_log_prob,
    log_likelihood,
    nll_parts_bits_per_dim,
    reference_lr,
    rescaling_loss,
    sr_loss,
)
from .model import (
    MODES,
    QUANT,
    Architecture,
    HCFlow,
    check_mode,
    check_scale,
    legacy_config,
    sample,
)
from .train import (
    TRAIN_CONFIGS,
    TrainConfig,
    load_hcflow,
    model_config,
    pretrained_path,
    train,
    train_config,
)

__all__ = [
    "Architecture", "ConditionEncoder", "HCFlow", "LR_LOG_SIGMA", "MODES", "QUANT", "RRDB", "RescalingLossWeights",
    "ResidualDenseBlock", "SRLossWeights", "TRAIN_CONFIGS", "TrainConfig", "center_crop", "check_mode",
    "check_scale", "count_parameters", "dequantize", "dequantized_nll_bits_per_dim", "dirac_lr_log_prob",
    "downscale", "evaluate", "export_weights", "format_results", "legacy_config", "load_hcflow", "log_likelihood",
    "make_batch_fn", "nll_parts_bits_per_dim",
    "model_config", "pretrained_path", "quantize", "reference_lr", "rescaling_loss", "sample",
    "sr_loss", "train", "train_config", "upscale",
]
