"""Input checks shared by the library's public entry points, so that bad input gets a clear error.

The course's images are float tensors in ``[0, 1]``. An image in the 0-255 range passed by mistake
gives silently wrong results everywhere (a PSNR of -9 dB, an all-white IRN downscale, NaN HCFlow
samples), so every public function that takes an image calls :func:`check_unit_range`. SR outputs
may overshoot ``[0, 1]`` a little (the cubic kernel has negative lobes), hence the tolerance.
"""

from __future__ import annotations

import torch

__all__ = ["RANGE_TOLERANCE", "check_unit_range"]

# values in [-RANGE_TOLERANCE, 1 + RANGE_TOLERANCE] pass; bicubic overshoot stays well inside
RANGE_TOLERANCE = 0.5


def check_unit_range(img: torch.Tensor, name: str, *, data_range: float = 1.0) -> None:
    """Raise ``ValueError`` unless ``img / data_range`` lies in ``[-0.5, 1.5]`` (``[0, 1]`` with a tolerance
    for overshoot), naming what it got and what is expected."""
    if img.numel() == 0:
        return
    values = img.detach()
    low, high = float(values.min()) / data_range, float(values.max()) / data_range
    if low >= -RANGE_TOLERANCE and high <= 1 + RANGE_TOLERANCE:
        return
    hint = ""
    if data_range == 1.0 and high > 1 + RANGE_TOLERANCE and high <= 255 * (1 + RANGE_TOLERANCE):
        hint = " It looks like a 0-255 image: divide it by 255."
    raise ValueError(f"{name} has values in [{low * data_range:.4g}, {high * data_range:.4g}], but course_lib expects "
                     f"float images in [0, {data_range:g}] (tolerance {RANGE_TOLERANCE:g} for overshoot).{hint}")
