"""The hierarchy ablation of chapter 6: what HCFlow's coarse-to-fine conditioning buys.

Two models share one trained bijection ``x -> (LR, a_1, ..., a_L)`` (the *main flow*: squeezes and
unconditional steps, copied from a trained HCFlow and frozen) and differ only in what the density
of each band is conditioned on:

* ``hierarchical`` (the paper): ``p(a_l | LR, a_{l+1}, ..., a_L)``, features from the flow's kept
  channels ``y_l`` and the coarser features;
* ``flat``: ``p(a_l | LR)``, features from the upsampled LR image only.

Their conditional parts (feature extractors, conditional flows, Gaussians) start from the same
seed and are trained identically. With the bijection shared, the LR term and the main flow's
log-determinant are the same for both, so any difference in the NLL is a difference in the bits of
the bands: the quantity :func:`course_lib.hcflow.nll_parts_bits_per_dim` calls ``"hr given lr"``.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, replace
from pathlib import Path

import torch

from course_lib.rescaling import center_crop

from .losses import nll_parts_bits_per_dim
from .model import HCFlow
from .train import CHECKPOINT_DIR, TrainConfig, train

__all__ = [
    "SHIPPED", "VARIANT_NAMES", "band_bits", "conditioning_variants", "freeze_main_flow", "load_variants",
    "paired_difference", "save_variants", "train_variants",
]

SHIPPED = CHECKPOINT_DIR / "hcflow_hierarchy_ablation.pt"
FORMAT = "hcflow-hierarchy-ablation-2"

VARIANT_NAMES = {True: "hierarchical", False: "flat (LR only)"}


def freeze_main_flow(model: HCFlow) -> HCFlow:
    """Stop training the main flow (``model.levels``): only the conditional parts keep gradients."""
    for p in model.levels.parameters():
        p.requires_grad_(False)
    return model


def conditioning_variants(base: HCFlow, *, seed: int = 0, **cond_sizes) -> dict[str, HCFlow]:
    """``{"hierarchical": ..., "flat (LR only)": ...}``: two HCFlows with ``base``'s main flow
    (copied and frozen) and fresh conditional parts built after ``torch.manual_seed(seed)``, the
    same initial weights in both wherever the shapes agree.

    ``cond_sizes`` override the conditional parts' sizes (``cond_steps``, ``cond_hidden``,
    ``rrdb_blocks``, ``nf``, ``gc``); the main flow's sizes are ``base``'s and cannot change.
    """
    if not isinstance(base, HCFlow):
        raise TypeError(f"conditioning_variants needs an HCFlow, got {type(base).__name__}")
    from course_lib.flows import ActNorm

    if any(isinstance(m, ActNorm) and not bool(m.initialized) for m in base.levels.modules()):
        raise ValueError("the base model's main flow is untrained (its ActNorms are not initialised): "
                         "the variants must share a trained bijection")
    fixed = {"flow_steps", "hidden"} & set(cond_sizes)
    if fixed:
        raise ValueError(f"{sorted(fixed)} size the shared main flow and must stay the base model's")
    arch = replace(base.arch, **{k: (tuple(v) if k == "rrdb_blocks" else v) for k, v in cond_sizes.items()})
    torch.manual_seed(seed)
    hier = HCFlow(base.scale, base.mode, hierarchical=True, arch=arch)
    hier.levels.load_state_dict(base.levels.state_dict())
    flat = HCFlow(base.scale, base.mode, hierarchical=False, arch=arch)
    # the flat model starts from the hierarchical one's weights wherever the shapes agree: all but
    # the first convolution of the finer levels' feature extractors (their inputs differ)
    start = hier.state_dict()
    own = flat.state_dict()
    flat.load_state_dict({k: start[k] if start[k].shape == v.shape else v for k, v in own.items()})
    device = next(base.parameters()).device
    return {VARIANT_NAMES[m.hierarchical]: freeze_main_flow(m.to(device)) for m in (hier, flat)}


def train_variants(base: HCFlow, cfg: TrainConfig, seeds: tuple[int, ...], *, runs: str | os.PathLike | None = None,
                   progress: bool = True, device: torch.device | str | None = None,
                   **cond_sizes) -> dict[tuple[str, int], HCFlow]:
    """Train both :func:`conditioning_variants` of ``base`` for every seed, identically (``cfg``'s
    patches, batch, steps and learning rate; the batches depend on the seed only). With ``runs``
    (a folder) each run keeps a resumable checkpoint there. Returns ``{(variant, seed): model}``."""
    if not seeds:
        raise ValueError("give at least one seed")
    out = {}
    for seed in seeds:
        for name, model in conditioning_variants(base, seed=seed, **cond_sizes).items():
            path = None
            if runs is not None:
                Path(runs).mkdir(parents=True, exist_ok=True)
                path = Path(runs) / f"hierarchy_{'flat' if not model.hierarchical else 'hier'}_seed{seed}.pt"
            out[name, seed], _ = train(base.mode, base.scale, cfg, model=model, checkpoint=path, seed=seed,
                                       progress=progress, device=device)
    return out


def save_variants(path: str | os.PathLike, variants: dict[tuple[str, int], HCFlow], base_name: str,
                  cfg: TrainConfig) -> Path:
    """Write every variant and seed to one file: the shared main flow once, the trained conditional
    parts of each run, the name of the base checkpoint and the training configuration."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    first = next(iter(variants.values()))
    config = first.config()
    config.pop("hierarchical")
    torch.save({
        "format": FORMAT, "base": str(base_name), "train_config": asdict(cfg), "model_config": config,
        "main_flow": {k: v.detach().cpu() for k, v in first.levels.state_dict().items()},
        "runs": [{"variant": name, "seed": int(seed),
                  "weights": {k: v.detach().cpu() for k, v in m.state_dict().items() if not k.startswith("levels.")}}
                 for (name, seed), m in variants.items()],
    }, path)
    return path


