"""The HCFlow bijection HR <-> (LR, a_1, ..., a_L) (Liang et al., ICCV 2021, sec. 3), from course_lib.flows.

Encoding (HR -> LR), level by level from fine to coarse::

    h_0 = x                                         (N, 3, H, W)
    for l = 1..L:    h = steps_l(down(h_{l-1}))     down = Squeeze (SR) or Haar (rescaling)
                     (y_l, a_l) = split(h)          keep half the channels (3 at the last level)
                     h_l = y_l
    LR = y_L                                        (N, 3, H/2^L, W/2^L)

Each split-off high-frequency part ``a_l`` is then mapped by a *conditional* flow and
standardised by a *conditional* Gaussian, both driven by features ``u_l`` of the coarser level
(:mod:`.conditioning`); the features are computed **coarse to fine** (the hierarchy)::

    u_L = E_L(LR);   u_l = E_l([y_l, up2(u_{l+1})])          (hierarchical, the paper)
    eps_l = (g_l(a_l; u_l) - mean_l(u_l)) / std_l(u_l)       g_l: conditional flow steps

so ``p(x) = p(LR) * prod_l p(a_l | LR, a_{l+1}, ..., a_L) * |det dF/dx|``: the distribution of a
finer band depends only on the LR image and on the coarser bands, never on finer ones. At
sampling time the LR is given, the ``eps_l`` are drawn from N(0, T^2 I) coarse to fine, and the
flow is run backwards. ``hierarchical=False`` conditions every level on the (upsampled) LR image
only, a baseline with the same parameter budget.

The whole map ``x -> [LR | eps_L | ... | eps_1]`` (every eps packed to LR resolution with
pixel-unshuffle, ``3 s^2`` channels in all, like IRN's ``[y | z]``) is one
:class:`~course_lib.rescaling.RescalingFlow`: ``forward(x) -> (z, logdet)``, ``inverse(z) -> x``,
and ``encode`` / ``decode`` / ``sample_z`` as for IRN. The images-in, images-out functions are
those of :mod:`course_lib.rescaling` (``hcflow.downscale`` is ``irn.downscale``, and so on), so the
two models are interchangeable in code. What they mean for HCFlow:

* ``downscale(model, hr)``: in rescaling mode the learned downscaler; in SR mode the flow's
  estimate of the bicubic LR image, 8-bit quantised.
* ``upscale(model, lr, temperature)``: in SR mode one sample of the learned distribution of HR
  images given a (bicubic) LR image, and ``temperature=0`` gives the most likely high frequencies
  of every level (deterministic); in rescaling mode the inverse of ``downscale``.
* ``sample_z`` draws ``z ~ N(0, T^2 I)``; the conditional Gaussians turn it into high frequencies
  with the right mean and spread when decoding.

Two modes (official ``FlowNet_SR_x4.py`` / ``FlowNet_Rescaling_x4.py``):

* ``"sr"``: squeeze, Glow steps (ActNorm, invertible 1x1 conv, affine coupling with the soft clamp
  ``0.318 atan(2 s)``, conv subnets of width 64), two-trunk RRDB features, unclamped Gaussian log-std.
* ``"rescale"``: Haar downsampling, no 1x1 conv, couplings that alternate "LR (3 ch) -> affine on
  the rest" and "rest -> additive shift of the LR", dense-block subnets (growth 32), one-trunk RRDB
  features, log-std clamped with the same ``0.318 atan(2 s)``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, fields, replace

import torch
import torch.nn.functional as F
from torch import nn

from course_lib import rescaling
from course_lib.checks import check_unit_range
from course_lib.flows import (
    ActNorm,
    AdditiveCoupling,
    AffineCoupling,
    FlowSequential,
    Gaussianize,
    HaarDownsampling,
    InvertibleModule,
    Squeeze,
    glow_step,
)
from course_lib.flows.subnets import ConvNet, DenseBlock
from course_lib.rescaling import CHANNELS, MODES, RescalingFlow, as_rgb_batch, upscale

from .conditioning import ConditionEncoder

__all__ = [
    "COUPLING_CLAMP", "LEGACY_ARCH_CODE", "LEGACY_MODES", "MODES", "QUANT", "Architecture", "HCFlow", "check_mode",
    "check_scale", "legacy_config", "sample",
]

Tensor = torch.Tensor

# HCFlow's coupling clamp: log-scale = 0.318 atan(2 s) = 0.5 (2/pi) atan(s / 0.5), within (-0.5, 0.5)
COUPLING_CLAMP = 0.5
# The SR likelihood dequantises training images as x + u / quant, u ~ U(0, 1) (official x4 configuration:
# quant 64); the rescaling losses use no dequantisation (the value is the 8-bit step).
QUANT = {"sr": 64, "rescale": 256}


# ------------------------------------------------------------------------------------------------
# validation helpers (the messages of course_lib.rescaling, as for IRN)
# ------------------------------------------------------------------------------------------------


def check_scale(scale) -> int:
    """Return ``scale`` if it is an int power of two >= 2 (one flow level per x2)."""
    return rescaling.check_scale(scale, "HCFlow halves the resolution once per level")


def check_mode(mode) -> str:
    """Return ``mode`` if it is one of ``MODES`` (``"sr"`` or ``"rescale"``)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    return mode


