"""The IRN bijection HR <-> [LR | z] (Xiao et al., ECCV 2020), composed from :mod:`course_lib.flows`.

``log2(scale)`` stages, each one :class:`~course_lib.flows.HaarDownsampling` (LL bands first)
followed by ``blocks`` IRN couplings (:class:`~course_lib.flows.AdditiveAffineCoupling`, the
official ``InvBlockExp``)::

    y1 = x1 + phi(x2);   y2 = x2 * exp(clamp * (2 sigmoid(rho(y1)) - 1)) + eta(y1)

with ``x1`` = the first 3 channels (the low-pass image) and dense-block subnets phi, rho, eta.
After the last stage the first 3 channels are the LR image and the other ``3 s^2 - 3`` are ``z``.
The constructor arguments travel with the weights (:meth:`IRN.config`, stored by
:func:`course_lib.irn.train.train` as the checkpoint's ``model_config``);
:func:`legacy_config` reads them from the weights of older checkpoints that lack it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

import torch

from course_lib import rescaling
from course_lib.flows import AdditiveAffineCoupling, FlowSequential, HaarDownsampling, InvertibleModule, subnet
from course_lib.rescaling import CHANNELS, RescalingFlow

__all__ = ["IRN", "check_scale", "legacy_config"]

Tensor = torch.Tensor


def check_scale(scale) -> int:
    """Return ``scale`` as an int if it is a power of two >= 2 (IRN stacks x2 Haar stages)."""
    return rescaling.check_scale(scale, "IRN downscales by x2 per Haar stage")


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
    ``irn.downscale`` / ``irn.upscale``). ``IRN(**model.config())`` builds the same architecture.

    Paper: Xiao et al. 2020, sec. 3 (ECCV version; the invertible block and the Haar downscaling, equation numbers
    not verified) · Book: chapter 5, section "Why an invertible network plus z" · Official code:
    pkuxmq/Invertible-Image-Rescaling, codes/models/modules/Inv_arch.py:InvRescaleNet
    """

    mode = "rescale"

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

    def config(self) -> dict:
        """The constructor arguments (plain Python values): ``IRN(**config())`` rebuilds this
        architecture. Stored in checkpoints as ``model_config``."""
        return {"scale": self.scale, "blocks": list(self.blocks), "growth": self.growth, "clamp": self.clamp}

    def extra_repr(self) -> str:
        return f"scale={self.scale}, blocks={self.blocks}, growth={self.growth}, clamp={self.clamp}"

    # -- the flows contract ---------------------------------------------------------------------
    def _forward(self, x: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor]:
        self._check_hr(x, "IRN.forward")
        return self.flow._forward(x, None)

    def _inverse(self, z: Tensor, cond: Tensor | None) -> Tensor:
        self._check_packed(z, "IRN.inverse")
        return self.flow._inverse(z, None)


def legacy_config(tag: str, weights: Mapping[str, Tensor]) -> dict:
    """The :meth:`IRN.config` of a checkpoint made before checkpoints stored it (the shipped
    ``irn_x2.pt`` and ``irn_x4.pt``): the scale from the tag (``irn-x4``), ``blocks`` per stage
    and ``growth`` from the weight names and shapes, and the clamp every IRN of ours used (1)."""
    match = re.fullmatch(r"irn-x(\d+)", str(tag))
    if not match:
        raise ValueError(f"tag {tag!r} is not an IRN's (irn-x<scale>)")
    layer_ids = sorted({int(m.group(1)) for k in weights if (m := re.match(r"flow\.layers\.(\d+)\.", k))})
    blocks: list[int] = []
    growth = None
    for i in layer_ids:
        if f"flow.layers.{i}.matrix" in weights:  # a Haar layer starts a stage
            blocks.append(0)
        elif blocks:
            blocks[-1] += 1
            growth = growth or int(weights[f"flow.layers.{i}.phi.convs.0.weight"].shape[0])
    if not blocks or growth is None or min(blocks) < 1:
        raise ValueError("these weights do not look like an IRN (no Haar stage / coupling found)")
    scale = int(match.group(1))
    if 2 ** len(blocks) != scale:
        raise ValueError(f"the tag {tag!r} (x{scale}) and the weights disagree: the weights hold {len(blocks)} Haar "
                         f"stage(s), an x{2 ** len(blocks)} IRN")
    return {"scale": scale, "blocks": blocks, "growth": growth, "clamp": 1.0}
