"""Architecture and concept figures drawn by code, in one shared style.

Every chapter explains its architecture with a figure, as d2l and the UvA notebooks do. The figures
are drawn with matplotlib from the same objects the chapters use (a model's layer counts, an
operator's scale), so they stay true to the code, and ``tests/test_diagrams.py`` renders each one.

Primitives: :func:`new_diagram`, :func:`box`, :func:`arrow`, :func:`label` and the palette
``COLOURS`` (one colour per kind of thing: data, learned network, fixed operator, loss or
density, latent). Figures: :func:`degradation_pipeline`, :func:`projection_layer`,
:func:`irn_architecture`, :func:`story_map`.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

__all__ = [
    "COLOURS",
    "new_diagram",
    "box",
    "arrow",
    "label",
    "degradation_pipeline",
    "projection_layer",
    "irn_architecture",
    "story_map",
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
