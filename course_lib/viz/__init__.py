"""Plots used across the chapters: image grids with zoomed crops, difference maps, kernels,
2D densities and samples, and explorers.

Explorers come in two kinds. :func:`js_animation` renders frames once and returns a
matplotlib JavaScript animation: it works in the static HTML book, where no Python kernel runs.
:func:`slider_explorer` is the ipywidgets version that recomputes on every slider move in a live
kernel (Jupyter, Colab); in the static book it falls back to nothing, so chapters show both.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Rectangle

if TYPE_CHECKING:
    from course_lib.training import History

__all__ = [
    "to_display",
    "show_images",
    "compare_crops",
    "difference_map",
    "plot_kernel",
    "density_grid",
    "plot_density_2d",
    "plot_samples_2d",
    "js_animation",
    "slider_explorer",
    "table",
    "plot_continued_run",
]

Box = tuple[int, int, int, int]  # (top, left, height, width) in pixels of the first image


def to_display(img: torch.Tensor | np.ndarray) -> np.ndarray:
    """A (C,H,W) or (H,W) tensor / array in [0, 1] as an (H,W[,3]) float array clipped to [0, 1]."""
    if isinstance(img, torch.Tensor):
        img = img.detach().float().cpu().numpy()
    img = np.asarray(img, dtype=np.float64)
    if img.ndim == 4 and img.shape[0] == 1:
        img = img[0]
    if img.ndim == 3 and img.shape[0] in (1, 3):
        img = np.moveaxis(img, 0, -1)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[-1] != 3):
        raise ValueError(f"cannot display an image of shape {tuple(img.shape)}; expected (C,H,W) "
                         "with C in (1, 3) or (H,W)")
    return np.clip(img, 0.0, 1.0)


def _imshow(ax, img, title=None, *, displayable: bool = False, **kw):
    arr = img if displayable else to_display(img)
    ax.imshow(arr, cmap="gray" if arr.ndim == 2 else None, vmin=0, vmax=1,
              interpolation="nearest", **kw)
    if title:
        ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def show_images(images: Sequence, titles: Sequence[str] | None = None, *, ncols: int | None = None,
                size: float = 3.0, suptitle: str | None = None):
    """Show images side by side (a grid when ``ncols`` is smaller than their number)."""
    images = list(images)
    if not images:
        raise ValueError("show_images needs at least one image")
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"{len(titles)} titles for {len(images)} images")
    ncols = ncols or len(images)
    nrows = -(-len(images) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i < len(images):
            _imshow(ax, images[i], titles[i] if titles else None)
        else:
            ax.axis("off")
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def _scaled_box(box: Box, ref_hw: tuple[int, int], hw: tuple[int, int]) -> Box:
    sy, sx = hw[0] / ref_hw[0], hw[1] / ref_hw[1]
    top, left, h, w = box
    return (round(top * sy), round(left * sx), max(1, round(h * sy)), max(1, round(w * sx)))


def compare_crops(images: Sequence, titles: Sequence[str], box: Box, *, size: float = 2.6,
                  metrics: Sequence[str] | None = None):
    """Full images in the top row with the crop box drawn, zoomed crops below.

    ``box = (top, left, height, width)`` is given in pixels of the first image; images of other
    sizes (an LR input among HR outputs) get the box scaled to their size, so the crops show the
    same region. ``metrics`` adds a line under each crop (e.g. "30.1 dB / 0.85").
    """
    images = [to_display(im) for im in images]
    if len(titles) != len(images):
        raise ValueError(f"{len(titles)} titles for {len(images)} images")
    ref_hw = images[0].shape[:2]
    top, left, h, w = box
    if top < 0 or left < 0 or top + h > ref_hw[0] or left + w > ref_hw[1] or h < 1 or w < 1:
        raise ValueError(f"crop box {box} does not fit inside the first image of size {ref_hw}")
    n = len(images)
    fig, axes = plt.subplots(2, n, figsize=(size * n, size * 2), squeeze=False)
    for i, (img, title) in enumerate(zip(images, titles)):
        t, left, hh, ww = _scaled_box(box, ref_hw, img.shape[:2])
        _imshow(axes[0, i], img, title, displayable=True)
        axes[0, i].add_patch(Rectangle((left - 0.5, t - 0.5), ww, hh, fill=False, ec="yellow", lw=1.5))
        _imshow(axes[1, i], img[t:t + hh, left:left + ww], displayable=True)
        if metrics is not None:
            axes[1, i].set_xlabel(metrics[i], fontsize=9)
    fig.tight_layout()
    return fig


def difference_map(a, b, *, ax=None, title: str | None = None, vmax: float | None = None):
    """Signed difference a − b (mean over colour channels) in a diverging colour map."""
    da, db = to_display(a), to_display(b)
    if da.shape != db.shape:
        raise ValueError(f"shapes differ: {da.shape} vs {db.shape}")
    diff = da - db
    if diff.ndim == 3:
        diff = diff.mean(-1)
    vmax = vmax or max(float(np.abs(diff).max()), 1e-8)
    if ax is None:
        _, ax = plt.subplots(figsize=(3.2, 3.2))
    im = ax.imshow(diff, cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    plt.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return ax


def plot_kernel(kernel, *, ax=None, title: str | None = None, cmap: str = "viridis"):
    """Show a 2D blur kernel with its pixel grid and centre of mass."""
    k = kernel.detach().cpu().numpy() if isinstance(kernel, torch.Tensor) else np.asarray(kernel)
    if k.ndim != 2:
        raise ValueError(f"a kernel is 2D, got shape {k.shape}")
    if ax is None:
        _, ax = plt.subplots(figsize=(3, 3))
    ax.imshow(k, cmap=cmap, interpolation="nearest")
    total = k.sum()
    if abs(total) > 1e-12:
        ys, xs = np.indices(k.shape)
        ax.plot((xs * k).sum() / total, (ys * k).sum() / total, "r+", ms=10)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def density_grid(log_prob: Callable[[torch.Tensor], torch.Tensor], bounds, n: int = 200):
    """Evaluate a 2D log-density on an ``n``×``n`` grid; returns (xs, ys, log-density array)."""
    (x0, x1), (y0, y1) = bounds
    xs, ys = torch.linspace(x0, x1, n), torch.linspace(y0, y1, n)
    gx, gy = torch.meshgrid(xs, ys, indexing="xy")
    pts = torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)
    with torch.no_grad():
        lp = log_prob(pts).reshape(n, n)
    return xs.numpy(), ys.numpy(), lp.double().numpy()


def plot_density_2d(log_prob: Callable[[torch.Tensor], torch.Tensor], bounds=((-4, 4), (-4, 4)), *,
                    n: int = 200, ax=None, title: str | None = None, cmap: str = "magma"):
    """Heat map of exp(log_prob) on a grid over ``bounds = ((xmin, xmax), (ymin, ymax))``."""
    xs, ys, lp = density_grid(log_prob, bounds, n)
    if ax is None:
        _, ax = plt.subplots(figsize=(3.5, 3.5))
    ax.pcolormesh(xs, ys, np.exp(lp), cmap=cmap, shading="auto")
    ax.set_aspect("equal")
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def plot_samples_2d(samples, *, ax=None, title: str | None = None, bounds=None, s: float = 2,
                    alpha: float = 0.4, **kw):
    """Scatter plot of 2D samples."""
    pts = samples.detach().cpu().numpy() if isinstance(samples, torch.Tensor) else np.asarray(samples)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"2D samples have shape (n, 2), got {pts.shape}")
    if ax is None:
        _, ax = plt.subplots(figsize=(3.5, 3.5))
    ax.scatter(pts[:, 0], pts[:, 1], s=s, alpha=alpha, **kw)
    if bounds is not None:
        ax.set_xlim(*bounds[0])
        ax.set_ylim(*bounds[1])
    ax.set_aspect("equal")
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def js_animation(draw: Callable[[plt.Figure, int], None], n_frames: int, *,
                 figsize=(6, 3), interval: int = 200, default_mode: str = "once"):
    """An explorer that works without a kernel: ``draw(fig, i)`` draws frame ``i`` on a cleared
    figure; all frames are rendered now and embedded as a JavaScript player (play, step, slider).

    Returns an ``IPython.display.HTML`` object; display it as a cell's last expression.
    """
    from IPython.display import HTML
    from matplotlib import animation

    if n_frames < 1:
        raise ValueError(f"n_frames must be at least 1, got {n_frames}")
    fig = plt.figure(figsize=figsize)

    def update(i):
        fig.clear()
        draw(fig, i)
        return []

    anim = animation.FuncAnimation(fig, update, frames=n_frames, interval=interval, blit=False)
    html = anim.to_jshtml(default_mode=default_mode)
    plt.close(fig)
    # matplotlib links Font Awesome 4 from a CDN for the player's icons; the book's theme ships
    # Font Awesome itself, so drop the link and keep the page free of outside requests.
    html = re.sub(r'<link[^>]*font-awesome[^>]*>', "", html)
    return HTML(html)


def slider_explorer(draw: Callable[[plt.Figure, float], None], *, start: float, stop: float,
                    step: float, value: float | None = None, description: str = "t",
                    figsize=(6, 3)):
    """The live-kernel explorer: an ipywidgets slider that calls ``draw(fig, value)``.

    In the static HTML book no kernel runs, so pair it with :func:`js_animation`.
    Returns the widget, or ``None`` when ipywidgets is not installed or while the HTML book is
    being built (a widget there would only show a dead control).
    """
    from ..config import is_static_build

    if is_static_build():
        return None
    try:
        import ipywidgets as widgets
    except ImportError:  # the course works without widgets; the JS explorer covers the book
        return None
    out = widgets.Output()
    slider = widgets.FloatSlider(value=start if value is None else value, min=start, max=stop,
                                 step=step, description=description, continuous_update=False)

    def render(change=None):
        with out:
            out.clear_output(wait=True)
            fig = plt.figure(figsize=figsize)
            draw(fig, slider.value)
            plt.show()

    slider.observe(render, names="value")
    render()
    return widgets.VBox([slider, out])


def table(rows: dict[str, dict], columns: dict[str, str], *, corner: str = ""):
    """A results table rendered as Markdown in a notebook: ``rows = {name: {column: value}}``,
    ``columns = {column: format spec}`` (e.g. ``".2f"``); a missing or ``None`` value shows as "–",
    and values of other columns are left out.

    Returns an ``IPython.display.Markdown`` object; display it as a cell's last expression.
    """
    from IPython.display import Markdown

    if not columns:
        raise ValueError("table needs at least one column")
    lines = [f"| {corner} | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, row in rows.items():
        cells = []
        for column, spec in columns.items():
            value = row.get(column)
            try:
                cells.append("–" if value is None else format(value, spec))
            except (TypeError, ValueError) as err:
                raise ValueError(f"table: row {name!r}, column {column!r}: cannot format {value!r} "
                                 f"with {spec!r} ({err})") from err
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return Markdown("\n".join(lines))


def plot_continued_run(before: History, after: History, key: str = "loss", *, label: str, ylabel: str,
                       zoom: int = 400, log: bool = False, ax: plt.Axes | None = None) -> plt.Axes:
    """A run that continued a shipped model: the shipped run's ``key`` (running mean of 50, the
    last ``zoom`` steps shown) and then ``after``'s steps, every value and their running mean of 10,
    numbered on from the end of ``before``. ``label`` names the shipped run in the legend."""
    if not before.steps or not after.steps:
        raise ValueError("both histories need logged steps")
    ax = ax if ax is not None else plt.subplots(figsize=(7, 3))[1]
    offset = before.steps[-1]
    new_steps = [offset + s for s in after.steps]
    ax.plot(before.steps, before.smoothed(key, 50), label=f"{label}: its last run (running mean of 50)")
    ax.plot(new_steps, after.logs[key], ".", color="C1", alpha=0.4, label="this cell: every step")
    ax.plot(new_steps, after.smoothed(key, 10), color="C1", label="this cell (running mean of 10)")
    ax.set_xlim(max(0, offset - zoom), new_steps[-1] + 10)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    return ax
