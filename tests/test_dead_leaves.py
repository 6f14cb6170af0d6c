"""Tests of course_lib.data.dead_leaves: exact occlusion, radius law, power spectrum, speed."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from course_lib.data import dead_leaves, dead_leaves_batch
from course_lib.data.dead_leaves import _draw_leaves, _sample_radii


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_shape_range_and_determinism():
    a = dead_leaves((20, 37), generator=_gen(0))
    b = dead_leaves((20, 37), generator=_gen(0))
    c = dead_leaves((20, 37), generator=_gen(1))
    assert a.shape == (3, 20, 37) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert 0.0 <= float(a.min()) and float(a.max()) <= 1.0
    assert dead_leaves(16, generator=_gen(0), channels=1).shape == (1, 16, 16)
    batch = dead_leaves_batch(3, 16, generator=_gen(2))
    assert batch.shape == (3, 3, 16, 16) and not torch.equal(batch[0], batch[1])


def test_visible_leaf_is_the_first_that_covers_each_pixel():
    """Brute force: paint leaves back to front with dense masks; must equal the label map."""
    leaves = _draw_leaves(24, generator=_gen(3), alpha=3.0, r_min=1.0, r_max=None,
                          supersample=1, max_leaves=100_000,
                          colors=lambda n: torch.zeros(n, 1))
    label, n = leaves["label"], leaves["r"].numel()
    assert int(label.max()) < n, "some pixel was left uncovered"
    centre = torch.arange(24, dtype=torch.float64) + 0.5
    reference = torch.full((24, 24), n, dtype=torch.int64)
    for k in range(n - 1, -1, -1):  # the painter's algorithm: earlier leaves end on top
        inside = ((centre[:, None] - leaves["cy"][k].double()) ** 2
                  + (centre[None, :] - leaves["cx"][k].double()) ** 2
                  <= leaves["r"][k].double() ** 2)
        reference[inside] = k
    assert torch.equal(label, reference)


def test_radii_follow_the_power_law_weighted_by_the_reach_box():
    """Leaves touching an H x W image have radius density ∝ r^-alpha (W + 2r)(H + 2r)."""
    h, w, r_min, r_max, alpha = 30, 50, 1.0, 40.0, 3.0
    radii = _sample_radii(20_000, h, w, r_min, r_max, alpha, _gen(4)).numpy()
    density = lambda r: r ** -alpha * (w + 2 * r) * (h + 2 * r)  # noqa: E731
    total = integrate.quad(density, r_min, r_max)[0]
    cdf = np.vectorize(lambda r: integrate.quad(density, r_min, r)[0] / total)
    grid = np.geomspace(r_min, r_max, 400)
    table = cdf(grid)
    result = stats.kstest(radii, lambda r: np.interp(r, grid, table))
    assert result.pvalue > 1e-3, result


def _spectrum_slope(alpha: float, n: int = 8, size: int = 128) -> float:
    """Slope of log radially averaged power vs log frequency, 4/size .. 0.25 cycles/pixel."""
    g = _gen(11)
    imgs = torch.stack([dead_leaves(size, generator=g, channels=1, alpha=alpha)[0]
                        for _ in range(n)]).double()
    imgs = imgs - imgs.mean(dim=(1, 2), keepdim=True)
    window = torch.hann_window(size, periodic=False, dtype=torch.float64)
    power = (torch.fft.fft2(imgs * window[:, None] * window).abs() ** 2).mean(0)
    f = torch.fft.fftfreq(size, dtype=torch.float64)
    radius = torch.sqrt(f[:, None] ** 2 + f[None, :] ** 2)
    edges = np.geomspace(4 / size, 0.25, 12)
    xs, ys = [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        ring = (radius >= lo) & (radius < hi)
        xs.append(float(torch.log(radius[ring]).mean()))
        ys.append(float(torch.log(power[ring].mean())))
    return float(np.polyfit(xs, ys, 1)[0])


def test_power_spectrum_slope_matches_theory():
    """Theory: power ∝ |f|^(alpha - 5) (module docstring); alpha = 3 gives natural images' -2."""
    slopes = {alpha: _spectrum_slope(alpha) for alpha in (2.5, 3.0, 3.5)}
    assert -2.4 < slopes[3.0] < -1.6, slopes
    assert slopes[2.5] < slopes[3.0] < slopes[3.5], slopes
    assert slopes[3.5] - slopes[2.5] > 0.5, slopes  # theory: 1.0


def test_palette_colors_are_used():
    palette = torch.tensor([[0.1, 0.2, 0.3], [0.9, 0.5, 0.0], [0.4, 0.4, 0.4]])
    img = dead_leaves(32, generator=_gen(5), palette=palette, supersample=1)
    colors = img.reshape(3, -1).T.unique(dim=0)
    assert all(any(torch.allclose(c, p) for p in palette) for c in colors)
    gray_photo = torch.full((1, 8, 8), 0.25)
    img = dead_leaves(16, generator=_gen(5), channels=1, palette=gray_photo)
    assert torch.allclose(img, torch.full_like(img, 0.25))


def test_supersampling_antialiases_edges():
    hard = dead_leaves(64, generator=_gen(6), channels=1, supersample=1)
    soft = dead_leaves(64, generator=_gen(6), channels=1, supersample=3)
    palette_values = hard.unique().numel()
    assert soft.unique().numel() > palette_values  # blended edge pixels appear


def test_leaf_cap_leaves_at_most_two_colours():
    img = dead_leaves(32, generator=_gen(7), max_leaves=1, supersample=1, r_min=2, r_max=4)
    assert img.reshape(3, -1).T.unique(dim=0).shape[0] <= 2


def test_speed_128():
    dead_leaves(128, generator=_gen(8))
    start = time.perf_counter()
    for seed in range(3):
        dead_leaves(128, generator=_gen(seed))
    per_image = (time.perf_counter() - start) / 3
    assert per_image < 0.5, f"{per_image:.3f} s per 128x128 image"  # typically ~0.03 s


def test_bad_arguments():
    with pytest.raises(ValueError, match="r_min"):
        dead_leaves(16, r_min=5, r_max=2)
    with pytest.raises(ValueError, match="positive"):
        dead_leaves(0)
    with pytest.raises(TypeError):
        dead_leaves(16.5)
    with pytest.raises(ValueError, match="supersample"):
        dead_leaves(16, supersample=0)
    with pytest.raises(ValueError, match="palette"):
        dead_leaves(16, palette=torch.rand(5, 2))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        dead_leaves(16, palette=torch.full((5, 3), 2.0))
    with pytest.raises(ValueError, match="alpha"):
        dead_leaves(16, alpha=math.inf)
    with pytest.raises(ValueError):
        dead_leaves_batch(0, 16)
