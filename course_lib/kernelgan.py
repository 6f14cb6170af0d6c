"""KernelGAN: blind estimation of the SR kernel of one LR image with an internal GAN.

Bell-Kligler, Shocher & Irani, "Blind Super-Resolution Kernel Estimation using an Internal-GAN",
NeurIPS 2019. The LR image is assumed to be ``y = (x * k) downsampled by s`` with an unknown kernel
``k``. Small patches of a natural image recur across scales, and they recur best when the image is
downscaled with its own kernel (Michaeli & Irani, 2013). KernelGAN turns this into a GAN trained on
the one image ``y``:

* the **generator** ``G`` downscales crops of ``y`` by 2. It is a deep *linear* network (convolutions
  without biases or activations; kernel sizes 7, 5, 3, 1, 1, 1; 64 channels; stride 2 in the last
  layer) applied to each colour channel alone, so it *is* a blur-and-subsample operator with an
  effective 13x13 kernel, which :meth:`~course_lib.kernelgan.DeepLinearGenerator.kernel` reads out by passing a delta
  through the layers;
* the **discriminator** ``D`` is a fully convolutional patch discriminator (a 7x7 convolution, then
  1x1 convolutions with batch norm and ReLU, spectral norm on every convolution, a sigmoid): it maps
  an image to a map of "is this 7x7 patch from ``y``?" probabilities;
* ``G`` wins when the patches of ``G(y)`` cannot be told from the patches of ``y``. Regularisers on
  the kernel (:func:`~course_lib.kernelgan.kernel_regularizers`) keep it a plausible blur kernel; a bicubic prior pulls
  ``G`` towards bicubic downscaling at the start (:class:`~course_lib.kernelgan.ConstraintSchedule`).

After training the kernel is cleaned (:func:`~course_lib.kernelgan.post_process_kernel`); the x4 kernel is computed
analytically from the x2 kernel (:func:`~course_lib.kernelgan.analytic_x4_kernel`). One call does everything:
:func:`~course_lib.kernelgan.estimate_kernel`. The estimated kernel then feeds a non-blind SR method that takes a kernel,
e.g. :func:`~course_lib.zssr.zssr` (the pipeline of the paper: KernelGAN + ZSSR).

Facts from the official code (``sefibk/KernelGAN``) that the defaults of :class:`~course_lib.kernelgan.KernelGANConfig`
follow: 64x64 crops for ``G`` (26x26 outputs), Adam with lr 2e-4 and betas (0.5, 0.999), both
learning rates divided by 10 every 750 iterations, 3000 iterations, an L1 GAN loss against 0/1
label maps, images mapped to [-1, 1] inside the GAN, Gaussian noise on D's inputs (std 1/255 of
the [0, 1] range on real crops, 1/255 of the [-1, 1] range on G's outputs, as the official code adds
it), regulariser weights 0.5 (sum to one), 0.5 (boundaries), 5 (sparsity) and 1 (centre) with the
last two switched on late, and post-processing with ``n = 40``. The stride sits in the last layer, as
in the official code since its pull request #10 (earlier versions strided the first layer, which
made ``G`` differ from the extracted 13x13 kernel).

Deliberate differences: the official data loader adds the real crops' noise *in place* to the stored
image, so the image grows noisier during training; here every step draws fresh noise on a copy. Our
crop sampler weights a crop by the total gradient weight inside it (the official code blurs the
weight map with a box of half the crop size). The learning-rate and constraint periods are
compressed for runs shorter than 1000 iterations (see :meth:`~course_lib.kernelgan.KernelGANConfig.period`).

Conventions. Kernels are *correlation* kernels as in :class:`~course_lib.degradation.operators.BlurDownsample`:
``(A x)[j] = sum_t k[t] x[s*j + t - c]`` with ``c = ceil((K - s) / 2)``; for the 13x13 kernel at
scale 2 its centre of mass belongs at 6.5 (``kernel_target_center(13, 2)``), which is also the
official code's convention. ``G`` itself uses 'valid' convolutions, so its output pixel ``j`` equals
``(A x)[j + c/s]`` away from the borders.

Speed. Because ``G`` is linear, ``G(x)`` equals "correlate ``x`` with ``G.kernel()``, keep every
second pixel" exactly, values and gradients alike (``tests/test_kernelgan.py`` checks both). The
training loop uses that form: it costs one pass of a delta through the layers instead of a pass of
the whole crop, about 15 times less work for the same updates.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import get_device
from .degradation import (
    degrade,
    imresize,
    kernel_offset,
    kernel_target_center,
    shift_kernel_to_center,
)
from .training import History, Trainer

__all__ = [
    "KernelGANConfig",
    "DeepLinearGenerator",
    "PatchDiscriminator",
    "downscale_valid",
    "gradient_weight_map",
    "crop_probabilities",
    "sample_crop_corners",
    "boundary_mask",
    "sum_to_one_loss",
    "boundaries_loss",
    "sparsity_loss",
    "centre_loss",
    "kernel_regularizers",
    "ConstraintSchedule",
    "post_process_kernel",
    "analytic_x4_kernel",
    "embed_kernel",
    "kernel_error",
    "cross_scale_recurrence",
    "KernelGAN",
    "estimate_kernel",
    "REGULARIZERS",
    "PAPER_ITERATIONS",
]

PAPER_ITERATIONS = 3000
REGULARIZERS = ("bicubic", "sum_to_one", "boundaries", "sparsity", "centre")


# ---------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class KernelGANConfig:
    """Hyper-parameters of KernelGAN; the defaults are those of the official code.

    Periods (``lr_decay_every``, ``constraint_update_every``) are the paper's; runs shorter than
    ``full_schedule_after`` iterations compress them (:meth:`~course_lib.kernelgan.KernelGANConfig.period`), so that a 300-step run goes
    through the same phases as a 3000-step one.

    ``regularizers`` lists the kernel terms that are on (a subset of ``REGULARIZERS``; drop one
    for an ablation). ``g_structure=(13,)`` gives the one-layer generator of the chapter's
    comparison.
    """

    iterations: int = PAPER_ITERATIONS
    crop_size: int = 64
    g_structure: tuple[int, ...] = (7, 5, 3, 1, 1, 1)
    g_channels: int = 64
    d_channels: int = 64
    d_layers: int = 7
    d_kernel_size: int = 7
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    lr_decay_every: int = 750
    lr_decay_factor: float = 0.1
    lambda_sum_to_one: float = 0.5
    lambda_boundaries: float = 0.5
    lambda_sparsity: float = 5.0
    lambda_centre: float = 1.0
    lambda_bicubic: float = 5.0
    bicubic_threshold: float = 0.4
    bicubic_patience: int = 3
    bicubic_decay: float = 100.0
    lambda_bicubic_min: float = 5e-6
    late_terms_below: float = 5e-3
    constraint_update_every: int = 200
    full_schedule_after: int = 1000
    noise_real: float = 2.0 / 255.0
    noise_fake: float = 1.0 / 255.0
    n_filtering: int = 40
    regularizers: tuple[str, ...] = REGULARIZERS

    def __post_init__(self) -> None:
        if not isinstance(self.iterations, int) or isinstance(self.iterations, bool) or self.iterations < 1:
            raise ValueError(f"iterations must be a positive int, got {self.iterations!r}")
        if not self.g_structure or any(not isinstance(k, int) or k < 1 for k in self.g_structure):
            raise ValueError(f"g_structure must be a non-empty tuple of positive ints, got {self.g_structure!r}")
        kernel = sum(k - 1 for k in self.g_structure) + 1
        if not isinstance(self.crop_size, int) or self.crop_size < kernel + 2 * (self.d_kernel_size - 1) + 2:
            raise ValueError(
                f"crop_size {self.crop_size} is too small: G's {kernel}x{kernel} kernel and D's "
                f"{self.d_kernel_size}x{self.d_kernel_size} receptive field need at least "
                f"{kernel + 2 * (self.d_kernel_size - 1) + 2}"
            )
        unknown = set(self.regularizers) - set(REGULARIZERS)
        if unknown:
            raise ValueError(f"unknown regularizers {sorted(unknown)}; choose from {REGULARIZERS}")
        for name in ("g_channels", "d_channels", "d_layers", "d_kernel_size", "n_filtering"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.d_layers < 2:
            raise ValueError(f"d_layers must be at least 2, got {self.d_layers}")

    @property
    def kernel_size(self) -> int:
        """The side of the generator's effective kernel, ``sum(k - 1) + 1`` (13 for 7, 5, 3, 1, 1, 1)."""
        return sum(k - 1 for k in self.g_structure) + 1

    def period(self, paper_period: int) -> int:
        """A period of the paper's schedule for this run's length (at least 1).

        In the official schedule everything happens early: the bicubic prior fades and the late
        regularizers switch on by iteration ~600, the first learning-rate drop is at 750, and the
        kernel barely changes after ~1000 iterations. Runs of at least ``full_schedule_after``
        iterations therefore keep the paper's periods; shorter runs compress them by
        ``iterations / full_schedule_after`` so that they still go through every phase.
        """
        factor = min(1.0, self.iterations / self.full_schedule_after)
        return max(1, round(paper_period * factor))

    def without(self, *names: str) -> KernelGANConfig:
        """The same configuration with some regularizers switched off (for ablations)."""
        unknown = set(names) - set(REGULARIZERS)
        if unknown:
            raise ValueError(f"unknown regularizers {sorted(unknown)}; choose from {REGULARIZERS}")
        return replace(self, regularizers=tuple(r for r in self.regularizers if r not in names))


