"""The scale-invariant dead-leaves model: unlimited images with natural-image statistics.

Lee, Mumford & Huang (2001), "Occlusion models for natural images": discs ("leaves") fall on the
plane at uniformly random positions, each new one hidden behind (or, equivalently after a time
reversal, on top of) the earlier ones, until the image is covered. With radii drawn from the
power law

    p(r) ∝ r^(-alpha),   r_min <= r <= r_max,

and alpha = 3 the model is scale invariant between r_min and r_max, and its power spectrum falls
as ``|f|^(-2)`` like that of natural photos. More generally, for 2 < alpha < 5 the two-point
correlation behaves as a power ``τ^(3 - alpha)`` of the distance for ``r_min << τ << r_max`` (two
points are on the same leaf with probability ``E|D ∩ (D + τ)| / E|D ∪ (D + τ)|`` for a random disc
D), so the spectrum falls as ``|f|^(alpha - 5)``: a smaller alpha (more large leaves) gives a steeper
spectrum, a larger one a flatter spectrum (see also Gousseau & Roueff, 2007, on how the radius
law sets the model's scaling). The tests measure both.

How we draw it, exactly and vectorised:

* A leaf touches the H x W image only if its centre lies in the box enlarged by its radius, so
  the radii of the leaves that matter follow p(r) (W + 2r)(H + 2r), a mixture of three power
  laws that we sample by inverting their CDFs; the centres are uniform in the enlarged box.
* Leaves are drawn front to back in batches. Each leaf lists the pixels whose centres it covers
  (a window around it, sized by its radius class), and a ``scatter_reduce(amin)`` keeps, for
  every pixel, the first leaf that covers it. Batches continue until every pixel is covered or
  ``max_leaves`` is reached (then the rest shows one more leaf behind everything).
* Edges are antialiased by rendering at ``supersample`` times the resolution and averaging
  ``supersample x supersample`` blocks (a box filter).
* Colours: by default every leaf gets an independent uniform colour in [0, 1]^C. With
  ``palette`` (a (K, C) table or a (C, H, W) image) leaves take colours drawn uniformly from its
  rows or pixels, so the colour histogram matches that of a photo.
"""

from __future__ import annotations

import math

import torch

__all__ = ["dead_leaves", "dead_leaves_batch"]

_MAX_WINDOW_ENTRIES = 2_000_000  # memory cap for one vectorised chunk of leaf windows


def _size_pair(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, int) and not isinstance(size, bool):
        size = (size, size)
    if (not isinstance(size, (tuple, list)) or len(size) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in size)):
        raise TypeError(f"size must be an int or a pair of ints (H, W), got {size!r}")
    if min(size) < 1:
        raise ValueError(f"image size must be positive, got {tuple(size)}")
    return int(size[0]), int(size[1])


def _power_integral(beta: float, a: float, b: float) -> float:
    """∫_a^b r^(-beta) dr."""
    if abs(beta - 1.0) < 1e-12:
        return math.log(b / a)
    return (b ** (1 - beta) - a ** (1 - beta)) / (1 - beta)


def _power_inverse_cdf(u: torch.Tensor, beta: float, a: float, b: float) -> torch.Tensor:
    """Inverse CDF of the density ∝ r^(-beta) on [a, b], applied to uniforms u."""
    if abs(beta - 1.0) < 1e-12:
        return a * (b / a) ** u
    e = 1.0 - beta
    return (a ** e + u * (b ** e - a ** e)) ** (1.0 / e)


def _sample_radii(n: int, height: int, width: int, r_min: float, r_max: float, alpha: float,
                  generator: torch.Generator | None) -> torch.Tensor:
    """Radii of leaves touching an H x W image: density ∝ r^-alpha (W + 2r)(H + 2r)."""
    betas = (alpha, alpha - 1.0, alpha - 2.0)
    coefficients = (height * width, 2.0 * (height + width), 4.0)
    masses = torch.tensor([c * _power_integral(b, r_min, r_max)
                           for c, b in zip(coefficients, betas)], dtype=torch.float64)
    component = torch.multinomial(masses / masses.sum(), n, replacement=True, generator=generator)
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    radii = torch.empty(n, dtype=torch.float64)
    for k, beta in enumerate(betas):
        pick = component == k
        radii[pick] = _power_inverse_cdf(u[pick], beta, r_min, r_max)
    return radii.clamp_(r_min, r_max)