# ------------------------------------------------------------------------------------------------
# sizes
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Architecture:
    """Sizes of an HCFlow; :meth:`paper` gives the official configurations.

    Attributes:
        flow_steps: unconditional flow steps per level (after the squeeze / Haar).
        cond_steps: conditional flow steps applied to each split-off component.
        hidden: width of the main-flow coupling subnets (conv net for SR, dense-block growth for
            rescaling).
        cond_hidden: width of the conditional-flow coupling subnets (conv net).
        rrdb_blocks: RRDBs in the two trunks of each level's feature extractor.
        nf: feature width of the extractor; gc: its dense-block growth.
    """

    flow_steps: int
    cond_steps: int
    hidden: int
    cond_hidden: int
    rrdb_blocks: tuple[int, int]
    nf: int
    gc: int

    @classmethod
    def paper(cls, mode: str) -> Architecture:
        """Official ``train_SR_DF2K_4X_HCFlow.yml`` (K=26 with 13 after the split, FCN 64, RRDB [7,7],
        nf 64, gc 32) and ``train_Rescaling_DF2K_4X_HCFlow.yml`` (K=14 with 6 after the split,
        dense blocks 32, FCN 64, RRDB [2,1], nf 64, gc 16)."""
        if check_mode(mode) == "sr":
            return cls(flow_steps=13, cond_steps=13, hidden=64, cond_hidden=64, rrdb_blocks=(7, 7), nf=64, gc=32)
        return cls(flow_steps=8, cond_steps=6, hidden=32, cond_hidden=64, rrdb_blocks=(2, 1), nf=64, gc=16)

    def validate(self) -> Architecture:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "rrdb_blocks":
                value = tuple(value)
                if len(value) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in value):
                    raise ValueError(f"rrdb_blocks must be two non-negative ints, got {value!r}")
                continue
            minimum = 0 if f.name in ("flow_steps", "cond_steps") else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{f.name} must be an int >= {minimum}, got {value!r}")
        return replace(self, rrdb_blocks=tuple(self.rrdb_blocks))


# ------------------------------------------------------------------------------------------------
# the model
# ------------------------------------------------------------------------------------------------


