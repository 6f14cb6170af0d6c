"""Cross-scale patch recurrence (Michaeli & Irani, 2013): the principle KernelGAN turns into a GAN,
as a direct measurement for a candidate kernel."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from course_lib.degradation import degrade

from .crops import _luma

__all__ = ["cross_scale_recurrence"]


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
