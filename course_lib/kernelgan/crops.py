"""Where KernelGAN looks: crops drawn with probabilities that follow the image's strong edges
(flat regions say nothing about the kernel)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["gradient_weight_map", "crop_probabilities", "sample_crop_corners"]


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
    and average over ``window`` x ``window`` neighbourhoods (official ``util.py:create_gradient_map``).
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