class HCFlow(RescalingFlow):
    """Hierarchical conditional flow ``x (N,3,H,W) <-> [LR | z] (N, 3 s^2, H/s, W/s)``.

    Args:
        scale: 2, 4, 8, ...; ``L = log2(scale)`` levels.
        mode: ``"sr"`` or ``"rescale"`` (see the module docstring).
        hierarchical: condition level l on the coarser level's kept channels and features (the
            paper); ``False`` conditions every level on the upsampled LR image only.
        arch: sizes; defaults to :meth:`Architecture.paper` for the mode. Keyword arguments with
            the names of :class:`Architecture` fields override single sizes.

    ``HCFlow(**model.config())`` builds the same architecture; the training loop stores
    :meth:`config` in checkpoints as ``model_config`` (:func:`course_lib.hcflow.train.load_hcflow`).

    Paper: Liang et al. 2021 (ICCV), sec. 3 (the hierarchical conditional flow; equation numbers not verified) ·
    Book: chapter 6, section "The architecture, built from chapter 4's layers" · Official code: JingyunLiang/HCFlow,
    codes/models/modules/HCFlowNet_SR_arch.py:HCFlowNet_SR
    """

    def __init__(self, scale: int = 4, mode: str = "sr", *, hierarchical: bool = True,
                 arch: Architecture | None = None, **sizes):
        super().__init__()
        self.scale = check_scale(scale)
        self.mode = check_mode(mode)
        unknown = set(sizes) - {f.name for f in fields(Architecture)}
        if unknown:
            raise TypeError(f"unknown HCFlow size arguments {sorted(unknown)}; "
                            f"use fields of Architecture: {[f.name for f in fields(Architecture)]}")
        arch = arch if arch is not None else Architecture.paper(self.mode)
        self.arch = replace(arch, **{k: v for k, v in sizes.items() if v is not None}).validate()
        self.hierarchical = bool(hierarchical)
        self.n_levels = int(math.log2(self.scale))
        a = self.arch
        sr = self.mode == "sr"
        feat_channels = a.nf * (2 if sr else 1)
        self.feat_channels = feat_channels

        self.levels = nn.ModuleList()
        self.cond_nets = nn.ModuleList()
        self.cond_flows = nn.ModuleList()
        self.priors = nn.ModuleList()
        self.keep: list[int] = []
        self.off: list[int] = []
        c = CHANNELS
        for level in range(self.n_levels):
            down = Squeeze(2) if sr else HaarDownsampling(c)
            c *= 4
            steps = [self._main_step(c, k) for k in range(a.flow_steps)]
            self.levels.append(FlowSequential(down, *steps))
            keep = c // 2 if level < self.n_levels - 1 else CHANNELS
            self.keep.append(keep)
            self.off.append(c - keep)
            c = keep
        cond_subnet = functools.partial(ConvNet, hidden=a.cond_hidden)
        for level in range(self.n_levels):
            coarsest = level == self.n_levels - 1
            if not self.hierarchical or coarsest:
                in_channels = CHANNELS
            else:
                in_channels = self.keep[level] + feat_channels
            self.cond_nets.append(ConditionEncoder(in_channels, a.rrdb_blocks, a.nf, a.gc, two_features=sr))
            self.cond_flows.append(FlowSequential([
                glow_step(self.off[level], cond_subnet, lu=False, clamp=COUPLING_CLAMP, clamp_kind="atan",
                          cond_channels=feat_channels)
                for _ in range(a.cond_steps)
            ]))
            self.priors.append(Gaussianize(self.off[level], feat_channels,
                                           clamp=None if sr else COUPLING_CLAMP))
        self.out_channels = CHANNELS * self.scale**2

    def _main_step(self, channels: int, k: int) -> InvertibleModule:
        a = self.arch
        if self.mode == "sr":
            return glow_step(channels, functools.partial(ConvNet, hidden=a.hidden), lu=False,
                             clamp=COUPLING_CLAMP, clamp_kind="atan")
        dense = functools.partial(DenseBlock, growth=a.hidden)
        if k % 2 == 0:  # the LR channels (first 3) set an affine map of the others
            coupling = AffineCoupling(channels, dense, split_channels=CHANNELS, clamp=COUPLING_CLAMP,
                                      clamp_kind="atan")
        else:  # the others shift the LR channels
            coupling = AdditiveCoupling(channels, dense, split_channels=CHANNELS, swap=True)
        return FlowSequential(ActNorm(channels), coupling)

    # -- bookkeeping ------------------------------------------------------------------------------
    @property
    def tag(self) -> str:
        """Checkpoint tag, e.g. ``hcflow-sr-x4``; a checkpoint of another mode/scale is refused."""
        return f"hcflow-{self.mode}-x{self.scale}"

    def config(self) -> dict:
        """The constructor arguments (plain Python values): ``HCFlow(**config())`` rebuilds this
        architecture. Stored in checkpoints as ``model_config``."""
        return {"scale": self.scale, "mode": self.mode, "hierarchical": self.hierarchical,
                **{k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self.arch).items()}}

    def extra_repr(self) -> str:
        return f"scale={self.scale}, mode={self.mode!r}, hierarchical={self.hierarchical}, {self.arch}"

    # -- conditioning -----------------------------------------------------------------------------
    def features(self, level: int, kept: Tensor, lr: Tensor, coarser: Tensor | None) -> Tensor:
        """Conditioning features ``u_level`` from what the flow kept at that level (``kept``), the
        LR image and the coarser level's features (``None`` at the coarsest level)."""
        last = self.n_levels - 1
        if not self.hierarchical:
            factor = 2 ** (last - level)
            u = lr if factor == 1 else F.interpolate(lr, scale_factor=factor, mode="nearest")
        elif level == last:
            u = kept
        else:
            u = torch.cat([kept, F.interpolate(coarser, scale_factor=2, mode="nearest")], dim=1)
        return self.cond_nets[level](u)

    # -- the two directions -----------------------------------------------------------------------
    def _encode(self, x: Tensor) -> tuple[Tensor, list[Tensor], Tensor]:
        logdet = x.new_zeros(x.shape[0])
        kept, offs = [], []
        h = x
        for level, flow in enumerate(self.levels):
            h, ld = flow._forward(h, None)
            logdet = logdet + ld
            kept.append(h[:, : self.keep[level]])
            offs.append(h[:, self.keep[level]:])
            h = kept[-1]
        lr = h
        eps: list[Tensor] = [x] * self.n_levels
        feat = None
        for level in reversed(range(self.n_levels)):  # coarse to fine
            feat = self.features(level, kept[level], lr, feat)
            a, ld1 = self.cond_flows[level]._forward(offs[level], feat)
            e, ld2 = self.priors[level]._forward(a, feat)
            eps[level] = e
            logdet = logdet + ld1 + ld2
        return lr, eps, logdet

    def _decode(self, lr: Tensor, eps: list[Tensor], *, with_params: bool = False):
        h, feat = lr, None
        params: list = [None] * self.n_levels
        for level in reversed(range(self.n_levels)):  # coarse to fine
            feat = self.features(level, h, lr, feat)
            if with_params:
                params[level] = self.priors[level].params(eps[level], feat)
            a = self.priors[level]._inverse(eps[level], feat)
            a = self.cond_flows[level]._inverse(a, feat)
            h = self.levels[level]._inverse(torch.cat([h, a], dim=1), None)
        return (h, params) if with_params else h

    # -- images in, images out: the data offset --------------------------------------------------
    @property
    def data_offset(self) -> float:
        """``1 / (2 quant)`` for SR, 0 for rescaling: the mean of the dequantisation noise ``u / quant``,
        ``u ~ U(0, 1)``, that the SR likelihood adds to every training image (the official code's
        ``U(0, 1/quant)``, not the centred noise of SRFlow).

        The flow therefore models ``x' = x + u / quant``, and it learns ``F_y(x') = bicubic(x)``:
        on an image itself, ``F_y(x)`` is ``1 / (2 quant)`` (2 grey levels at quant 64) darker than the
        bicubic LR image, and a decoded sample ``x'`` is that much brighter than an image whose
        bicubic downscaling is the input. :meth:`encode` adds the offset and :meth:`decode` removes it,
        so the image-level functions (``downscale``, ``upscale``, ``sample``, ``evaluate``) work on
        images, and ``decode(encode(x)) = x`` still holds; ``forward`` and ``inverse`` stay the bare flow
        (the likelihood dequantises explicitly, :func:`course_lib.hcflow.losses.log_likelihood`).
        """
        return 0.5 / QUANT[self.mode] if self.mode == "sr" else 0.0

    def encode(self, hr: Tensor) -> tuple[Tensor, Tensor]:
        """HR -> (LR before quantisation, z) of ``hr + data_offset`` (:attr:`data_offset`)."""
        return super().encode(hr + self.data_offset)

    def decode(self, lr: Tensor, z: Tensor) -> Tensor:
        """(LR, z) -> HR, the flow's inverse minus :attr:`data_offset`: the exact inverse of :meth:`encode`."""
        return super().decode(lr, z) - self.data_offset

    # -- packing of the latents -------------------------------------------------------------------
    def pack(self, eps: list[Tensor]) -> Tensor:
        """Per-level latents ``eps[l]`` (l = 0 finest, at H/2^(l+1)) -> one (N, 3 s^2 - 3, h, w) tensor:
        coarsest first, each pixel-unshuffled to LR resolution."""
        if len(eps) != self.n_levels:
            raise ValueError(f"need {self.n_levels} latents (one per level), got {len(eps)}")
        last = self.n_levels - 1
        parts = []
        for level in reversed(range(self.n_levels)):
            e = eps[level]
            if e.shape[1] != self.off[level]:
                raise ValueError(f"latent of level {level} must have {self.off[level]} channels, got {e.shape[1]}")
            parts.append(e if level == last else F.pixel_unshuffle(e, 2 ** (last - level)))
        return torch.cat(parts, dim=1)

    def latents(self, z: Tensor) -> list[Tensor]:
        """Inverse of :meth:`pack`: (N, 3 s^2 - 3, h, w) -> ``[eps_0 (finest), ..., eps_{L-1}]``."""
        if z.dim() != 4 or z.shape[1] != self.z_channels:
            raise ValueError(f"z must have shape (N, {self.z_channels}, h, w), got {tuple(z.shape)}")
        last = self.n_levels - 1
        eps: list[Tensor] = [z] * self.n_levels
        start = 0
        for level in reversed(range(self.n_levels)):
            width = self.off[level] * 4 ** (last - level)
            block = z[:, start:start + width]
            eps[level] = block if level == last else F.pixel_shuffle(block, 2 ** (last - level))
            start += width
        return eps

    # -- the flows contract -----------------------------------------------------------------------
    def _forward(self, x: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor]:
        self._check_hr(x, "HCFlow.forward")
        lr, eps, logdet = self._encode(x)
        return torch.cat([lr, self.pack(eps)], dim=1), logdet

    def _inverse(self, z: Tensor, cond: Tensor | None) -> Tensor:
        self._check_packed(z, "HCFlow.inverse")
        return self._decode(z[:, :CHANNELS], self.latents(z[:, CHANNELS:]))

    def level_terms(self, x: Tensor) -> dict[str, Tensor]:
        """The pieces of ``log p`` per image (nats, shape (N,)), for looking inside the density:
        ``"main flow"`` = logdet of the squeezes and unconditional steps; ``"level l"`` =
        ``log N(eps_l; 0, I)`` + the logdets of level l's conditional flow and Gaussian, i.e.
        ``log p(a_l | coarser levels, LR)``; and ``"lr"``, the flow's LR output (a tensor)."""
        self._check_hr(x, "HCFlow.level_terms")
        from course_lib.flows import gaussian_log_prob

        out: dict[str, Tensor] = {"main flow": x.new_zeros(x.shape[0])}
        kept, offs = [], []
        h = x
        for level, flow in enumerate(self.levels):
            h, ld = flow._forward(h, None)
            out["main flow"] = out["main flow"] + ld
            kept.append(h[:, : self.keep[level]])
            offs.append(h[:, self.keep[level]:])
            h = kept[-1]
        feat = None
        for level in reversed(range(self.n_levels)):
            feat = self.features(level, kept[level], h, feat)
            a, ld1 = self.cond_flows[level]._forward(offs[level], feat)
            e, ld2 = self.priors[level]._forward(a, feat)
            out[f"level {level + 1}"] = gaussian_log_prob(e) + ld1 + ld2
        out["lr"] = h
        return out

    @torch.no_grad()
    def prior_parameters(self, lr: Tensor, z: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Mean and log-std of the conditional Gaussian of every level (index 0 = finest) when
        decoding ``(lr, z)``: the hierarchy means level l's parameters depend on ``lr`` and on the
        latents of the *coarser* levels only."""
        _, params = self._decode(lr, self.latents(z), with_params=True)
        return params


# ------------------------------------------------------------------------------------------------
# checkpoints made before they stored model_config
# ------------------------------------------------------------------------------------------------

# Order of the sizes in the ``arch_code`` buffer that HCFlows kept in their weights before the
# checkpoints stored ``model_config`` (the shipped hcflow_sr_x4.pt and hcflow_rescale_x4.pt).
LEGACY_ARCH_CODE = ("scale", "mode", "hierarchical", "flow_steps", "cond_steps", "hidden", "cond_hidden",
                    "rrdb0", "rrdb1", "nf", "gc")
LEGACY_MODES = ("sr", "rescale")  # the mode was stored as its index in this tuple


def legacy_config(weights: dict[str, Tensor]) -> dict:
    """The :meth:`HCFlow.config` of a checkpoint made before checkpoints stored it, read from the
    ``arch_code`` buffer of its weights (11 ints in the order of ``LEGACY_ARCH_CODE``; the
    mode as its index in ``LEGACY_MODES``). The loader drops that buffer before loading the weights."""
    if "arch_code" not in weights:
        raise ValueError("these weights hold neither a model_config nor the legacy HCFlow arch_code buffer")
    values = [int(v) for v in torch.as_tensor(weights["arch_code"]).reshape(-1).tolist()]
    if len(values) != len(LEGACY_ARCH_CODE) or not 0 <= values[1] < len(LEGACY_MODES):
        raise ValueError(f"not an HCFlow architecture code: {values}")
    code = dict(zip(LEGACY_ARCH_CODE, values))
    return {"scale": code["scale"], "mode": LEGACY_MODES[code["mode"]], "hierarchical": bool(code["hierarchical"]),
            "flow_steps": code["flow_steps"], "cond_steps": code["cond_steps"], "hidden": code["hidden"],
            "cond_hidden": code["cond_hidden"], "rrdb_blocks": [code["rrdb0"], code["rrdb1"]], "nf": code["nf"],
            "gc": code["gc"]}


# ------------------------------------------------------------------------------------------------
# many samples of one image
# ------------------------------------------------------------------------------------------------


@torch.no_grad()
def sample(model: HCFlow, lr: Tensor, n: int, temperature: float = 0.9,
           generator: torch.Generator | None = None) -> Tensor:
    """``n`` HR samples ``(n, 3, s h, s w)`` for one LR image ``(3, h, w)`` in [0, 1] (HCFlow's heat 0.9)."""
    y, _ = as_rgb_batch(lr, "lr", "sample")
    check_unit_range(y.detach(), "sample: lr")
    if y.shape[0] != 1:
        raise ValueError(f"sample takes one LR image (3, h, w), got a batch of {y.shape[0]}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    return upscale(model, y.expand(n, -1, -1, -1), temperature, generator)