# ---------------------------------------------------------------------------------------------
# the two networks
# ---------------------------------------------------------------------------------------------
def downscale_valid(x: torch.Tensor, kernel: torch.Tensor, scale: int = 2) -> torch.Tensor:
    """Correlate every channel of ``x`` (N, C, H, W) with ``kernel`` (K, K), 'valid', then keep every
    ``scale``-th pixel: the operator a linear generator implements. Differentiable in both."""
    n, c, h, w = x.shape
    out = F.conv2d(x.reshape(n * c, 1, h, w), kernel[None, None].to(x.dtype), stride=scale)
    return out.reshape(n, c, *out.shape[-2:])


class DeepLinearGenerator(nn.Module):
    """KernelGAN's generator: linear convolutions (no bias, no activation), stride ``scale`` last.

    ``structure`` lists the kernel sizes; the first layer maps 1 -> ``channels`` channels, the middle
    ones keep ``channels``, the last maps to 1 channel with stride ``scale``. Colour channels are
    folded into the batch (each is downscaled by the same kernel). With ``structure=(13,)`` it is a
    single strided 13x13 convolution: the same set of operators, a different parametrisation.
    Weights start as Xavier-normal with gain 0.1 (official code).
    """

    def __init__(self, structure: Sequence[int] = (7, 5, 3, 1, 1, 1), channels: int = 64, scale: int = 2):
        super().__init__()
        structure = tuple(int(k) for k in structure)
        if not structure or min(structure) < 1:
            raise ValueError(f"structure must be non-empty positive kernel sizes, got {structure}")
        self.structure, self.scale = structure, int(scale)
        layers = []
        for i, k in enumerate(structure):
            last = i == len(structure) - 1
            layers.append(nn.Conv2d(1 if i == 0 else channels, 1 if last else channels, k,
                                    stride=self.scale if last else 1, bias=False))
        self.layers = nn.Sequential(*layers)
        for layer in self.layers:
            nn.init.xavier_normal_(layer.weight, gain=0.1)

    @property
    def kernel_size(self) -> int:
        """The side of the effective kernel, ``sum(k - 1) + 1``."""
        return sum(k - 1 for k in self.structure) + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the layers on every channel of ``x`` (N, C, H, W) -> (N, C, h, w), 'valid' borders."""
        n, c, h, w = x.shape
        out = self.layers(x.reshape(n * c, 1, h, w))
        return out.reshape(n, c, *out.shape[-2:])

    def kernel(self) -> torch.Tensor:
        """The effective (K, K) correlation kernel, differentiable in the weights.

        A delta padded by ``K - 1`` passes through the layers (strides ignored); the response of a
        stack of correlations to a delta is the *flipped* composite kernel, so it is flipped back.
        """
        weight = self.layers[0].weight
        k = torch.ones(1, 1, 1, 1, dtype=weight.dtype, device=weight.device)
        for i, layer in enumerate(self.layers):
            k = F.conv2d(k, layer.weight, padding=self.kernel_size - 1 if i == 0 else 0)
        return k[0, 0].flip(0, 1)

    def downscale(self, x: torch.Tensor, kernel: torch.Tensor | None = None) -> torch.Tensor:
        """Same result as ``forward`` computed through the extracted kernel (fast path)."""
        return downscale_valid(x, self.kernel() if kernel is None else kernel, self.scale)


class PatchDiscriminator(nn.Module):
    """KernelGAN's discriminator: a ``kernel_size`` convolution, ``layers - 2`` blocks of
    (1x1 convolution, batch norm, ReLU), a 1x1 convolution and a sigmoid; spectral norm
    (Miyato et al., 2018) on every convolution. Output: one probability per
    ``kernel_size`` x ``kernel_size`` patch (a map ``kernel_size - 1`` smaller than the input).
    """

    def __init__(self, in_channels: int = 3, channels: int = 64, layers: int = 7, kernel_size: int = 7):
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm

        def conv(cin, cout, k):
            layer = nn.Conv2d(cin, cout, k, bias=True)
            nn.init.xavier_normal_(layer.weight, gain=0.1)
            nn.init.zeros_(layer.bias)
            return sn(layer)

        blocks: list[nn.Module] = [conv(in_channels, channels, kernel_size)]
        for _ in range(layers - 2):
            bn = nn.BatchNorm2d(channels)
            nn.init.normal_(bn.weight, 1.0, 0.02)
            nn.init.zeros_(bn.bias)
            blocks += [conv(channels, channels, 1), bn, nn.ReLU(inplace=True)]
        blocks += [conv(channels, 1, 1), nn.Sigmoid()]
        self.net = nn.Sequential(*blocks)
        self.kernel_size = kernel_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, 1, H - k + 1, W - k + 1) map of "real patch" probabilities."""
        return self.net(x)