def load_variants(path: str | os.PathLike = SHIPPED, *,
                  device: torch.device | str | None = None) -> tuple[dict[tuple[str, int], HCFlow], dict]:
    """The models :func:`save_variants` wrote, in eval mode, and the file's ``train_config``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no hierarchy-ablation file at {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path} is not a hierarchy-ablation file (save_variants)")
    config = dict(state["model_config"])
    base = HCFlow(**config)
    base.levels.load_state_dict(state["main_flow"])
    sizes = {k: config[k] for k in ("cond_steps", "cond_hidden", "rrdb_blocks", "nf", "gc")}
    models = {}
    for run in state["runs"]:
        shell = conditioning_variants(base, seed=0, **sizes)[run["variant"]]
        missing, unexpected = shell.load_state_dict(run["weights"], strict=False)
        if unexpected or any(not k.startswith("levels.") for k in missing):
            raise ValueError(f"{path}: the weights of {run['variant']} seed {run['seed']} do not fit "
                             f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
        models[run["variant"], run["seed"]] = shell.eval().to(device) if device is not None else shell.eval()
    return models, dict(state["train_config"])


@torch.no_grad()
def band_bits(model: HCFlow, images, *, crop: int | None = None) -> dict[str, float]:
    """Mean :func:`nll_parts_bits_per_dim` over ``images`` (``(3, H, W)`` tensors, centre-cropped
    to ``crop``), one fixed dequantisation noise per image so two models see the same noise."""
    sums: dict[str, float] = {}
    for i, img in enumerate(images):
        x = center_crop(img, crop, model.scale) if crop else img
        x = x.to(next(model.parameters()).device)
        parts = nll_parts_bits_per_dim(model, x[None], generator=torch.Generator().manual_seed(i))
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + float(v.mean())
    return {k: v / len(images) for k, v in sums.items()}


def paired_difference(a: list[float], b: list[float]) -> tuple[float, float]:
    """Mean of ``a[i] - b[i]`` over paired runs and its standard error (``nan`` for one pair)."""
    if len(a) != len(b) or not a:
        raise ValueError(f"need two equally long, non-empty lists, got {len(a)} and {len(b)}")
    d = [x - y for x, y in zip(a, b)]
    mean = sum(d) / len(d)
    if len(d) == 1:
        return mean, float("nan")
    var = sum((x - mean) ** 2 for x in d) / (len(d) - 1)
    return mean, math.sqrt(var / len(d))