def _coverage_per_leaf(height: int, width: int, r_min: float, r_max: float, alpha: float) -> float:
    """Expected number of times one sampled leaf covers a given pixel (ignoring borders)."""
    area = math.pi * _power_integral(alpha - 2.0, r_min, r_max)
    box = (height * width * _power_integral(alpha, r_min, r_max)
           + 2.0 * (height + width) * _power_integral(alpha - 1.0, r_min, r_max)
           + 4.0 * _power_integral(alpha - 2.0, r_min, r_max))
    return area / box


def _paint_first_leaf(label: torch.Tensor, cy: torch.Tensor, cx: torch.Tensor, r: torch.Tensor,
                      first_index: int, height: int, width: int) -> None:
    """For each pixel keep the smallest index of a leaf covering its centre (in place).

    ``label`` has H*W + 1 entries; the last one collects window pixels outside a leaf. Leaves are
    grouped by radius class (powers of two) so each class uses a window just large enough.
    """
    index = torch.arange(first_index, first_index + r.numel())
    radius_class = torch.ceil(torch.log2(r.clamp(min=1.0))).long()
    for k in torch.unique(radius_class).tolist():
        members = torch.nonzero(radius_class == k).squeeze(1)
        half = 2 ** k + 1
        win_h, win_w = min(2 * half + 1, height), min(2 * half + 1, width)
        chunk = max(1, _MAX_WINDOW_ENTRIES // (win_h * win_w))
        for start in range(0, members.numel(), chunk):
            sel = members[start:start + chunk]
            y, x, rad = cy[sel], cx[sel], r[sel]
            top = (torch.floor(y).long() - half).clamp(0, height - win_h)
            left = (torch.floor(x).long() - half).clamp(0, width - win_w)
            rows = top[:, None] + torch.arange(win_h)  # (n, win_h)
            cols = left[:, None] + torch.arange(win_w)  # (n, win_w)
            dy2 = (rows.float() + 0.5 - y[:, None]) ** 2
            dx2 = (cols.float() + 0.5 - x[:, None]) ** 2
            inside = dy2[:, :, None] + dx2[:, None, :] <= (rad * rad)[:, None, None]
            flat = rows[:, :, None] * width + cols[:, None, :]
            flat = torch.where(inside, flat, height * width)
            values = index[sel][:, None, None].expand_as(flat)
            label.scatter_reduce_(0, flat.reshape(-1), values.reshape(-1), reduce="amin")


def _palette_table(palette: torch.Tensor, channels: int) -> torch.Tensor:
    if not isinstance(palette, torch.Tensor):
        raise TypeError(f"palette must be a tensor, got {type(palette).__name__}")
    if palette.dim() == 3:  # an image (C, H, W): its pixels
        palette = palette.reshape(palette.shape[0], -1).T
    if palette.dim() != 2 or palette.shape[1] != channels or palette.shape[0] == 0:
        raise ValueError(f"palette must be (K, {channels}) colours or a ({channels}, H, W) image, "
                         f"got shape {tuple(palette.shape)}")
    palette = palette.detach().to("cpu", torch.float32)
    if not torch.isfinite(palette).all() or palette.min() < 0 or palette.max() > 1:
        raise ValueError("palette colours must be finite and lie in [0, 1]")
    return palette


def _leaf_colors(n: int, channels: int, palette: torch.Tensor | None,
                 generator: torch.Generator | None) -> torch.Tensor:
    if palette is None:
        return torch.rand(n, channels, generator=generator)
    pick = torch.randint(palette.shape[0], (n,), generator=generator)
    return palette[pick]


def dead_leaves(size: int | tuple[int, int], *, generator: torch.Generator | None = None,
                channels: int = 3, alpha: float = 3.0, r_min: float = 1.0,
                r_max: float | None = None, palette: torch.Tensor | None = None,
                supersample: int = 2, max_leaves: int = 500_000) -> torch.Tensor:
    """One dead-leaves image, a float32 tensor in [0, 1] of shape (channels, H, W).

    Args:
        size: H = W, or a pair (H, W), in pixels.
        generator: torch.Generator (CPU) for reproducible images; the same seed gives the same
            image.
        channels: number of colour channels (1 or 3 usually).
        alpha: exponent of the radius law p(r) ∝ r^-alpha (3 = scale invariant, spectrum 1/f^2).
        r_min, r_max: radius range in output pixels; r_max defaults to max(H, W).
        palette: optional (K, C) colours or (C, H, W) image whose pixels the leaves' colours are
            drawn from; default uniform colours in [0, 1]^C.
        supersample: render at this factor and average blocks (1 = aliased hard edges).
        max_leaves: safety cap on the number of leaves drawn.
    """
    if not isinstance(channels, int) or channels < 1:
        raise ValueError(f"channels must be a positive int, got {channels!r}")
    table = None if palette is None else _palette_table(palette, channels)
    leaves = _draw_leaves(size, generator=generator, alpha=alpha, r_min=r_min, r_max=r_max,
                          supersample=supersample, max_leaves=max_leaves,
                          colors=lambda n: _leaf_colors(n, channels, table, generator))
    big_h, big_w = leaves["label"].shape
    # Pixels still uncovered at the cap (label == number drawn) show one more leaf behind all.
    image = leaves["colors"][leaves["label"].reshape(-1)].T.reshape(1, channels, big_h, big_w)
    if supersample > 1:
        image = torch.nn.functional.avg_pool2d(image, supersample)
    return image[0].clamp_(0, 1)


def _draw_leaves(size, *, generator, alpha, r_min, r_max, supersample, max_leaves, colors):
    """Draw leaves front to back until the (supersampled) image is covered.

    Returns a dict: ``label`` (H*s, W*s) int64, the index of the visible leaf at each pixel
    (== number of leaves drawn where none covers it), leaf centres ``cy``, ``cx`` and radii
    ``r`` in supersampled pixel units (pixel (i, j) has its centre at (i + 0.5, j + 0.5)), and
    ``colors`` with one extra row for the background leaf.
    """
    height, width = _size_pair(size)
    if not isinstance(supersample, int) or supersample < 1:
        raise ValueError(f"supersample must be a positive int, got {supersample!r}")
    r_max = float(max(height, width)) if r_max is None else float(r_max)
    r_min = float(r_min)
    if not (math.isfinite(r_min) and math.isfinite(r_max) and 0 < r_min <= r_max):
        raise ValueError(f"need 0 < r_min <= r_max (finite), got r_min={r_min}, r_max={r_max}")
    if not math.isfinite(alpha):
        raise ValueError(f"alpha must be finite, got {alpha}")
    if generator is not None and generator.device.type != "cpu":
        raise ValueError("dead_leaves draws on the CPU; pass a CPU torch.Generator")
    if not isinstance(max_leaves, int) or max_leaves < 1:
        raise ValueError(f"max_leaves must be a positive int, got {max_leaves!r}")

    s = supersample
    big_h, big_w = height * s, width * s
    n_pixels = big_h * big_w
    no_leaf = torch.iinfo(torch.int64).max
    label = torch.full((n_pixels + 1,), no_leaf, dtype=torch.int64)
    # Batches sized so that each one covers a pixel about 4 times on average.
    batch = int(min(max_leaves, max(64, math.ceil(
        4.0 / _coverage_per_leaf(height, width, r_min, r_max, alpha)))))
    parts: dict[str, list[torch.Tensor]] = {"cy": [], "cx": [], "r": [], "colors": []}
    drawn = 0
    while drawn < max_leaves:
        n = min(batch, max_leaves - drawn)
        r = _sample_radii(n, height, width, r_min, r_max, alpha, generator)
        u = torch.rand(n, 2, generator=generator, dtype=torch.float64)
        cy = ((-r + u[:, 0] * (height + 2 * r)) * s).float()
        cx = ((-r + u[:, 1] * (width + 2 * r)) * s).float()
        r = (r * s).float()
        parts["colors"].append(colors(n))
        for key, value in (("cy", cy), ("cx", cx), ("r", r)):
            parts[key].append(value)
        _paint_first_leaf(label, cy, cx, r, drawn, big_h, big_w)
        drawn += n
        if not bool((label[:n_pixels] == no_leaf).any()):
            break
    parts["colors"].append(colors(1))
    out = {key: torch.cat(value) for key, value in parts.items()}
    out["label"] = label[:n_pixels].clamp(max=drawn).reshape(big_h, big_w)
    return out


def dead_leaves_batch(n: int, size: int | tuple[int, int],
                      generator: torch.Generator | None = None, **kwargs) -> torch.Tensor:
    """``n`` independent dead-leaves images, shape (n, C, H, W); keywords as :func:`dead_leaves`."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    return torch.stack([dead_leaves(size, generator=generator, **kwargs) for _ in range(n)])
