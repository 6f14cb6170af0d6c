"""Architecture and concept figures drawn by code, in one shared style.

Every chapter explains its architecture with a figure, as d2l and the UvA notebooks do. The figures
are drawn with matplotlib from the same objects the chapters use (a model's layer counts, an
operator's scale), so they stay true to the code, and ``tests/test_diagrams.py`` renders each one.

Primitives: :func:`new_diagram`, :func:`box`, :func:`arrow`, :func:`label` and the palette
``COLOURS`` (one colour per kind of thing: data, learned network, fixed operator, loss or
density, latent). Figures: :func:`degradation_pipeline` and :func:`sr_frameworks` (chapter 1),
:func:`range_null_space` (chapter 2), :func:`projection_layer` and :func:`image_sr_network` (chapter 3),
:func:`coupling_layer` and :func:`multiscale_glow` (chapter 4), :func:`irn_architecture` (chapter 5),
:func:`hcflow_hierarchy` (chapter 6), :func:`kernelgan_architecture` (chapter 7) and :func:`story_map`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "COLOURS",
    "new_diagram",
    "box",
    "arrow",
    "label",
    "degradation_pipeline",
    "projection_layer",
    "image_sr_network",
    "irn_architecture",
    "hcflow_hierarchy",
    "story_map",
    "sr_frameworks",
    "range_null_space",
    "coupling_layer",
    "multiscale_glow",
    "kernelgan_architecture",
]

# one colour per kind of thing, the same in every chapter
COLOURS = {
    "data": "#dbe9f6",      # images and measurements
    "network": "#fde2c4",   # learned networks
    "operator": "#d9f0d3",  # fixed linear operators (A, A^T, A^+)
    "loss": "#f6d5d9",      # losses, densities, discriminators
    "latent": "#e7dcf1",    # latent variables
    "plain": "#f2f2f2",
}
_EDGE = "#444444"


def new_diagram(width: float, height: float, *, scale: float = 1.0) -> tuple[plt.Figure, plt.Axes]:
    """A blank figure whose axes use diagram units: ``x`` in ``[0, width]``, ``y`` in ``[0, height]``."""
    fig, ax = plt.subplots(figsize=(width * scale, height * scale))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.set_aspect("equal")
    ax.axis("off")
    return fig, ax


def box(ax: plt.Axes, x: float, y: float, text: str, *, kind: str = "plain", width: float = 1.6,
        height: float = 0.7, fontsize: float = 10) -> tuple[float, float, float, float]:
    """A rounded box centred at ``(x, y)`` with ``text``; returns its extent ``(x0, y0, x1, y1)``."""
    if kind not in COLOURS:
        raise ValueError(f"kind must be one of {sorted(COLOURS)}, got {kind!r}")
    x0, y0 = x - width / 2, y - height / 2
    ax.add_patch(FancyBboxPatch((x0, y0), width, height, boxstyle="round,pad=0.02,rounding_size=0.12",
                                facecolor=COLOURS[kind], edgecolor=_EDGE, linewidth=1.0))
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize)
    return x0, y0, x0 + width, y0 + height


def arrow(ax: plt.Axes, start: tuple[float, float], end: tuple[float, float], text: str | None = None, *,
          style: str = "-|>", dashed: bool = False, fontsize: float = 9, offset: float = 0.18,
          rad: float = 0.0) -> None:
    """An arrow from ``start`` to ``end`` with an optional label beside its middle."""
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle=style, mutation_scale=12, color=_EDGE,
                                 linewidth=1.1, linestyle="--" if dashed else "-",
                                 connectionstyle=f"arc3,rad={rad}"))
    if text:
        mx, my = (start[0] + end[0]) / 2, (start[1] + end[1]) / 2
        ax.text(mx, my + offset, text, ha="center", va="bottom", fontsize=fontsize)


def label(ax: plt.Axes, x: float, y: float, text: str, *, fontsize: float = 9, **kw) -> None:
    """Free text in diagram units (centred)."""
    ax.text(x, y, text, ha=kw.pop("ha", "center"), va=kw.pop("va", "center"), fontsize=fontsize, **kw)


def _right(extent):
    return extent[2], (extent[1] + extent[3]) / 2


def _left(extent):
    return extent[0], (extent[1] + extent[3]) / 2


def _top(extent):
    return (extent[0] + extent[2]) / 2, extent[3]


def _bottom(extent):
    return (extent[0] + extent[2]) / 2, extent[1]


# --------------------------------------------------------------------------------- figures
def degradation_pipeline(scale: int = 4, *, noise: bool = True, jpeg: bool = False) -> plt.Figure:
    """Chapter 1: ``y = (x * k) downsampled by s + n`` (then JPEG), the observation model of the course."""
    steps = [("blur\n$\\mathbf{x} * \\mathbf{k}$", "operator"), (f"keep 1 pixel\nin {scale}×{scale}", "operator")]
    if noise:
        steps.append(("add noise\n$+\\,\\mathbf{n}$", "plain"))
    if jpeg:
        steps.append(("JPEG", "plain"))
    n = len(steps) + 2
    fig, ax = new_diagram(2.2 * n, 2.2, scale=0.8)
    extent = box(ax, 1.1, 1.0, "HR image\n$\\mathbf{x}$", kind="data")
    for i, (text, kind) in enumerate(steps, start=1):
        nxt = box(ax, 1.1 + 2.2 * i, 1.0, text, kind=kind)
        arrow(ax, _right(extent), _left(nxt))
        extent = nxt
    last = box(ax, 1.1 + 2.2 * (n - 1), 1.0, "LR image\n$\\mathbf{y}$", kind="data")
    arrow(ax, _right(extent), _left(last))
    label(ax, 1.1 + 2.2 * 1.5, 1.85, "the linear operator $\\mathbf{A}$ = BlurDownsample(k, s)", fontsize=9)
    ax.plot([1.1 + 2.2 - 0.85, 1.1 + 4.4 + 0.85], [1.6, 1.6], color=COLOURS["operator"], linewidth=4)
    return fig


def projection_layer(scale: int = 4) -> plt.Figure:
    """Chapter 3: the affine projection ``f(y) = (I - A^+ A) g(y) + A^+ y = g - A^+(A g - y)``.

    Whatever the network ``g`` outputs, ``A f(y) = y``: the network only chooses the null-space part.
    """
    fig, ax = new_diagram(11.5, 4.2, scale=0.8)
    y_box = box(ax, 1.0, 2.2, f"LR $\\mathbf{{y}}$\n(×1/{scale})", kind="data", width=1.4)
    g_box = box(ax, 3.2, 3.3, "network\n$g_\\theta(\\mathbf{y})$", kind="network")
    a_box = box(ax, 5.7, 3.3, "$\\mathbf{A}$\nblur, subsample", kind="operator", width=1.9)
    minus = box(ax, 7.7, 3.3, "$-\\,\\mathbf{y}$", kind="plain", width=0.9)
    p_box = box(ax, 9.5, 3.3, "$\\mathbf{A}^{+}$", kind="operator", width=1.1)
    out = box(ax, 9.5, 1.25, "$f = g - \\mathbf{A}^{+}(\\mathbf{A}g - \\mathbf{y})$\n"
              "$\\mathbf{A} f = \\mathbf{y}$ exactly", kind="data", width=2.8, height=0.9, fontsize=9)
    arrow(ax, _right(y_box), _left(g_box))
    arrow(ax, _right(g_box), _left(a_box), "$g$")
    arrow(ax, _right(a_box), _left(minus), "$\\mathbf{A}g$")
    arrow(ax, _right(minus), _left(p_box))
    arrow(ax, _bottom(p_box), _top(out))
    label(ax, 10.35, 2.3, "subtract", fontsize=9)
    arrow(ax, _bottom(g_box), _left(out), rad=0.2)
    label(ax, 7.0, 1.0, "$g$ (skip)", fontsize=9)
    arrow(ax, _bottom(y_box), _bottom(minus), dashed=True, rad=0.3)
    label(ax, 5.75, 0.25, "$\\mathbf{I} - \\mathbf{A}^{+}\\mathbf{A}$ projects onto the null space: "
          "the network only chooses what $\\mathbf{A}$ cannot see", fontsize=9)
    return fig


def image_sr_network(model: nn.Module) -> plt.Figure:
    """Chapter 3: the network ``g`` of the image experiment (an
    :class:`~course_lib.amortised_map.baselines.SRNet`, bare or inside a ``ProjectedNetwork``), its
    layers read from the model: convolutions at LR, the sub-pixel shuffle, convolutions at HR, the
    bicubic skip and, when the model is projected, the affine projection."""
    from torch import nn

    from ..amortised_map.baselines import SRNet

    net = getattr(model, "net", model)
    if not isinstance(net, SRNet):
        raise TypeError(f"image_sr_network needs an SRNet (or a ProjectedNetwork of one), got {type(model).__name__}")
    layers = list(net.body)
    shuffle = next(i for i, m in enumerate(layers) if isinstance(m, nn.PixelShuffle))
    lr_convs = [m for m in layers[:shuffle] if isinstance(m, nn.Conv2d)]
    hr_convs = [m for m in layers[shuffle:] if isinstance(m, nn.Conv2d)]
    s = net.scale
    blocks = [(f"{len(lr_convs) - 1} × 3×3 conv\n{lr_convs[0].out_channels} ch, ReLU\n(at LR)", "network", 0.0),
              (f"3×3 conv\n{lr_convs[-1].out_channels} ch", "network", 0.0),
              (f"sub-pixel\nshuffle ×{s}\n{lr_convs[-1].out_channels // s**2} ch", "plain", 1.0)]
    if hr_convs:
        blocks.append((f"{len(hr_convs)} × 3×3 conv\n(at HR)\n{hr_convs[0].in_channels} → "
                       f"{hr_convs[-1].out_channels} ch", "network", 1.0))
    projected = model is not net
    width = 2.2 * (len(blocks) + 3 + projected) + 0.6
    fig, ax = new_diagram(width, 3.6, scale=0.75)
    y = 2.3
    previous = box(ax, 1.2, y, "LR $\\mathbf{y}$", kind="data", width=1.1, height=0.6)
    start = previous
    for i, (text, kind, level) in enumerate(blocks, start=1):
        extent = box(ax, 1.2 + 2.2 * i, y, text, kind=kind, width=1.8, height=0.75 + 0.45 * level, fontsize=8)
        arrow(ax, _right(previous), _left(extent))
        previous = extent
    plus = box(ax, 1.2 + 2.2 * (len(blocks) + 1), y, "+", kind="plain", width=0.6, height=0.6, fontsize=12)
    arrow(ax, _right(previous), _left(plus))
    bicubic = box(ax, 1.2 + 2.2 * (len(blocks) + 1) / 2, 0.75, f"bicubic ×{s} (fixed)", kind="operator",
                  width=2.2, height=0.5, fontsize=8)
    arrow(ax, _bottom(start), _left(bicubic), rad=0.2)
    arrow(ax, _right(bicubic), _bottom(plus), rad=0.2)
    previous, x = plus, 1.2 + 2.2 * (len(blocks) + 1)
    if projected:
        x += 2.2
        proj = box(ax, x, y, "affine\nprojection\n$\\mathbf{A} f = \\mathbf{y}$", kind="operator", width=1.7,
                   height=0.95, fontsize=8)
        arrow(ax, _right(previous), _left(proj), "$g$")
        previous = proj
    out_text = "SR $f(\\mathbf{y})$" if projected else "SR $g(\\mathbf{y})$"
    out = box(ax, x + 2.0, y, out_text, kind="data", width=1.1, height=1.2)
    arrow(ax, _right(previous), _left(out))
    label(ax, width / 2, 3.35, "block height: the resolution it works at (LR or HR); orange: learned, green: fixed",
          fontsize=8.5, style="italic")
    return fig


def irn_architecture(model) -> plt.Figure:
    """Chapter 5: IRN's forward path ``x -> [Haar -> couplings] per stage -> [y | z]`` (top) and
    its inverse from the quantised LR image and a fresh ``z`` (bottom), with the three losses.

    ``model`` is an :class:`course_lib.irn.model.IRN`: the stages, couplings per stage and channel counts
    are read from it (3 channels, times 4 per Haar stage)."""
    blocks = list(getattr(model, "blocks", ()))
    if not blocks:
        raise TypeError(f"irn_architecture needs an IRN (with .blocks), got {type(model).__name__}")
    n = len(blocks)
    width = 3.0 + 3.6 * n + 4.4
    fig, ax = new_diagram(width, 6.2, scale=0.75)
    # forward path (top row)
    top, bottom = 4.6, 1.6
    x_box = box(ax, 1.2, top, "HR $\\mathbf{x}$\n3 channels", kind="data", width=1.6)
    previous, channels, x_pos = x_box, 3, 1.2
    stage_right = []
    for i, k in enumerate(blocks):
        channels *= 4
        x_pos += 2.0 if i == 0 else 1.8
        haar = box(ax, x_pos, top, "Haar\n(fixed)", kind="operator", width=1.2)
        arrow(ax, _right(previous), _left(haar))
        x_pos += 1.8
        coup = box(ax, x_pos, top, f"{k} couplings\n{channels} channels", kind="network", width=1.9)
        arrow(ax, _right(haar), _left(coup))
        previous = coup
        stage_right.append(x_pos)
    x_pos += 2.2
    y_box = box(ax, x_pos, top + 0.75, "$\\mathbf{y}$: 3 channels\n(the LR image)", kind="data", width=2.2)
    z_box = box(ax, x_pos, top - 0.75, f"$\\mathbf{{z}}$: {channels - 3} channels", kind="latent", width=2.2)
    arrow(ax, _right(previous), _left(y_box))
    arrow(ax, _right(previous), _left(z_box))
    label(ax, x_pos + 1.5, top + 0.75, "guide:\n$\\|\\mathbf{y} - \\mathrm{bicubic}(\\mathbf{x})\\|^2$",
          fontsize=8, ha="left")
    label(ax, x_pos + 1.5, top - 0.75, "distr:\n$\\|\\mathbf{z}\\|^2$", fontsize=8, ha="left")
    # inverse path (bottom row)
    q_box = box(ax, x_pos, bottom + 0.75, "$Q(\\mathbf{y})$: 8-bit", kind="operator", width=2.2)
    zf_box = box(ax, x_pos, bottom - 0.75, "fresh $\\mathbf{z}' \\sim \\mathcal{N}(0, T^2 I)$",
                 kind="latent", width=2.6)
    arrow(ax, _right(y_box), _right(q_box), rad=-0.45)
    previous = None
    for right in reversed(stage_right):
        inv = box(ax, right, bottom, "inverse\ncouplings", kind="network", width=1.9)
        if previous is None:
            arrow(ax, _left(q_box), _right(inv))
            arrow(ax, _left(zf_box), _right(inv))
        else:
            arrow(ax, _left(previous), _right(inv))
        ihaar = box(ax, right - 1.8, bottom, "Haar$^{-1}$", kind="operator", width=1.2)
        arrow(ax, _left(inv), _right(ihaar))
        previous = ihaar
    xr_box = box(ax, 1.2, bottom, "$\\hat{\\mathbf{x}}$", kind="data", width=1.2)
    arrow(ax, _left(previous), _right(xr_box))
    label(ax, 1.2, bottom - 0.8, "recon: $|\\mathbf{x} - \\hat{\\mathbf{x}}|$", fontsize=8)
    label(ax, width / 2, 5.95, "forward: downscale ($\\mathbf{z}$ is discarded)", fontsize=9, style="italic")
    label(ax, width / 2, 0.25, "inverse: upscale (the same weights, run backwards)", fontsize=9, style="italic")
    return fig


def hcflow_hierarchy(model) -> plt.Figure:
    """Chapter 6: HCFlow's bijection ``x -> (LR, a_1, ..., a_L)`` (top row, fine to coarse) and
    its hierarchical conditioning (bottom rows, coarse to fine): the features ``u_l`` of level ``l``
    come from what the flow kept at that level and the coarser features ``u_{l+1}``, and they set
    the conditional flow and Gaussian that turn ``a_l`` into ``eps_l``.

    ``model`` is an :class:`course_lib.hcflow.model.HCFlow`: the levels, steps and channel counts are read
    from it. A model built with ``hierarchical=False`` is drawn with every level conditioned on the
    LR image only."""
    levels = getattr(model, "levels", None)
    if levels is None or not hasattr(model, "keep"):
        raise TypeError(f"hcflow_hierarchy needs an HCFlow (with .levels and .keep), got {type(model).__name__}")
    n = len(levels)
    arch, sr = model.arch, model.mode == "sr"
    down = "squeeze" if sr else "Haar"
    step = 4.2
    width = 3.2 + step * n + 1.6
    fig, ax = new_diagram(width, 7.0, scale=0.72)
    top, mid, bottom = 5.6, 3.45, 1.3
    previous = box(ax, 1.1, top, "HR $\\mathbf{x}$\n3 ch, $H \\times W$", kind="data", width=1.7)
    channels = 3
    flow_x: list[float] = []
    for level in range(n):
        channels *= 4
        x = 3.6 + step * level
        flow_x.append(x)
        flow = box(ax, x, top, f"{down} + {arch.flow_steps} steps\n{channels} ch, "
                   f"$H/{2 ** (level + 1)}$", kind="network", width=2.3, fontsize=9)
        arrow(ax, _right(previous), _left(flow),
              None if level == 0 else f"$\\mathbf{{y}}_{level}$: {model.keep[level - 1]} ch", fontsize=8)
        previous = flow
        channels = model.keep[level]
    lr_x = 3.6 + step * n - 0.6
    lr_box = box(ax, lr_x, top, f"LR $\\mathbf{{y}}$\n3 ch, $H/{2 ** n}$", kind="data", width=1.5)
    arrow(ax, _right(previous), _left(lr_box))
    label(ax, lr_x, top + 0.8, "scored by $\\mathcal{N}(\\mathbf{y}^*; \\mathbf{y}, e^{-12} I)$", fontsize=8)
    encoders: list[tuple[float, float, float, float]] = [()] * n  # type: ignore[list-item]
    for level in reversed(range(n)):
        coarsest = level == n - 1
        ex = lr_x if coarsest else flow_x[level] + step / 2
        if coarsest:
            text = f"$E_{{{level + 1}}}(\\mathbf{{y}})$"
        elif model.hierarchical:
            text = f"$E_{{{level + 1}}}(\\mathbf{{y}}_{{{level + 1}}}, \\uparrow u_{{{level + 2}}})$"
        else:
            text = f"$E_{{{level + 1}}}(\\uparrow\\mathbf{{y}})$"
        enc = box(ax, ex, mid, text, kind="network", width=2.2, fontsize=9)
        encoders[level] = enc
        if coarsest or not model.hierarchical:
            arrow(ax, _bottom(lr_box) if coarsest else (lr_x - 0.5, top - 0.35), _top(enc),
                  dashed=not coarsest, rad=0.0 if coarsest else -0.25)
        else:
            arrow(ax, (ex, top), _top(enc))  # y_{l+1}, what the flow kept at this level
            arrow(ax, _left(encoders[level + 1]), _right(enc), f"$u_{{{level + 2}}}$, ×2", fontsize=8)
        cond = box(ax, flow_x[level], bottom, f"{arch.cond_steps} cond. steps +\n"
                   "$\\mathcal{N}(\\mu(u), \\sigma(u))$", kind="loss", width=2.4, fontsize=9)
        arrow(ax, _bottom(encoders[level]), _right(cond), f"$u_{{{level + 1}}}$", fontsize=8, offset=0.05)
        arrow(ax, (flow_x[level] - 0.6, top - 0.35), (flow_x[level] - 0.6, bottom + 0.35))
        label(ax, flow_x[level] - 0.45, (top + mid) / 2, f"$\\mathbf{{a}}_{level + 1}$: {model.off[level]} ch",
              fontsize=8, ha="left")
        label(ax, flow_x[level], bottom - 0.75, f"$\\boldsymbol{{\\epsilon}}_{level + 1} \\sim \\mathcal{{N}}(0, I)$",
              fontsize=9)
    note = ("hierarchical: level $l$ sees the coarser levels' latents through $\\mathbf{y}_l$ and $u_{l+1}$"
            if model.hierarchical else "flat baseline: every level sees the LR image only")
    label(ax, width / 2, 6.75, "encoding: fine to coarse (left to right);  conditioning: coarse to fine "
          "(right to left)", fontsize=9, style="italic")
    label(ax, width / 2, 0.15, note, fontsize=9, style="italic")
    return fig


STORY = [
    ("1 Fundamentals", "the mean:\nMSE → blur", "data"),
    ("2 Ill-posedness", "null space,\nposterior mean", "operator"),
    ("3 Amortised MAP", "the mode:\nAffGAN / DG / LL", "network"),
    ("4 Flows", "exact densities\nand samples", "latent"),
    ("5 IRN", "rescaling:\nHR ↔ (LR, z)", "latent"),
    ("6 HCFlow", "sample p(x | y),\nhierarchy", "latent"),
    ("7 KernelGAN", "blind: estimate\nthe operator", "loss"),
]


def story_map() -> plt.Figure:
    """The course as one path: mean → MAP → sample → rescaling → blind."""
    n = len(STORY)
    fig, ax = new_diagram(2.1 * n, 2.6, scale=0.8)
    previous = None
    for i, (title, text, kind) in enumerate(STORY):
        extent = box(ax, 1.05 + 2.1 * i, 1.1, text, kind=kind, width=1.75, height=1.0, fontsize=9)
        label(ax, 1.05 + 2.1 * i, 2.0, title, fontsize=9.5, fontweight="bold")
        if previous is not None:
            arrow(ax, _right(previous), _left(extent))
        previous = extent
    label(ax, 1.05 * n, 0.25, "known A: a point estimate (ch. 1-3), then distributions with flows (ch. 4-6); "
          "unknown A: estimate it (ch. 7)", fontsize=9, style="italic")
    return fig


# --------------------------------------------------------------------------------- chapter 1
def _convs(module) -> list:
    from torch import nn

    return [m for m in module.modules() if isinstance(m, nn.Conv2d)]


def _conv_text(conv) -> str:
    k = conv.kernel_size[0]
    return f"{k}×{k} conv\n{conv.out_channels} ch"


def _framework_rows(models: Mapping[str, nn.Module], scale: int) -> list[tuple[str, list[tuple[str, str, float]]]]:
    """For each framework, its blocks as ``(text, kind, level)``: ``level`` is log_scale of the
    resolution the block works at (0 = LR, 1 = HR)."""
    from ..models import IterativeSR, PostUpsamplingSR, PreUpsamplingSR, ProgressiveSR

    expected = {"pre-upsampling": PreUpsamplingSR, "post-upsampling": PostUpsamplingSR,
                "progressive": ProgressiveSR, "iterative": IterativeSR}
    rows = []
    for name, model in models.items():
        if name not in expected:
            raise ValueError(f"unknown framework {name!r}; sr_frameworks draws {sorted(expected)}")
        if not isinstance(model, expected[name]):
            raise TypeError(f"sr_frameworks: {name!r} must be a {expected[name].__name__}, "
                            f"got {type(model).__name__}")
        if model.scale != scale:
            raise ValueError(f"sr_frameworks: the {name} model upscales x{model.scale}, the figure x{scale}")
        title = f"{name}\n({type(model).__name__})"
        if name == "pre-upsampling":
            blocks = [(f"bicubic ×{scale}\n(fixed)", "operator", 1.0)]
            blocks += [(_conv_text(c), "network", 1.0) for c in _convs(model.body)]
        elif name == "post-upsampling":
            blocks = [(_conv_text(c), "network", 0.0) for c in _convs(model.body)]
            blocks.append((f"sub-pixel\nconv ×{scale}", "network", 1.0))
        elif name == "progressive":
            blocks = [(_conv_text(c), "network", 0.0) for c in _convs(model.head)]
            for i, stage in enumerate(model.stages, start=1):
                depth = len(_convs(stage.refine))
                up = "deconv" if type(stage.up_features).__name__ == "ConvTranspose2d" else "sub-pixel"
                blocks.append((f"stage {i}\n{depth} convs\n+ {up} ×2", "network", i / len(model.stages)))
        else:
            blocks = [(f"head\n{len(_convs(model.head))} convs", "network", 0.0)]
            for i, _ in enumerate(model.ups):
                blocks.append(("up-\nprojection ↑", "network", 1.0))
                if i < len(model.downs):
                    blocks.append(("down-\nprojection ↓", "network", 0.0))
            blocks.append((f"concat\n{len(model.ups)} HR maps\n+ conv", "network", 1.0))
        rows.append((title, blocks))
    return rows


def sr_frameworks(models: Mapping[str, nn.Module] | None = None, scale: int = 4) -> plt.Figure:
    """Chapter 1: the four SR frameworks, one row each, ``LR -> blocks -> SR``.

    A block's height shows the resolution it works at (LR, intermediate, HR), so the row shows where
    the image gets bigger. ``models`` maps framework names (``"pre-upsampling"``,
    ``"post-upsampling"``, ``"progressive"``, ``"iterative"``) to the models of
    ``course_lib.models``; their layers are read from them. By default the four are built with
    ``build_framework(name, scale)``.
    """
    if models is None:
        from ..models import FRAMEWORKS, build_framework

        models = {name: build_framework(name, scale) for name in FRAMEWORKS}
    rows = _framework_rows(models, scale)
    residual = all(getattr(m, "residual", True) and all(type(st.up_image).__name__ == "BicubicUpsample"
                                                         for st in getattr(m, "stages", []))
                   for m in models.values())
    longest = max(len(blocks) for _, blocks in rows)
    step, row_height = 1.75, 1.55
    width = 2.6 + step * (longest + 2)
    height = row_height * len(rows) + 0.9
    fig, ax = new_diagram(width, height, scale=0.72)

    def block_height(level: float) -> float:
        return 0.5 + 0.55 * level

    for r, (title, blocks) in enumerate(rows):
        y = height - 0.35 - row_height * (r + 0.5)
        label(ax, 1.15, y, title, fontsize=9, fontweight="bold")
        previous = box(ax, 2.6 + step * 0.5, y, "LR", kind="data", width=1.1, height=block_height(0.0))
        for i, (text, kind, level) in enumerate(blocks, start=1):
            extent = box(ax, 2.6 + step * (i + 0.5), y, text, kind=kind, width=1.5, height=block_height(level),
                         fontsize=8)
            arrow(ax, _right(previous), _left(extent))
            previous = extent
        last = box(ax, 2.6 + step * (len(blocks) + 1.5), y, f"SR ×{scale}", kind="data", width=1.1,
                   height=block_height(1.0))
        arrow(ax, _right(previous), _left(last))
    note = "block height = the resolution it works at (LR … HR); green: fixed, orange: learned"
    if residual:
        note += "; every model adds a bicubic enlargement of its input (global residual)"
    label(ax, width / 2, 0.3, note, fontsize=8.5, style="italic")
    return fig


# --------------------------------------------------------------------------------- chapter 2
def range_null_space(operator_shape: tuple[int, int] | None = None) -> plt.Figure:
    """Chapter 2: the geometry of ``y = A x`` drawn in two HR dimensions.

    All HR images with the same LR image ``y`` form the affine set ``A^+ y + N(A)`` (a line
    parallel to the null space); ``A^+ y`` is its point of smallest norm, in the row space
    ``R(A^T)``; every solution splits into ``A^+ y`` plus a null-space part, and ``project``
    moves any ``z`` onto the set along the row space. ``operator_shape = (m, n)``, the shape of
    the chapter's matrix, labels the real dimensions.
    """
    import math

    hr_name, lr_name, note = "HR space", "LR space", None
    if operator_shape is not None:
        m, n = (int(v) for v in operator_shape)
        if not 0 < m <= n:
            raise ValueError(f"operator_shape must be (m, n) with 0 < m <= n, got {operator_shape}")
        hr_name, lr_name = f"HR space $\\mathbb{{R}}^{{{n}}}$", f"LR space $\\mathbb{{R}}^{{{m}}}$"
        note = (f"here $\\mathbf{{A}}$ is {m} × {n}: its null space has dimension n - m = {n - m}, "
                f"its row space {m}")
    fig, ax = new_diagram(12.6, 6.4, scale=0.75)
    o, angle = (1.2, 1.5), math.radians(20)
    u_a = (math.cos(angle), math.sin(angle))     # row space: the directions A sees
    u_n = (-math.sin(angle), math.cos(angle))    # null space: A maps them to 0

    def at(a: float, n: float) -> tuple[float, float]:
        return o[0] + a * u_a[0] + n * u_n[0], o[1] + a * u_a[1] + n * u_n[1]

    red, d = "#c0392b", 4.0  # d = |A^+ y|
    ax.plot(*zip(at(-0.5, 0), at(6.6, 0)), color=COLOURS["operator"], linewidth=7, solid_capstyle="round")
    label(ax, *at(6.8, 0), "row space $\\mathcal{R}(\\mathbf{A}^\\top)$", fontsize=9, ha="left")
    ax.plot(*zip(at(0, -1.0), at(0, 3.0)), color="#888888", linestyle="--", linewidth=1.2)
    foot = at(0, -0.95)
    label(ax, foot[0] + 0.2, foot[1] + 0.1, "null space $\\mathcal{N}(\\mathbf{A})$: $\\mathbf{A}\\mathbf{n} = 0$",
          fontsize=9, ha="left")
    ax.plot(*zip(at(d, -1.9), at(d, 3.0)), color=red, linewidth=2.2)
    label(ax, *at(d + 0.25, -1.75), "all HR images with the same $\\mathbf{y}$:\n"
          "$\\mathbf{A}^{+}\\mathbf{y} + \\mathcal{N}(\\mathbf{A})$", fontsize=9, ha="left")
    ax.plot(*o, "o", color=_EDGE, markersize=4)
    label(ax, o[0] - 0.1, o[1] - 0.3, "0", fontsize=9)
    arrow(ax, o, at(d, 0))
    label(ax, *at(d / 2, -0.4), "$\\mathbf{A}^{+}\\mathbf{A}\\mathbf{x}$", fontsize=9)
    corner = [at(d - 0.3, 0), at(d - 0.3, 0.3), at(d, 0.3)]
    ax.plot(*zip(*corner), color=_EDGE, linewidth=0.8)
    ax.plot(*at(d, 0), "o", color=red, markersize=7)
    label(ax, *at(d + 0.3, 0.4), "$\\mathbf{A}^{+}\\mathbf{y}$: minimum norm", fontsize=9, ha="left")
    x = at(d, 1.3)
    arrow(ax, at(d, 0), x)
    ax.plot(*x, "o", color=_EDGE, markersize=6)
    label(ax, x[0] + 0.25, x[1] + 0.1, "$\\mathbf{x} = \\mathbf{A}^{+}\\mathbf{y} + \\mathbf{n}$", fontsize=9,
          ha="left")
    label(ax, *at(d - 0.25, 0.65), "$\\mathbf{n} = (\\mathbf{I} - \\mathbf{A}^{+}\\mathbf{A})\\mathbf{x}$",
          fontsize=9, ha="right")
    z = at(d - 2.2, 2.3)
    ax.plot(*z, "o", color="#555555", markersize=5)
    arrow(ax, z, at(d, 2.3), dashed=True)
    label(ax, z[0] - 0.15, z[1], "$\\mathbf{z}$", fontsize=10, ha="right")
    label(ax, z[0] - 0.4, z[1] + 0.5, "project: $\\mathbf{z} - \\mathbf{A}^{+}(\\mathbf{A}\\mathbf{z} - "
          "\\mathbf{y})$", fontsize=9, ha="left")
    lx0, lx1, ly, y_at = 9.9, 12.3, 2.9, 11.1
    ax.plot([lx0, lx1], [ly, ly], color=_EDGE, linewidth=1.2)
    ax.plot([y_at], [ly], "o", color=red, markersize=7)
    label(ax, y_at, ly - 0.35, "$\\mathbf{y}$", fontsize=11)
    label(ax, 0.2, 6.15, hr_name + " (two of its dimensions)", fontsize=10, fontweight="bold", ha="left")
    label(ax, y_at, 3.6, lr_name, fontsize=10, fontweight="bold")
    arrow(ax, (x[0] + 2.6, x[1] + 0.9), (y_at - 0.3, ly + 0.25), "$\\mathbf{A}$", rad=-0.3, fontsize=11)
    arrow(ax, (y_at - 0.2, ly - 0.25), (at(d, 0)[0] + 0.2, at(d, 0)[1] - 0.15), "$\\mathbf{A}^{+}$",
          rad=-0.25, dashed=True, fontsize=11, offset=-0.85)
    if note:
        label(ax, 6.3, 0.2, note, fontsize=9, style="italic")
    return fig


# --------------------------------------------------------------------------------- chapter 4
def coupling_layer(layer: nn.Module | None = None) -> plt.Figure:
    """Chapter 4: an affine coupling layer, forward (top) and inverse (bottom).

    The input is split into ``x_a`` and ``x_b``; a subnet computes ``s, t`` from ``x_a`` alone, so
    the inverse reuses it and never inverts it; ``log|det J| = sum s``. With ``layer`` (an
    ``AffineCoupling`` of ``course_lib.flows``) the channel counts, the subnet's class and the soft
    clamp are read from it.
    """
    sizes, subnet, clamp = ("", ""), "subnet", ""
    if layer is not None:
        needed = ("channels_a", "channels_b", "subnet", "clamp_kind", "clamp")
        if not all(hasattr(layer, n) for n in needed):
            raise TypeError(f"coupling_layer needs an AffineCoupling, got {type(layer).__name__}")
        sizes = (f"\n{layer.channels_a} ch", f"\n{layer.channels_b} ch")
        subnet = f"subnet\n{type(layer.subnet).__name__}"
        clamp = "" if layer.clamp_kind == "none" else f";  $s$ soft-clamped ({layer.clamp_kind}, {layer.clamp:g})"
    fig, ax = new_diagram(12.2, 7.8, scale=0.75)
    halves = {
        "forward": (5.75, "$\\mathbf{x}$", "$\\mathbf{z}$", "$\\mathbf{x}_a$", "$\\mathbf{x}_b$",
                    "$\\mathbf{z}_b = \\mathbf{x}_b \\odot e^{s} + t$", "$\\mathbf{z}_a = \\mathbf{x}_a$"),
        "inverse": (1.75, "$\\mathbf{z}$", "$\\mathbf{x}$", "$\\mathbf{z}_a$", "$\\mathbf{z}_b$",
                    "$\\mathbf{x}_b = (\\mathbf{z}_b - t) \\odot e^{-s}$", "$\\mathbf{x}_a = \\mathbf{z}_a$"),
    }
    for direction, (top, source, target, a_name, b_name, formula, passes) in halves.items():
        ya, yb = top + 0.7, top - 0.7
        src = box(ax, 0.7, top, source, kind="data", width=0.9)
        split = box(ax, 2.1, top, "split", kind="operator", width=1.0)
        arrow(ax, _right(src), _left(split))
        a_box = box(ax, 3.8, ya, a_name + sizes[0], kind="data", width=1.4, height=0.75, fontsize=9)
        b_box = box(ax, 3.8, yb, b_name + sizes[1], kind="data", width=1.4, height=0.75, fontsize=9)
        arrow(ax, _right(split), _left(a_box))
        arrow(ax, _right(split), _left(b_box))
        net = box(ax, 6.0, ya, subnet + "\n$(s, t)$", kind="network", width=1.6, height=0.9, fontsize=9)
        arrow(ax, _right(a_box), _left(net))
        combine = box(ax, 7.9, yb, formula, kind="operator", width=2.7, height=0.75, fontsize=9)
        arrow(ax, _right(b_box), _left(combine))
        arrow(ax, _bottom(net), (combine[0] + 0.6, combine[3]), "$s, t$", offset=-0.05)
        merge = box(ax, 10.2, top, "concat", kind="operator", width=1.0)
        arrow(ax, _top(a_box), _top(merge), rad=-0.25)
        label(ax, 7.0, ya + 0.95, passes + ": passes unchanged", fontsize=8.5, style="italic")
        arrow(ax, _right(combine), _left(merge))
        out = box(ax, 11.5, top, target, kind="data", width=0.9)
        arrow(ax, _right(merge), _left(out))
        label(ax, 0.25, top + 1.15, direction, fontsize=10, fontweight="bold", ha="left")
    label(ax, 6.1, 3.95, "$\\log|\\det J| = \\sum_i s_i(\\mathbf{x}_a)$: the Jacobian is triangular" + clamp,
          fontsize=9)
    label(ax, 6.1, 0.3, "the inverse runs the same subnet on the same $\\mathbf{x}_a$: $s$ and $t$ never "
          "need to be inverted", fontsize=9, style="italic")
    return fig


def multiscale_glow(model: nn.Module, shape: tuple[int, int, int] | None = None) -> plt.Figure:
    """Chapter 4: Glow's multi-scale architecture, read from a ``course_lib.flows.Glow``.

    Each level: squeeze (space to depth), ``K`` flow steps (ActNorm, invertible 1x1 convolution,
    coupling), then a split that factors out half of the channels as a latent ``z_i``; the kept half
    goes on to the next level. The number of levels ``L``, of steps ``K`` and the channel counts
    come from ``model``; with ``shape = (C, H, W)`` the latents' shapes are shown too.
    """
    levels, splits = getattr(model, "levels", None), getattr(model, "splits", None)
    if levels is None or splits is None or not hasattr(model, "latent_shapes"):
        raise TypeError(f"multiscale_glow needs a multi-scale flow such as Glow, got {type(model).__name__}")
    n_levels = len(levels)
    steps = [len(level.layers) - 1 for level in levels]
    latents = model.latent_shapes(shape) if shape is not None else None
    row, width = 1.5, 12.9
    height = 1.35 + row * n_levels
    fig, ax = new_diagram(width, height, scale=0.75)
    first = levels[0].layers[1].layers if steps[0] else []
    names = {"ActNorm": "ActNorm", "InvertibleConv1x1": "invertible 1×1 conv"}
    kinds = ", ".join(names.get(type(m).__name__, type(m).__name__.replace("Coupling", " coupling").lower())
                      for m in first)
    label(ax, width / 2, height - 0.3, f"one flow step = {kinds}", fontsize=9.5, style="italic")
    y0 = height - 1.05
    in_text = "$\\mathbf{x}$" + (f"\n{shape[0]}×{shape[1]}×{shape[2]}" if shape is not None else "")
    previous = box(ax, 0.75, y0, in_text, kind="data", width=1.2, height=0.75, fontsize=9)
    spatial = None if shape is None else shape[1]
    for i, level in enumerate(levels):
        y = y0 - row * i
        down = type(level.layers[0]).__name__
        sq = box(ax, 2.55, y, "squeeze" if down == "Squeeze" else "Haar", kind="operator", width=1.3)
        if i == 0:
            arrow(ax, _right(previous), _left(sq))
        else:  # the kept half goes down to the next level
            x_split, channel = _bottom(previous)[0], y + row / 2
            ax.plot([x_split, x_split, 1.55, 1.55], [previous[1], channel, channel, y], color=_EDGE, linewidth=1.1)
            arrow(ax, (1.55, y), _left(sq))
            label(ax, 4.8, channel + 0.13, "the kept half", fontsize=8, style="italic")
        channels = getattr(level.layers[1].layers[0], "channels", "?") if steps[i] else "?"
        if spatial is not None:
            spatial //= 2
        size = f"{channels} channels" if spatial is None else f"{channels}×{spatial}×{spatial}"
        steps_box = box(ax, 5.2, y, f"level {i + 1}: {steps[i]} × flow step\non {size}", kind="network",
                        width=3.0, height=0.75, fontsize=9)
        arrow(ax, _right(sq), _left(steps_box))
        z_text = f"$\\mathbf{{z}}_{{{i + 1}}}$" + ("" if latents is None else " " + "×".join(map(str, latents[i])))
        if i < len(splits):
            sp = box(ax, 7.85, y, f"split\nkeep {splits[i].keep_channels}", kind="operator", width=1.3, fontsize=9)
            arrow(ax, _right(steps_box), _left(sp))
            z_box = box(ax, 10.95, y, z_text + f"\n{splits[i].off_channels} ch, N(μ, σ) from the kept half",
                        kind="latent", width=3.7, height=0.75, fontsize=8.5)
            arrow(ax, _right(sp), _left(z_box))
            previous = sp
        else:
            z_box = box(ax, 10.95, y, z_text + "\n~ N(0, I)", kind="latent", width=3.7, height=0.75, fontsize=8.5)
            arrow(ax, _right(steps_box), _left(z_box))
    k_text = f"K = {steps[0]}" if len(set(steps)) == 1 else "K = " + "/".join(map(str, steps))
    level_text = f"L = {n_levels} level" + ("s" if n_levels > 1 else "")
    label(ax, width / 2, 0.3, f"{level_text}, {k_text} steps per level; the latents hold as many "
          "numbers as x: the flow is a bijection", fontsize=9, style="italic")
    return fig


# --------------------------------------------------------------------------------- chapter 7
def kernelgan_architecture(generator: nn.Module, discriminator: nn.Module, *, crop: int = 64) -> plt.Figure:
    """Chapter 7: KernelGAN's two players, read from its ``DeepLinearGenerator`` and
    ``KernelGANDiscriminator``.

    G is a deep *linear* network: its layers compose into one kernel ``k_G`` (side
    ``sum(k - 1) + 1``) followed by subsampling. D is fully convolutional: it gives one real/fake
    probability per patch of its receptive field, for crops of the LR image (real) and of
    ``G(crop)`` (fake). The regularisers act on ``k_G``.
    """
    from torch import nn

    g_convs = [m for m in getattr(generator, "layers", []) if isinstance(m, nn.Conv2d)]
    d_modules = list(getattr(discriminator, "net", []))
    d_convs = [m for m in d_modules if isinstance(m, nn.Conv2d)]
    if not g_convs or not hasattr(generator, "kernel_size"):
        raise TypeError(f"kernelgan_architecture needs a DeepLinearGenerator, got {type(generator).__name__}")
    if not d_convs:
        raise TypeError(f"kernelgan_architecture needs a KernelGANDiscriminator, got {type(discriminator).__name__}")
    k, scale = generator.kernel_size, generator.scale
    g_out = (crop - k) // scale + 1
    receptive = d_convs[0].kernel_size[0]
    d_out = g_out - receptive + 1
    if d_out < 1:
        raise ValueError(f"a {crop}x{crop} crop is too small: G outputs {g_out}x{g_out}, "
                         f"D sees {receptive}x{receptive} patches")
    n, step = len(g_convs), 1.3
    x_fake = 2.4 + step * n + 0.5
    width = x_fake + 4.2
    fig, ax = new_diagram(width, 6.4, scale=0.72)
    yg = 5.0
    previous = box(ax, 0.9, yg, f"LR crop\n{crop}×{crop}", kind="data", width=1.4)
    for i, conv in enumerate(g_convs):
        ks, stride = conv.kernel_size[0], conv.stride[0]
        text = f"{ks}×{ks}\n{conv.in_channels}→{conv.out_channels}" + (f"\nstride {stride}" if stride > 1 else "")
        extent = box(ax, 2.4 + step * i, yg, text, kind="network", width=1.05, height=0.95, fontsize=8)
        arrow(ax, _right(previous), _left(extent))
        previous = extent
    g_mid = 2.4 + step * (n - 1) / 2
    label(ax, g_mid, yg + 0.85, f"G: {n} linear convolutions (no bias, no activation), each colour channel alone",
          fontsize=9)
    fake = box(ax, x_fake, yg, f"G(crop)\n{g_out}×{g_out}", kind="data", width=1.3)
    arrow(ax, _right(previous), _left(fake))
    real = box(ax, x_fake + 2.2, yg, f"real crop of\nthe LR image\n{g_out}×{g_out}", kind="data", width=1.6,
               height=0.95, fontsize=9)
    big = [c.kernel_size[0] for c in g_convs if c.kernel_size[0] > 1]
    sum_text = f" ({k} = {' + '.join(map(str, big))} − {len(big) - 1})" if len(big) > 1 else ""
    k_box = box(ax, g_mid, 3.35, f"together: one {k}×{k} kernel $\\mathbf{{k}}_G${sum_text},\n"
                f"then keep 1 pixel in {scale}×{scale}", kind="operator", width=min(step * n, 6.8), height=0.8,
                fontsize=9)
    arrow(ax, (g_mid, yg - 0.5), _top(k_box), "a delta through the layers gives $\\mathbf{k}_G$", offset=-0.08,
          fontsize=8)
    reg = box(ax, g_mid, 1.85, "$\\mathcal{R}(\\mathbf{k}_G)$: sum to 1, boundaries, sparsity, centre;\n"
              "bicubic prior on G(crop) at the start", kind="loss", width=min(step * n, 6.8), height=0.8,
              fontsize=9)
    arrow(ax, _bottom(k_box), _top(reg))
    xd = x_fake + 1.1
    n_mid = sum(1 for m in d_modules if isinstance(m, nn.BatchNorm2d))
    d_text = (f"D: {receptive}×{receptive} conv, {d_convs[0].out_channels} ch,\n"
              f"{n_mid} × (1×1 conv, BN, ReLU),\n1×1 conv, sigmoid")
    d_box = box(ax, xd, 3.2, d_text, kind="loss", width=3.3, height=1.1, fontsize=8.5)
    arrow(ax, _bottom(fake), (xd - 0.6, d_box[3]), "fake", offset=-0.1)
    arrow(ax, _bottom(real), (xd + 0.6, d_box[3]), "real", offset=-0.1)
    out = box(ax, xd, 1.6, f"{d_out}×{d_out} map: P(real)\nfor every {receptive}×{receptive} patch", kind="data",
              width=3.3, height=0.8, fontsize=9)
    arrow(ax, _bottom(d_box), _top(out))
    label(ax, xd, 0.8, "L1 to label maps 1 (real), 0 (fake)", fontsize=8.5, style="italic")
    label(ax, width / 2, 0.25, "G wins when its patches look like the LR image's own: when it downscales "
          "with the image's own kernel", fontsize=9, style="italic")
    return fig
