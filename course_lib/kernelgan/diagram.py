"""Schematic of KernelGAN-FKP (the flow's kernel in G's place), drawn with matplotlib from the
configuration, so that the figure shows the layer sizes the code uses. KernelGAN's own G and D are
drawn by :func:`course_lib.viz.diagrams.kernelgan_architecture`."""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from .config import KernelGANConfig

__all__ = ["draw_kernelgan_fkp"]

_G_COLOUR, _D_COLOUR, _DATA_COLOUR, _FLOW_COLOUR = "#cfe2f3", "#f4cccc", "#eeeeee", "#d9ead3"


def _box(ax, x, y, w, h, text, colour, fontsize=8):
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02", fc=colour, ec="#444444",
                                lw=0.8))
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize)


def _arrow(ax, start, end, text=None, style="-|>", colour="#333333", offset=(0.0, 0.08)):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle=style, mutation_scale=10, color=colour, lw=0.9,
                                 shrinkA=2, shrinkB=2))
    if text:
        ax.text((start[0] + end[0]) / 2 + offset[0], (start[1] + end[1]) / 2 + offset[1], text, ha="center",
                va="bottom", fontsize=7, color=colour)


def _layer_chain(ax, x0: float, y: float, texts: list[str], output: str) -> float:
    """Boxes for ``texts`` from ``x0`` rightwards at height ``y``, joined by arrows, then the
    ``output`` box; returns the x of the output box."""
    step = 0.95
    for i, text in enumerate(texts):
        _box(ax, x0 + i * step, y, 0.82, 0.5, text, _D_COLOUR, fontsize=6)
        if i:
            _arrow(ax, (x0 + (i - 1) * step + 0.41, y), (x0 + i * step - 0.41, y))
    out_x = x0 + len(texts) * step + 0.35
    _arrow(ax, (x0 + (len(texts) - 1) * step + 0.41, y), (out_x - 0.3, y))
    _box(ax, out_x + 0.25, y, 1.0, 0.5, output, _DATA_COLOUR, fontsize=6)
    return out_x + 0.25


def _discriminator(ax, config: KernelGANConfig, x0: float, y: float, d_in: int) -> float:
    """KernelGAN's D from ``x0`` rightwards at height ``y``; returns the x of D's output."""
    k, c = config.d_kernel_size, config.d_channels
    d_out = d_in - (k - 1)
    texts = [f"{k}x{k} conv\n{c} ch, SN"] + ["1x1 conv\nSN, BN, ReLU"] * (config.d_layers - 2) + ["1x1 conv\nSN, sigmoid"]
    return _layer_chain(ax, x0, y, texts, f"{d_out}x{d_out} map\nP(real patch)")


def _wgan_critic(ax, x0: float, y: float, d_in: int, layers: int = 5, channels: int = 32) -> float:
    """The WGAN-GP critic (``fkp.WGANCritic``) from ``x0`` at height ``y``; returns the x of its output."""
    texts = [f"3x3 conv\n{channels} ch, BN,\nLeakyReLU"] * (layers - 1) + ["3x3 conv\n1 ch"]
    d_out = d_in - 2 * layers
    return _layer_chain(ax, x0, y, texts, f"{d_out}x{d_out} map\ncritic score")


def draw_kernelgan_fkp(config: KernelGANConfig | None = None, kernel_size: int = 11, ax=None, *,
                       critic: str = "wgan-gp", latent_radius: float | None = 10.0, crops_per_step: int = 8):
    """KernelGAN-FKP: the latent z decodes through the trained, frozen flow into a kernel, which
    blurs and subsamples the crops in G's place; only z is optimised, against the WGAN-GP critic of
    ``fkp.WGANCritic`` (``critic="wgan-gp"``, the default of ``KernelGANFKP``) or KernelGAN's
    discriminator (``"kernelgan"``). Returns the figure."""
    if critic not in ("kernelgan", "wgan-gp"):
        raise ValueError(f"critic must be 'kernelgan' or 'wgan-gp', got {critic!r}")
    config = config or KernelGANConfig()
    if ax is None:
        fig, ax = plt.subplots(figsize=(11, 3.4))
    else:
        fig = ax.figure
    crop, k = config.crop_size, config.kernel_size
    g_out = (crop - k) // 2 + 1
    y_g, y_real = 2.0, 0.6
    d = kernel_size * kernel_size
    sphere = f"\n|z| = {latent_radius:g}" if latent_radius else ""
    _box(ax, 0.55, y_g, 0.95, 0.6, f"latent z\n({d} numbers){sphere}", _FLOW_COLOUR, fontsize=6)
    _box(ax, 2.0, y_g, 1.5, 0.6, "flow f^-1 (frozen)\ncouplings, ActNorm,\npermutations", _FLOW_COLOUR, fontsize=6)
    _arrow(ax, (1.03, y_g), (1.25, y_g))
    _box(ax, 3.55, y_g, 1.15, 0.6, f"sigmoid, scale,\nsum 1: kernel\n{kernel_size}x{kernel_size}", _FLOW_COLOUR,
         fontsize=6)
    _arrow(ax, (2.75, y_g), (2.98, y_g))
    _box(ax, 3.55, y_g - 1.2, 1.05, 0.55, f"{crops_per_step} LR crop{'s' if crops_per_step > 1 else ''}\n"
         f"{crop}x{crop}", _DATA_COLOUR)
    _box(ax, 5.0, y_g, 1.2, 0.6, "blur, keep\nevery 2nd pixel", _G_COLOUR, fontsize=7)
    _arrow(ax, (4.13, y_g), (4.4, y_g))
    _arrow(ax, (4.08, y_g - 1.2), (4.6, y_g - 0.3))
    fake_x = 6.45
    _arrow(ax, (5.6, y_g), (fake_x - 0.45, y_g))
    _box(ax, fake_x, y_g, 0.9, 0.6, f"G(crop)\n{g_out}x{g_out}", _DATA_COLOUR)
    _box(ax, fake_x, y_real, 0.9, 0.6, f"real crop\n{g_out}x{g_out}", _DATA_COLOUR)
    d_x0 = fake_x + 1.2
    ymid = (y_g + y_real) / 2
    _arrow(ax, (fake_x + 0.45, y_g), (d_x0 - 0.41, ymid + 0.1), "fake")
    _arrow(ax, (fake_x + 0.45, y_real), (d_x0 - 0.41, ymid - 0.1), "real", offset=(0.0, -0.25))
    if critic == "wgan-gp":
        out_x = _wgan_critic(ax, d_x0, ymid, g_out)
    else:
        out_x = _discriminator(ax, config, d_x0, ymid, g_out)
    ax.annotate("", xy=(0.55, y_g + 0.32), xytext=(out_x, ymid + 0.27),
                arrowprops=dict(arrowstyle="-|>", color="#990000", lw=0.9, ls="--",
                                connectionstyle="arc3,rad=0.25"))
    ax.text((0.55 + out_x) / 2, y_g + 1.0, "gradient of the GAN loss updates z only" + (", then z is put back on the sphere" if latent_radius else ""), color="#990000", fontsize=7,
            ha="center")
    ax.set_xlim(-0.1, out_x + 0.9)
    ax.set_ylim(-0.1, 3.4)
    ax.set_axis_off()
    ax.set_title("KernelGAN-FKP: the kernel comes from a flow trained on DIV2KRK kernels", fontsize=9)
    return fig
