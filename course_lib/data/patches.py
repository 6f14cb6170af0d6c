"""Random training patches: crops of photos with flips and rotations, reproducible by step.

:class:`PatchSampler` is the ``batch_fn(step)`` that :func:`course_lib.training.fit` wants:
``sampler(step)`` returns the same batch for the same ``(seed, step)`` whatever happened before,
so a resumed training run sees exactly the batches an uninterrupted one would have seen.
:class:`PatchDataset` offers the same patches as a ``torch.utils.data.Dataset`` (item ``i`` is a
fixed patch) for use with a ``DataLoader``. :func:`training_sampler` is the sampler the paper
models (IRN, HCFlow) train with: the training photos and dead leaves, never a held-out photo.

How a patch is drawn (from one ``torch.Generator`` seeded by ``(seed, step)`` or ``(seed, i)``):

1. with probability ``dead_leaves_fraction`` it is a fresh dead-leaves image (unlimited data with
   natural-image statistics, see :mod:`course_lib.data.dead_leaves`); otherwise
2. an image is chosen with probability proportional to its area (every pixel is equally likely
   to be used), and a ``patch_size`` square is cropped at a uniformly random position; with
   ``scale`` the crop's corner is a multiple of ``scale``, so the crop lines up with the
   low-resolution grid of the whole image;
3. with ``augment`` one of the 8 symmetries of the square (rotations by multiples of 90° and
   their mirror images, :func:`dihedral`) is applied, each with probability 1/8.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from .dead_leaves import dead_leaves
from .photos import EVAL_PHOTOS, TRAIN_PHOTOS, load_photo

__all__ = ["PatchSampler", "PatchDataset", "dihedral", "seeded_generator", "training_sampler"]


def dihedral(x: torch.Tensor, t: int, *, inverse: bool = False) -> torch.Tensor:
    """Apply symmetry ``t`` in 0..7 of the square to the last two dims of ``x``.

    ``t % 4`` counter-clockwise quarter turns, then a left-right mirror when ``t >= 4``.
    ``inverse=True`` undoes the same transform (used e.g. for geometric self-ensembles).
    """
    if not isinstance(t, int) or not 0 <= t < 8:
        raise ValueError(f"dihedral transform index must be an int in 0..7, got {t!r}")
    if x.dim() < 2:
        raise ValueError(f"need at least 2 dims, got shape {tuple(x.shape)}")
    turns, mirror = t % 4, t >= 4
    if inverse:
        if mirror:
            x = torch.flip(x, dims=(-1,))
        return torch.rot90(x, -turns, dims=(-2, -1))
    x = torch.rot90(x, turns, dims=(-2, -1))
    return torch.flip(x, dims=(-1,)) if mirror else x


def seeded_generator(seed: int, index: int) -> torch.Generator:
    """A CPU generator whose state depends only on ``(seed, index)``, well mixed by SeedSequence."""
    for name, value in (("seed", seed), ("step/index", index)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    words = np.random.SeedSequence([int(seed), int(index)]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed((int(words[0]) << 31) ^ int(words[1]))


class _PatchSource:
    """Validated images plus the one routine that draws patches from a generator."""

    def __init__(self, images, patch_size: int, *, augment: bool, scale: int | None,
                 dead_leaves_fraction: float, dead_leaves_options: Mapping | None):
        if not isinstance(patch_size, int) or isinstance(patch_size, bool) or patch_size < 1:
            raise ValueError(f"patch_size must be a positive int, got {patch_size!r}")
        if scale is not None:
            if not isinstance(scale, int) or isinstance(scale, bool) or scale < 1:
                raise ValueError(f"scale must be a positive int or None, got {scale!r}")
            if patch_size % scale:
                raise ValueError(f"patch_size {patch_size} is not divisible by scale {scale}")
        if not 0.0 <= float(dead_leaves_fraction) <= 1.0:
            raise ValueError(f"dead_leaves_fraction must be in [0, 1], got {dead_leaves_fraction}")
        self.patch_size = patch_size
        self.augment = bool(augment)
        self.scale = scale
        self.dead_leaves_fraction = float(dead_leaves_fraction)
        self.dead_leaves_options = dict(dead_leaves_options or {})
        self.names, self.images = self._collect(images)
        if not self.images and self.dead_leaves_fraction < 1.0:
            raise ValueError("no images given (pass at least one, or dead_leaves_fraction=1.0)")
        self.channels = self._check_images(self.dead_leaves_options.get("channels"))
        self.device = self.images[0].device if self.images else torch.device("cpu")
        step = scale or 1
        self.positions = torch.tensor(
            [[(img.shape[1] - patch_size) // step + 1, (img.shape[2] - patch_size) // step + 1]
             for img in self.images], dtype=torch.float64).reshape(-1, 2)
        self.area = torch.tensor([img.shape[1] * img.shape[2] for img in self.images],
                                 dtype=torch.float64)

    @staticmethod
    def _collect(images) -> tuple[list[str], list[torch.Tensor]]:
        if isinstance(images, (torch.Tensor, str)):
            if isinstance(images, torch.Tensor) and images.dim() == 4:
                images = list(images)
            else:
                images = [images]
        if isinstance(images, Mapping):
            items = [(str(key), value) for key, value in images.items()]
        elif isinstance(images, Sequence):
            items = [(value if isinstance(value, str) else f"image #{i}", value)
                     for i, value in enumerate(images)]
        else:
            raise TypeError("images must be a list/tuple/dict of (C, H, W) tensors or photo names, "
                            f"or an (N, C, H, W) tensor; got {type(images).__name__}")
        names, tensors = [], []
        for name, value in items:
            if isinstance(value, str):
                value = load_photo(value)
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"{name}: expected a tensor or a photo name, "
                                f"got {type(value).__name__}")
            if value.dim() != 3:
                raise ValueError(f"{name}: expected shape (C, H, W), got {tuple(value.shape)}")
            if not value.is_floating_point():
                raise TypeError(f"{name}: expected a floating-point image, got {value.dtype}")
            if not torch.isfinite(value).all():
                raise ValueError(f"{name}: image contains non-finite values")
            names.append(name)
            tensors.append(value.detach())
        return names, tensors

    def _check_images(self, dl_channels: int | None) -> int:
        channels = {img.shape[0] for img in self.images}
        if len(channels) > 1:
            raise ValueError(f"all images need the same channel count, got {sorted(channels)}")
        if len({img.device for img in self.images}) > 1:
            raise ValueError("all images must be on the same device")
        for name, img in zip(self.names, self.images):
            if min(img.shape[1:]) < self.patch_size:
                raise ValueError(f"{name} of size {tuple(img.shape[1:])} is smaller than the "
                                 f"patch size {self.patch_size}")
        count = channels.pop() if channels else (dl_channels or 3)
        if dl_channels is not None and dl_channels != count:
            raise ValueError(f"dead-leaves channels {dl_channels} differ from the images' {count}")
        return count

    def draw(self, generator: torch.Generator, n: int) -> torch.Tensor:
        """n patches (n, C, p, p); all randomness comes from ``generator`` in a fixed order."""
        p, step = self.patch_size, self.scale or 1
        synthetic = torch.rand(n, generator=generator) < self.dead_leaves_fraction
        if self.images:
            which = torch.multinomial(self.area, n, replacement=True, generator=generator)
        else:
            which = torch.zeros(n, dtype=torch.long)
        corner = torch.rand(n, 2, generator=generator, dtype=torch.float64)
        corner = (corner * self.positions[which]).floor().long() * step if self.images else None
        transform = torch.randint(8, (n,), generator=generator)
        options = {"channels": self.channels, **self.dead_leaves_options}
        patches = []
        for k in range(n):
            if synthetic[k]:
                patch = dead_leaves(p, generator=generator, **options).to(self.device)
            else:
                img = self.images[int(which[k])]
                top, left = int(corner[k, 0]), int(corner[k, 1])
                patch = img[:, top:top + p, left:left + p]
            if self.augment:
                patch = dihedral(patch, int(transform[k]))
            patches.append(patch)
        return torch.stack(patches).to(torch.float32).contiguous()


class PatchSampler:
    """Callable ``sampler(step) -> (batch_size, C, p, p)`` float32 patches, deterministic in step.

    Args:
        images: (C, H, W) tensors, photo names (see :func:`~course_lib.data.photos.load_photo`), a dict
            name -> tensor, or an (N, C, H, W) tensor.
        patch_size: side p of the square patches.
        batch_size: patches per call.
        seed: with ``step`` the only source of randomness (``seeded_generator(seed, step)``).
        augment: apply a random one of the 8 flips/rotations to each patch.
        scale: if given, p must be divisible by it and crops start at multiples of it.
        dead_leaves_fraction: probability that a patch is a dead-leaves image instead of a crop.
        dead_leaves_options: keyword arguments for :func:`course_lib.data.dead_leaves`.
    """

    def __init__(self, images, patch_size: int, batch_size: int, *, seed: int = 0,
                 augment: bool = True, scale: int | None = None,
                 dead_leaves_fraction: float = 0.0, dead_leaves_options: Mapping | None = None):
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        seeded_generator(seed, 0)  # validates the seed
        self.source = _PatchSource(images, patch_size, augment=augment, scale=scale,
                                   dead_leaves_fraction=dead_leaves_fraction,
                                   dead_leaves_options=dead_leaves_options)
        self.batch_size = batch_size
        self.seed = seed

    @property
    def patch_size(self) -> int:
        return self.source.patch_size

    @property
    def channels(self) -> int:
        return self.source.channels

    def __call__(self, step: int) -> torch.Tensor:
        return self.source.draw(seeded_generator(self.seed, step), self.batch_size)


def training_sampler(patch: int, batch: int, *, scale: int | None = None, seed: int = 0,
                     dead_leaves_fraction: float = 0.25, images: Sequence | None = None) -> PatchSampler:
    """The training batches of the paper models (IRN, HCFlow): a :class:`PatchSampler` with
    ``sampler(step) -> (batch, 3, patch, patch)`` flipped/rotated patches of ``TRAIN_PHOTOS`` (or
    ``images``, names or tensors), a fraction ``dead_leaves_fraction`` of them fresh dead-leaves
    images; deterministic in the step (exact resume). Names of held-out ``EVAL_PHOTOS`` are refused."""
    images = list(images) if images is not None else list(TRAIN_PHOTOS)
    leaked = [name for name in images if isinstance(name, str) and name in EVAL_PHOTOS]
    if leaked:
        raise ValueError(f"{leaked} are held-out evaluation photos; do not train on them")
    return PatchSampler(images, patch, batch, seed=seed, augment=True, scale=scale,
                        dead_leaves_fraction=dead_leaves_fraction)


class PatchDataset(torch.utils.data.Dataset):
    """The same patches as a map-style Dataset: item ``i`` is a fixed (C, p, p) patch.

    ``length`` is the size of a virtual epoch; other arguments as :class:`PatchSampler`. With a
    shuffling DataLoader every epoch visits the same ``length`` patches in a new order; use
    ``PatchSampler`` (or a larger ``length``) for fresh patches at every step.
    """

    def __init__(self, images, patch_size: int, *, length: int = 1000, seed: int = 0,
                 augment: bool = True, scale: int | None = None,
                 dead_leaves_fraction: float = 0.0, dead_leaves_options: Mapping | None = None):
        if not isinstance(length, int) or isinstance(length, bool) or length < 1:
            raise ValueError(f"length must be a positive int, got {length!r}")
        seeded_generator(seed, 0)
        self.source = _PatchSource(images, patch_size, augment=augment, scale=scale,
                                   dead_leaves_fraction=dead_leaves_fraction,
                                   dead_leaves_options=dead_leaves_options)
        self.length = length
        self.seed = seed

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> torch.Tensor:
        if not isinstance(index, (int, np.integer)) or isinstance(index, bool):
            raise TypeError(f"index must be an int, got {type(index).__name__}")
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for a dataset of length {self.length}")
        return self.source.draw(seeded_generator(self.seed, int(index)), 1)[0]
