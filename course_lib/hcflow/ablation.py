"""The hierarchy ablation of chapter 6: what HCFlow's coarse-to-fine conditioning buys.

The hierarchy changes one thing: what the density of a finer band is conditioned on. At the
coarsest level both designs condition on the LR image alone, so the experiment keeps everything
else fixed. Two models copy a trained HCFlow (``base``) and freeze all of it, the bijection
``x -> (LR, a_1, ..., a_L)`` and the densities of the coarser bands, except the conditional parts
of the finest band ``a_1`` (feature extractor, conditional flow, Gaussian), which start afresh:

* ``hierarchical`` (the paper): ``p(a_1 | LR, a_2, ..., a_L)``, features from the flow's kept
  channels ``y_1`` and the coarser level's features;
* ``flat``: ``p(a_1 | LR)``, features from the upsampled LR image only.

They start from the same weights wherever the shapes agree (all but the first convolution of the
finest feature extractor, whose inputs differ) and are trained identically. The LR term, the main
flow's log-determinant and the coarser bands' bits are then the same function for both, so the
difference of their NLLs is exactly the difference of the bits of ``a_1``: the quantity
:func:`course_lib.hcflow.losses.nll_parts_bits_per_dim` calls ``"hr given lr"`` (all but the LR term).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict
from pathlib import Path

import torch

from course_lib import data
from course_lib.data.dead_leaves import dead_leaves
from course_lib.rescaling import center_crop

from .losses import nll_parts_bits_per_dim
from .model import HCFlow
from .train import CHECKPOINT_DIR, TrainConfig, train

__all__ = [
    "FINEST", "SHIPPED", "VARIANT_NAMES", "band_bits", "compare", "conditioning_variants", "load_variants",
    "paired_difference", "save_variants", "test_sets", "train_variants",
]

SHIPPED = CHECKPOINT_DIR / "hcflow_hierarchy_ablation.pt"
FORMAT = "hcflow-hierarchy-ablation-3"
VARIANT_NAMES = {True: "hierarchical", False: "flat (LR only)"}
FINEST = ("cond_nets.0.", "cond_flows.0.", "priors.0.")  # the weights the two variants train


def _trained(name: str) -> bool:
    return name.startswith(FINEST)


def conditioning_variants(base: HCFlow, *, seed: int = 0) -> dict[str, HCFlow]:
    """``{"hierarchical": ..., "flat (LR only)": ...}``: two copies of the trained ``base``, frozen
    except for the finest band's conditional parts, which are built afresh after
    ``torch.manual_seed(seed)`` with the same initial weights in both wherever the shapes agree."""
    if not isinstance(base, HCFlow):
        raise TypeError(f"conditioning_variants needs an HCFlow, got {type(base).__name__}")
    from course_lib.flows import ActNorm

    if any(isinstance(m, ActNorm) and not bool(m.initialized) for name, m in base.named_modules()
           if not _trained(name + ".")):
        raise ValueError("the base model is untrained (its ActNorms are not initialised): the variants "
                         "must share a trained bijection and coarser levels")
    config = {**base.config(), "hierarchical": True}
    shared = {k: v for k, v in base.state_dict().items() if not _trained(k)}
    torch.manual_seed(seed)
    hier = HCFlow(**config)
    hier.load_state_dict({**hier.state_dict(), **shared})
    flat = HCFlow(**{**config, "hierarchical": False})
    start = hier.state_dict()
    flat.load_state_dict({k: start[k] if start[k].shape == v.shape else v for k, v in flat.state_dict().items()})
    device = next(base.parameters()).device
    for model in (hier, flat):
        for name, p in model.named_parameters():
            p.requires_grad_(_trained(name))
    return {VARIANT_NAMES[m.hierarchical]: m.to(device) for m in (hier, flat)}


def train_variants(base: HCFlow, cfg: TrainConfig, seeds: tuple[int, ...], *, runs: str | os.PathLike | None = None,
                   progress: bool = True, device: torch.device | str | None = None) -> dict[tuple[str, int], HCFlow]:
    """Train both :func:`conditioning_variants` of ``base`` for every seed, identically (``cfg``'s
    patches, batch, steps and learning rate; the batches depend on the seed only). With ``runs``
    (a folder) each run keeps a resumable checkpoint there. Returns ``{(variant, seed): model}``."""
    if not seeds:
        raise ValueError("give at least one seed")
    out = {}
    for seed in seeds:
        for name, model in conditioning_variants(base, seed=seed).items():
            path = None
            if runs is not None:
                Path(runs).mkdir(parents=True, exist_ok=True)
                path = Path(runs) / f"hierarchy_{'flat' if not model.hierarchical else 'hier'}_seed{seed}.pt"
            out[name, seed], _ = train(base.mode, base.scale, cfg, model=model, checkpoint=path, seed=seed,
                                       progress=progress, device=device)
    return out


def _half(t: torch.Tensor) -> torch.Tensor:
    t = t.detach().cpu()
    return t.half() if t.is_floating_point() else t


def _full(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.float() if v.is_floating_point() else v for k, v in weights.items()}


def save_variants(path: str | os.PathLike, variants: dict[tuple[str, int], HCFlow], base_name: str,
                  cfg: TrainConfig) -> Path:
    """Write every variant and seed to one file: the shared weights once, the finest band's trained
    conditional parts of each run, the name of the base checkpoint and the training configuration.
    Floating-point weights are stored in float16 (half the size; :func:`load_variants` returns
    float32 models), which moves the bits per dimension by at most about 0.001."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    first = next(iter(variants.values()))
    config = {**first.config(), "hierarchical": True}
    torch.save({
        "format": FORMAT, "base": str(base_name), "train_config": asdict(cfg), "model_config": config,
        "shared": {k: _half(v) for k, v in first.state_dict().items() if not _trained(k)},
        "runs": [{"variant": name, "seed": int(seed),
                  "weights": {k: _half(v) for k, v in m.state_dict().items() if _trained(k)}}
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
    base = HCFlow(**state["model_config"])
    base.load_state_dict({**base.state_dict(), **_full(state["shared"])})
    models = {}
    for run in state["runs"]:
        shell = conditioning_variants(base, seed=0)[run["variant"]]
        missing, unexpected = shell.load_state_dict(_full(run["weights"]), strict=False)
        if unexpected or any(_trained(k) for k in missing):
            raise ValueError(f"{path}: the weights of {run['variant']} seed {run['seed']} do not fit "
                             f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
        models[run["variant"], run["seed"]] = shell.eval().to(device) if device is not None else shell.eval()
    return models, dict(state["train_config"])


@torch.no_grad()
def band_bits(model: HCFlow, images, *, crop: int | None = None) -> dict[str, float]:
    """Mean :func:`course_lib.hcflow.losses.nll_parts_bits_per_dim` over ``images`` (``(3, H, W)``
    tensors, centre-cropped to ``crop``), one fixed dequantisation noise per image so two models
    see the same noise."""
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


def test_sets(crop: int | None = 256, *, leaves: int = 6, leaf_size: int = 128) -> dict[str, list[torch.Tensor]]:
    """The two held-out sets of the ablation: the photos ``data.EVAL_PHOTOS`` (centre crops of
    ``crop``, whole with ``None``) and ``leaves`` dead-leaves images of seeds 1000, 1001, ..., which
    no training batch uses."""
    photos = [data.load_photo(name) for name in data.EVAL_PHOTOS]
    return {"held-out photos": [center_crop(p, crop, 4) for p in photos] if crop else photos,
            "dead leaves": [dead_leaves(leaf_size, generator=torch.Generator().manual_seed(1000 + i))
                            for i in range(leaves)]}


def compare(models: dict[tuple[str, int], HCFlow], images, parts: tuple[str, ...] = ("hr given lr",),
            ) -> tuple[dict[tuple[str, int], dict[str, float]], dict[str, tuple[float, float]]]:
    """:func:`band_bits` of every run on ``images``, and for each of ``parts`` the hierarchical minus
    flat difference paired by seed (:func:`paired_difference`: mean and standard error)."""
    bits = {key: band_bits(model, images) for key, model in models.items()}
    seeds = sorted({seed for _, seed in models})
    hier, flat = VARIANT_NAMES[True], VARIANT_NAMES[False]
    effects = {part: paired_difference([bits[hier, s][part] for s in seeds], [bits[flat, s][part] for s in seeds])
               for part in parts}
    return bits, effects