# ---------------------------------------------------------------------------------------------
# crops weighted by image gradients
# ---------------------------------------------------------------------------------------------
def _luma(img: torch.Tensor) -> np.ndarray:
    img = img.detach().to("cpu", torch.float64)
    if img.shape[0] == 3:
        img = 0.299 * img[0] + 0.587 * img[1] + 0.114 * img[2]
    else:
        img = img.mean(0)
    return img.numpy()


def _box_mean(a: np.ndarray, size: int) -> np.ndarray:
    """Mean over a ``size`` x ``size`` window centred on each pixel, zero padding ('same' size)."""
    from scipy.signal import convolve2d

    return convolve2d(a, np.ones((size, size)), mode="same") / size**2


def _clip_top(a: np.ndarray, fraction: float) -> np.ndarray:
    """Keep the pixels above the ``fraction`` quantile (clipped to the gap to the next value): a soft
    mask of the strongest gradients, as the official code's ``clip_extreme`` (which, unlike this, finds
    nothing when the top values are all equal, e.g. on a binary image)."""
    flat = np.sort(a.ravel())
    if flat[-1] <= flat[0]:  # a constant map has no strongest pixels
        return np.zeros_like(a)
    low = flat[min(int(fraction * flat.size), flat.size - 1)]
    if flat[-1] <= low:  # the top values are tied with the quantile: step down to the next value
        below = flat[flat < low]
        low = below[-1] if below.size else low - 1e-5
    high = flat[flat > low][0]
    return np.clip(a, low, high) - low


def gradient_weight_map(image: torch.Tensor, *, window: int = 5, percentile: float = 0.97) -> torch.Tensor:
    """Where the image has strong edges: a (H, W) map (mean 1) used to weight crop positions.

    For the luma's horizontal, vertical and total gradient magnitudes: zero a ``window``-wide border,
    keep the top ``1 - percentile`` pixels (``_clip_top``), normalise each map to sum 1, add them,
    and average over ``window`` x ``window`` neighbourhoods (the official code's ``create_gradient_map``).
    A flat image gets a uniform map.
    """
    gray = _luma(image)
    gy, gx = np.gradient(gray)
    maps = []
    for g in (np.abs(gx), np.abs(gy), np.hypot(gx, gy)):
        g = g.copy()
        g[:window], g[-window:], g[:, :window], g[:, -window:] = 0, 0, 0, 0
        g = _clip_top(g, percentile)
        total = g.sum()
        maps.append(g / total if total > 0 else np.zeros_like(g))
    weight = _box_mean(sum(maps), window)
    mean = weight.mean()
    weight = weight / mean if mean > 0 else np.ones_like(weight)
    return torch.from_numpy(weight)


def crop_probabilities(weight_map: torch.Tensor, crop_size: int, *, floor: float = 1e-3) -> torch.Tensor:
    """Probability of each crop position: ``p[t, l]`` proportional to the total weight inside the crop
    ``weight_map[t:t+crop, l:l+crop]``, plus ``floor`` times the mean (so every crop stays possible).

    Returns a (H - crop + 1, W - crop + 1) float64 tensor summing to 1 (via an integral image).
    """
    if weight_map.ndim != 2:
        raise ValueError(f"weight_map must be 2D (H, W), got shape {tuple(weight_map.shape)}")
    h, w = weight_map.shape
    if crop_size > min(h, w):
        raise ValueError(f"crop size {crop_size} does not fit in a {h}x{w} map")
    integral = F.pad(weight_map.to(torch.float64).cumsum(0).cumsum(1), (1, 0, 1, 0))
    c = crop_size
    sums = integral[c:, c:] - integral[:-c, c:] - integral[c:, :-c] + integral[:-c, :-c]
    sums = sums.clamp_min(0) + floor * float(sums.mean().clamp_min(1e-12))
    return sums / sums.sum()


def sample_crop_corners(probabilities: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw ``n`` (top, left) corners with the given probabilities; returns an (n, 2) long tensor."""
    flat = torch.multinomial(probabilities.reshape(-1).to(torch.float64), n, replacement=True, generator=generator)
    width = probabilities.shape[1]
    return torch.stack([flat // width, flat % width], dim=1)


# ---------------------------------------------------------------------------------------------
# regularizers on the kernel (paper Eq. 4; official loss.py)
# ---------------------------------------------------------------------------------------------
def boundary_mask(size: int, penalty: float = 30.0) -> torch.Tensor:
    """Weights that punish kernel mass near the border: ``penalty * (1 - G / max G)`` with ``G`` a
    Gaussian of standard deviation ``size``, set to zero on the central square (all but a frame of
    ``(size - ceil(size / 2)) // 2 - 1`` pixels; a 2-pixel frame for 13x13)."""
    z = torch.arange(size, dtype=torch.float64) - (size - 1) // 2
    g = torch.exp(-(z**2) / (2.0 * size**2))
    g2 = torch.outer(g, g)
    mask = 1.0 - g2 / g2.max()
    margin = (size - (size // 2 + size % 2)) // 2 - 1
    if margin > 0:
        mask[margin:-margin, margin:-margin] = 0.0
    else:
        mask.zero_()
    return (penalty * mask).to(torch.float32)


def sum_to_one_loss(kernel: torch.Tensor) -> torch.Tensor:
    """``|1 - sum(k)|``: a blur kernel keeps the mean brightness."""
    return (1.0 - kernel.sum()).abs()


def boundaries_loss(kernel: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``mean |k * mask|`` with :func:`~course_lib.kernelgan.boundary_mask`: no mass near the kernel's border."""
    mask = boundary_mask(kernel.shape[-1]) if mask is None else mask
    return (kernel * mask.to(kernel)).abs().mean()


def sparsity_loss(kernel: torch.Tensor, power: float = 0.2) -> torch.Tensor:
    """``mean |k|^0.2``: a concave penalty that prefers few non-zero taps (a compact kernel)."""
    magnitude = kernel.abs()
    nonzero = magnitude > 0  # |k|^0.2 has an infinite slope at 0: keep exact zeros out of autograd
    return torch.where(nonzero, magnitude.clamp_min(1e-30).pow(power), torch.zeros_like(magnitude)).mean()


def centre_loss(kernel: torch.Tensor, scale: int = 2) -> torch.Tensor:
    """Mean squared distance between the kernel's centre of mass (row, col) and the target centre
    ``kernel_target_center(K, scale)`` (6.5 for 13x13 at x2); fixes the otherwise free translation."""
    size = kernel.shape[-1]
    idx = torch.arange(size, dtype=kernel.dtype, device=kernel.device)
    total = kernel.sum()
    centre = torch.stack([(kernel.sum(1) * idx).sum() / total, (kernel.sum(0) * idx).sum() / total])
    target = float(kernel_target_center(size, scale))
    return ((centre - target) ** 2).mean()


def kernel_regularizers(kernel: torch.Tensor, scale: int = 2, mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """All four kernel terms of the paper's ``R``: sum to one, boundaries, sparsity, centre."""
    return {
        "sum_to_one": sum_to_one_loss(kernel),
        "boundaries": boundaries_loss(kernel, mask),
        "sparsity": sparsity_loss(kernel),
        "centre": centre_loss(kernel, scale),
    }


class ConstraintSchedule:
    """The weights of the bicubic prior and of the late regularizers over training (official
    ``Learner``): while ``G`` is far from bicubic downscaling only the bicubic prior (weight 5),
    sum-to-one and boundaries act. Once the bicubic loss has stayed below ``bicubic_threshold`` for
    ``bicubic_patience`` steps, the bicubic weight is divided by 100 every
    ``constraint_update_every`` steps (down to ``lambda_bicubic_min``), and when it falls below
    ``late_terms_below`` the sparsity (5) and centre (1) terms switch on.

    Used as a "scheduler" of :class:`~course_lib.training.Trainer` (``step()`` after every training
    step, ``state_dict`` in checkpoints): call :meth:`~course_lib.kernelgan.ConstraintSchedule.observe` with the step's bicubic loss first.
    """

    def __init__(self, config: KernelGANConfig):
        self.config = config
        self.step_count = 0
        self.lambda_bicubic = config.lambda_bicubic if "bicubic" in config.regularizers else 0.0
        self._bicubic_on = "bicubic" in config.regularizers
        self._decayed = config.lambda_bicubic  # follows the official decay even when the prior is off
        self.lambda_sparsity = 0.0
        self.lambda_centre = 0.0
        self.below_count = 0
        self.similar_to_bicubic = False
        self.late_terms_on = False
        self.last_bicubic = math.inf

    def observe(self, bicubic_loss: float) -> None:
        """Record the bicubic loss of the training step that was just done."""
        self.last_bicubic = float(bicubic_loss)

    def step(self) -> None:
        """Advance by one training step and update the weights (official ``Learner.update``)."""
        c = self.config
        iteration = self.step_count  # index of the step just done, as in the official loop
        self.step_count += 1
        if iteration == 0:
            return
        if not self.similar_to_bicubic:
            if self.last_bicubic < c.bicubic_threshold:
                self.below_count += 1
                if self.below_count >= c.bicubic_patience:
                    self.similar_to_bicubic = True
            else:
                self.below_count = 0
        elif iteration % c.period(c.constraint_update_every) == 0 and self._decayed > c.lambda_bicubic_min:
            self._decayed = max(self._decayed / c.bicubic_decay, c.lambda_bicubic_min)
            self.lambda_bicubic = self._decayed if self._bicubic_on else 0.0
            if not self.late_terms_on and self._decayed < c.late_terms_below:
                self.late_terms_on = True
                self.lambda_sparsity = c.lambda_sparsity if "sparsity" in c.regularizers else 0.0
                self.lambda_centre = c.lambda_centre if "centre" in c.regularizers else 0.0

    def state_dict(self) -> dict[str, Any]:
        """The schedule's state as plain numbers (saved in checkpoints)."""
        keys = ("step_count", "lambda_bicubic", "_decayed", "lambda_sparsity", "lambda_centre",
                "below_count", "similar_to_bicubic", "late_terms_on", "last_bicubic")
        return {k: getattr(self, k) for k in keys}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state saved by ``state_dict``."""
        for k, v in state.items():
            setattr(self, k, v)


# ---------------------------------------------------------------------------------------------
# after training: post-processing, the x4 kernel, comparing kernels
# ---------------------------------------------------------------------------------------------
def post_process_kernel(kernel: torch.Tensor, n: int = 40, scale: int = 2) -> torch.Tensor:
    """Clean an estimated kernel (official ``post_process_k``): subtract ``0.75 x`` its ``(n+1)``-th
    largest value and clip at zero (removes the faint noise floor), renormalise to sum 1, and shift
    the centre of mass onto ``kernel_target_center`` (sub-pixel, :func:`~course_lib.degradation.kernels.shift_kernel_to_center`)."""
    k = kernel.detach().to("cpu", torch.float64)
    if k.ndim != 2 or k.shape[0] != k.shape[1]:
        raise ValueError(f"kernel must be a square 2D tensor, got shape {tuple(k.shape)}")
    n = min(int(n), k.numel() - 1)
    threshold = 0.75 * torch.sort(k.reshape(-1)).values[-n - 1]
    k = (k - threshold).clamp_min(0)
    if k.sum() <= 0:
        raise ValueError("the kernel has no positive mass left after filtering")
    k = shift_kernel_to_center(k / k.sum(), scale)
    return (k / k.sum()).to(torch.float32)


def analytic_x4_kernel(kernel_x2: torch.Tensor, *, crop: bool = True) -> torch.Tensor:
    """The x4 kernel of two x2 downscalings in a row (paper appendix; official ``analytic_kernel``).

    Downscaling twice by 2 with ``k`` reads ``x[4j + 2v + u]`` with weight ``k[v] k[u]``, so the x4
    kernel is ``k4[2r + a, 2c + b] += k[r, c] k[a, b]`` (size ``3K - 2``). With ``crop`` the border of
    ``K // 2`` pixels (negligible mass) is cut off, 37 -> 25 for ``K = 13``, and the result renormalised.
    Finally zeros are appended at the end (bottom/right) so that ``BlurDownsample(k4, 4)`` lines up
    exactly like ``BlurDownsample(k, 2)`` applied twice (25 -> 27, 37 -> 39).
    """
    k = kernel_x2.detach().to("cpu", torch.float64)
    if k.ndim != 2 or k.shape[0] != k.shape[1]:
        raise ValueError(f"kernel_x2 must be a square 2D tensor, got shape {tuple(kernel_x2.shape)}")
    size = k.shape[0]
    big = torch.zeros(3 * size - 2, 3 * size - 2, dtype=torch.float64)
    for r in range(size):
        for c in range(size):
            big[2 * r:2 * r + size, 2 * c:2 * c + size] += k[r, c] * k
    cut = size // 2 if crop else 0
    if cut:
        big = big[cut:-cut, cut:-cut]
        big = big / big.sum()
    # twice A_2: (A4 x)[j] = sum_w big[w] x[4j + w - (3 c2 - cut)], c2 = offset of k at scale 2
    wanted = 3 * kernel_offset(size, 2) - cut
    for extra in range(0, 8):
        if kernel_offset(big.shape[0] + extra, 4) == wanted:
            big = F.pad(big, (0, extra, 0, extra))
            break
    else:  # pragma: no cover - cannot happen for square kernels
        raise RuntimeError("could not align the x4 kernel")
    return big.to(torch.float32)


def embed_kernel(kernel: torch.Tensor, size: int, scale: int) -> torch.Tensor:
    """Zero-pad (or crop) a kernel to ``size x size`` so that ``BlurDownsample`` applies the *same*
    blur: the content moves by ``kernel_offset(size, s) - kernel_offset(K, s)`` pixels."""
    k = kernel.detach()
    out = k.new_zeros(size, size)
    shift = kernel_offset(size, scale) - kernel_offset(k.shape[0], scale)
    src0, dst0 = max(0, -shift), max(0, shift)
    n = min(k.shape[0] - src0, size - dst0)
    if n <= 0:
        raise ValueError(f"a {k.shape[0]}x{k.shape[0]} kernel does not overlap a {size}x{size} frame")
    out[dst0:dst0 + n, dst0:dst0 + n] = k[src0:src0 + n, src0:src0 + n]
    return out


def kernel_error(estimate: torch.Tensor, truth: torch.Tensor, scale: int = 2) -> float:
    """L2 distance between two kernels after aligning and normalising them.

    Both are embedded in a common frame (:func:`~course_lib.kernelgan.embed_kernel`), normalised to sum 1 and moved so that
    their centres of mass sit on the LR pixel centre (:func:`~course_lib.degradation.kernels.shift_kernel_to_center`): a kernel is
    only defined up to a translation (a shifted kernel gives a shifted image), which this removes.
    Returns ``||k_est - k_true||_2`` (0 for identical kernels). The paper's maintainers warn that a
    pixel-wise kernel error says little on its own; judge kernels by the SR they lead to as well.
    """
    size = max(estimate.shape[-1], truth.shape[-1])
    kernels = []
    for k in (estimate, truth):
        k = embed_kernel(k.detach().to("cpu", torch.float64), size, scale)
        total = k.sum()
        if total.abs() < 1e-8:
            raise ValueError("a kernel sums to (almost) zero and cannot be normalised")
        kernels.append(shift_kernel_to_center(k / total, scale))
    return float((kernels[0] - kernels[1]).norm())


def _mean_free_patches(image: torch.Tensor, size: int) -> torch.Tensor:
    gray = torch.from_numpy(_luma(image)).to(torch.float32)[None, None]
    patches = F.unfold(gray, size)[0].T  # (number of patches, size * size)
    return patches - patches.mean(1, keepdim=True)


def cross_scale_recurrence(image: torch.Tensor, kernel: torch.Tensor, scale: int = 2, *, patch_size: int = 5,
                           queries: int = 1000, textured_fraction: float = 0.2, seed: int = 0) -> float:
    """How well the patches of ``image`` recur in ``image`` downscaled with ``kernel``: the mean
    distance from its most textured patches to their nearest neighbours among the patches of the
    coarser image (luma, mean removed; smaller is better).

    Michaeli & Irani (2013) showed that this recurrence is strongest when the coarser image is made
    with the image's own SR kernel; KernelGAN optimises a patch-distribution version of the same
    criterion. ``queries`` patches are drawn from the ``textured_fraction`` with the largest variance
    (flat patches recur under any kernel).
    """
    h, w = image.shape[-2:]
    coarse_image = degrade(image.detach().float()[..., : h - h % scale, : w - w % scale], scale,
                           kernel=kernel.float(), boundary="symmetric")
    query = _mean_free_patches(image, patch_size)
    variance = query.var(1)
    query = query[variance >= torch.quantile(variance, 1.0 - textured_fraction)]
    pick = torch.randperm(len(query), generator=torch.Generator().manual_seed(seed))[:queries]
    query = query[pick]
    coarse = _mean_free_patches(coarse_image, patch_size)
    nearest = torch.cat([torch.cdist(query[i:i + 500], coarse).min(1).values for i in range(0, len(query), 500)])
    return float(nearest.mean())


# ---------------------------------------------------------------------------------------------
# the internal GAN
# ---------------------------------------------------------------------------------------------
def _check_lr_image(image, crop_size: int) -> torch.Tensor:
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"lr_image must be a torch.Tensor, got {type(image).__name__}")
    if image.ndim == 4:
        if image.shape[0] != 1:
            raise ValueError(f"estimate the kernel of one image at a time, got a batch of {image.shape[0]}")
        image = image[0]
    if image.ndim != 3:
        raise ValueError(f"lr_image must have shape (C, H, W) or (1, C, H, W), got {tuple(image.shape)}")
    if image.shape[0] not in (1, 3):
        raise ValueError(f"lr_image must have 1 or 3 channels, got {image.shape[0]} in shape {tuple(image.shape)}")
    if not image.is_floating_point():
        raise TypeError(f"lr_image must be a floating-point tensor in [0, 1], got {image.dtype}")
    if not torch.isfinite(image).all():
        raise ValueError("lr_image contains non-finite values (NaN or inf)")
    h, w = image.shape[-2:]
    if min(h, w) < crop_size:
        raise ValueError(f"the LR image ({h}x{w}) is smaller than the crop size {crop_size}; "
                         "use a larger image or a smaller crop_size")
    return image


def _check_scale(scale) -> int:
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or int(scale) not in (2, 4):
        raise ValueError(f"KernelGAN estimates x2 or x4 kernels; scale must be 2 or 4, got {scale!r}")
    return int(scale)


def _step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(step) + 17)


class KernelGAN:
    """The internal GAN on one LR image: networks, optimisers, crops, losses, one training step.

    Args:
        lr_image: (C, H, W) (C = 1 or 3) float image in [0, 1], at least ``crop_size`` on each side.
        config: hyper-parameters (:class:`~course_lib.kernelgan.KernelGANConfig`; official defaults).
        device: where to train (default :func:`~course_lib.config.get_device`).
        seed: seeds the weights, the crop positions and the noise (runs are reproducible).

    :meth:`~course_lib.kernelgan.KernelGAN.fit` trains with :class:`~course_lib.training.Trainer` (progress bar, checkpoints, exact
    resume); :meth:`~course_lib.kernelgan.KernelGAN.kernel` reads the current kernel; :meth:`~course_lib.kernelgan.KernelGAN.final_kernel` post-processes it.
    """

    def __init__(self, lr_image: torch.Tensor, config: KernelGANConfig | None = None, *,
                 device: torch.device | str | None = None, seed: int = 0):
        self.config = config = config or KernelGANConfig()
        image = _check_lr_image(lr_image, config.crop_size)
        self.device = torch.device(device) if device is not None else get_device()
        self.seed = int(seed)
        torch.manual_seed(self.seed)
        self.G = DeepLinearGenerator(config.g_structure, config.g_channels, scale=2).to(self.device)
        self.D = PatchDiscriminator(image.shape[0], config.d_channels, config.d_layers,
                                    config.d_kernel_size).to(self.device)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=config.lr, betas=config.betas, foreach=True)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=config.lr, betas=config.betas, foreach=True)
        decay = config.period(config.lr_decay_every)
        self.schedulers = {
            "lr_g": torch.optim.lr_scheduler.StepLR(self.opt_g, decay, gamma=config.lr_decay_factor),
            "lr_d": torch.optim.lr_scheduler.StepLR(self.opt_d, decay, gamma=config.lr_decay_factor),
            "constraints": ConstraintSchedule(config),
        }
        self.mask = boundary_mask(config.kernel_size).to(self.device)

        # the image in [-1, 1] as in the official code (its loss thresholds refer to that range)
        self.image = (2.0 * image.detach().to(torch.float32) - 1.0).to(self.device)
        self.g_crop = config.crop_size
        self.d_crop = (config.crop_size - config.kernel_size) // 2 + 1  # size of G's output
        self._sample_crops(image)

    # -- data --------------------------------------------------------------------------------
    def _sample_crops(self, image: torch.Tensor) -> None:
        """All crop corners of the run, drawn once from the seed (so a resumed run sees the same)."""
        h, w = image.shape[-2:]
        generator = torch.Generator().manual_seed(self.seed)
        d_weights = gradient_weight_map(image)
        # G's crops: where the image downscaled by 2 has edges (a nearest-neighbour upsampled map)
        small = gradient_weight_map(imresize(image.detach().to(torch.float32), 0.5))
        g_weights = small.repeat_interleave(2, 0).repeat_interleave(2, 1)[:h, :w]
        n = self.config.iterations
        self.g_probabilities = crop_probabilities(g_weights, self.g_crop)
        self.d_probabilities = crop_probabilities(d_weights, self.d_crop)
        self.g_corners = sample_crop_corners(self.g_probabilities, n, generator)
        self.d_corners = sample_crop_corners(self.d_probabilities, n, generator)

    def crops(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(G's input crop, D's real crop) of a step, each (1, C, size, size) in [-1, 1]."""
        i = step % self.config.iterations
        (gt, gl), (dt, dl) = self.g_corners[i].tolist(), self.d_corners[i].tolist()
        g_in = self.image[:, gt:gt + self.g_crop, gl:gl + self.g_crop][None]
        d_in = self.image[:, dt:dt + self.d_crop, dl:dl + self.d_crop][None]
        return g_in, d_in

    # -- losses ------------------------------------------------------------------------------
    def bicubic_loss(self, g_in: torch.Tensor, g_out: torch.Tensor) -> torch.Tensor:
        """MSE between ``G``'s output and the MATLAB-bicubic x2 downscaling of the same crop."""
        reference = imresize(g_in, 0.5)
        # G's output pixel j sits where the bicubic output pixel j + c/2 sits (c = kernel offset)
        shave = kernel_offset(self.config.kernel_size, 2) // 2
        reference = reference[..., shave:shave + g_out.shape[-2], shave:shave + g_out.shape[-1]]
        return F.mse_loss(g_out, reference)

    def train_step(self, step: int) -> dict[str, float]:
        """One iteration: update ``G`` (GAN + constraints), then ``D``; returns the logged values."""
        schedule: ConstraintSchedule = self.schedulers["constraints"]
        c = self.config
        g_in, d_in = self.crops(step)
        noise_gen = _step_generator(self.seed, step)
        noise_real = torch.randn(d_in.shape, generator=noise_gen).to(self.device) * c.noise_real
        noise_fake = torch.randn(d_in.shape, generator=noise_gen).to(self.device) * c.noise_fake

        # generator: fool D, stay a plausible kernel
        self.opt_g.zero_grad(set_to_none=True)
        kernel = self.G.kernel()
        fake = downscale_valid(g_in, kernel, 2)
        d_fake = self.D(fake)
        g_adv = F.l1_loss(d_fake, torch.ones_like(d_fake))
        terms = kernel_regularizers(kernel, 2, self.mask)
        bicubic = self.bicubic_loss(g_in, fake)
        weights = {
            "sum_to_one": c.lambda_sum_to_one if "sum_to_one" in c.regularizers else 0.0,
            "boundaries": c.lambda_boundaries if "boundaries" in c.regularizers else 0.0,
            "sparsity": schedule.lambda_sparsity,
            "centre": schedule.lambda_centre,
        }
        total = g_adv + schedule.lambda_bicubic * bicubic + sum(weights[k] * terms[k] for k in terms)
        total.backward()
        self.opt_g.step()

        # discriminator: real crops of the image vs. G's (updated) downscaled crops
        self.opt_d.zero_grad(set_to_none=True)
        with torch.no_grad():
            fake = downscale_valid(g_in, self.G.kernel(), 2)
        d_real = self.D(d_in + noise_real)
        d_fake = self.D(fake + noise_fake)
        d_loss = 0.5 * (F.l1_loss(d_fake, torch.zeros_like(d_fake)) + F.l1_loss(d_real, torch.ones_like(d_real)))
        d_loss.backward()
        self.opt_d.step()

        schedule.observe(bicubic.item())
        return {
            "g_adv": g_adv.item(),
            "d_loss": d_loss.item(),
            "bicubic": bicubic.item(),
            **{k: v.item() for k, v in terms.items()},
            "kernel_sum": float(kernel.detach().sum()),
            "lambda_bicubic": schedule.lambda_bicubic,
        }

    # -- training ----------------------------------------------------------------------------
    def trainer(self, *, checkpoint: str | os.PathLike | None = None, checkpoint_every: int = 500,
                true_kernel: torch.Tensor | None = None, true_scale: int = 2, eval_every: int | None = None,
                progress: bool = True, desc: str = "KernelGAN") -> Trainer:
        """A :class:`~course_lib.training.Trainer` for this GAN (two optimisers, three schedules).

        With ``true_kernel`` (known in synthetic experiments) the kernel error
        (:func:`~course_lib.kernelgan.kernel_error` of the raw kernel, or of its analytic x4 kernel if ``true_scale=4``) is
        evaluated every ``eval_every`` steps.
        """
        eval_fn = None
        if true_kernel is not None:
            truth = true_kernel.detach().cpu()
            true_scale = _check_scale(true_scale)

            def eval_fn(step: int) -> dict[str, float]:
                raw = self.G.kernel().detach().cpu()
                try:
                    estimate = raw if true_scale == 2 else analytic_x4_kernel(raw)
                    return {"kernel_error": kernel_error(estimate, truth, true_scale)}
                except ValueError:  # a kernel without mass (very early steps)
                    return {"kernel_error": float("nan")}

        c = self.config
        tag = f"kernelgan:{'-'.join(map(str, c.g_structure))}x{c.g_channels}:crop{c.crop_size}"
        return Trainer({"G": self.G, "D": self.D}, {"G": self.opt_g, "D": self.opt_d}, self.train_step,
                       schedulers=self.schedulers, checkpoint=checkpoint, checkpoint_every=checkpoint_every,
                       eval_fn=eval_fn, eval_every=eval_every or max(1, c.iterations // 30), tag=tag,
                       desc=desc, progress=progress)

    def fit(self, iterations: int | None = None, **trainer_kwargs) -> History:
        """Train for ``iterations`` steps in total (default: ``config.iterations``); see :meth:`~course_lib.kernelgan.KernelGAN.trainer`."""
        iterations = self.config.iterations if iterations is None else iterations
        if iterations > self.config.iterations:
            raise ValueError(f"iterations ({iterations}) exceeds config.iterations ({self.config.iterations}),"
                             " for which the crops and schedules were prepared")
        return self.trainer(**trainer_kwargs).run(iterations)

    @torch.no_grad()
    def kernel(self) -> torch.Tensor:
        """The current raw x2 kernel of ``G`` (13x13 by default), on the CPU."""
        return self.G.kernel().detach().cpu().float()

    def final_kernel(self, scale: int = 2) -> torch.Tensor:
        """Post-processed x2 kernel (:func:`~course_lib.kernelgan.post_process_kernel`), or its analytic x4 kernel."""
        scale = _check_scale(scale)
        k2 = post_process_kernel(self.kernel(), self.config.n_filtering, 2)
        return k2 if scale == 2 else analytic_x4_kernel(k2)


def estimate_kernel(
    lr_image: torch.Tensor,
    scale: int = 2,
    iterations: int = PAPER_ITERATIONS,
    *,
    device: torch.device | str | None = None,
    seed: int = 0,
    progress: bool = True,
    config: KernelGANConfig | None = None,
    checkpoint: str | os.PathLike | None = None,
    true_kernel: torch.Tensor | None = None,
    postprocess: bool = True,
) -> tuple[torch.Tensor, History]:
    """Estimate the SR kernel of ``lr_image`` with KernelGAN; returns ``(kernel, history)``.

    Args:
        lr_image: (C, H, W) or (1, C, H, W), C = 1 or 3, floats in [0, 1]; at least the crop size
            (64 by default) on each side.
        scale: 2 (a 13x13 kernel) or 4 (the analytic x4 kernel of the x2 estimate, 27x27 with the
            zero padding of :func:`~course_lib.kernelgan.analytic_x4_kernel`). KernelGAN always trains at x2.
        iterations: training steps (3000 in the paper); overrides ``config.iterations``.
        device, seed, progress: where to train, the seed of weights/crops/noise, the tqdm bar.
        config: other hyper-parameters (:class:`~course_lib.kernelgan.KernelGANConfig`).
        checkpoint: file to save to / resume from (:class:`~course_lib.training.Trainer`).
        true_kernel: if known (synthetic tests), its distance to the estimate (at ``scale``) is
            logged in ``history.evals['kernel_error']``.
        postprocess: clean the kernel (:func:`~course_lib.kernelgan.post_process_kernel`); ``False`` returns ``G``'s raw
            x2 kernel (only with ``scale=2``).

    Example::

        kernel, history = estimate_kernel(lr, scale=2, iterations=3000)
        history.plot(["g_adv", "d_loss"])
    """
    scale = _check_scale(scale)
    if isinstance(iterations, bool) or not isinstance(iterations, (int, np.integer)) or iterations < 1:
        raise ValueError(f"iterations must be a positive int, got {iterations!r}")
    if not postprocess and scale != 2:
        raise ValueError("the raw kernel (postprocess=False) exists only at scale 2")
    config = replace(config or KernelGANConfig(), iterations=int(iterations))
    gan = KernelGAN(lr_image, config, device=device, seed=seed)
    history = gan.fit(checkpoint=checkpoint, true_kernel=true_kernel, true_scale=scale, progress=progress,
                      desc=f"KernelGAN x{scale}")
    kernel = gan.final_kernel(scale) if postprocess else gan.kernel()
    return kernel, history
