"""The four SR network frameworks of the survey by Wang, Chen & Hoi (2021), each as a small
working model with the same interface ``model(lr) -> sr`` (``(N, C, h, w) -> (N, C, s h, s w)``):

=====================  =====================================  ============================
framework              idea                                   model
=====================  =====================================  ============================
pre-upsampling         bicubic first, CNN refines at HR       :class:`PreUpsamplingSR` (SRCNN)
post-upsampling        CNN at LR, learned sub-pixel at the end :class:`PostUpsamplingSR` (ESPCN)
progressive            cascade of ``x 2`` stages               :class:`ProgressiveSR` (LapSRN)
iterative up-and-down  alternating up/down projection units    :class:`IterativeSR` (DBPN)
=====================  =====================================  ============================

:func:`build_framework` makes one by name; :mod:`.common` holds the learned upsamplers
(transposed vs sub-pixel convolution) and :func:`checkerboard_energy`.
"""

from __future__ import annotations

from .common import (
    BicubicUpsample,
    SRModel,
    SubPixelUpsampler,
    bicubic_upsample,
    checkerboard_energy,
    count_parameters,
    deconv_upsampler,
    icnr_,
)
from .iterative import DownProjection, IterativeSR, UpProjection
from .post_upsampling import PostUpsamplingSR
from .pre_upsampling import PreUpsamplingSR
from .progressive import ProgressiveSR, bilinear_deconv_weight

FRAMEWORKS: dict[str, type[SRModel]] = {
    "pre-upsampling": PreUpsamplingSR,
    "post-upsampling": PostUpsamplingSR,
    "progressive": ProgressiveSR,
    "iterative": IterativeSR,
}


def build_framework(name: str, scale: int = 4, channels: int = 3, **kwargs) -> SRModel:
    """A model of the framework ``name`` (a key of :data:`FRAMEWORKS`); ``kwargs`` go to its class."""
    if name not in FRAMEWORKS:
        raise ValueError(f"unknown framework {name!r}; choose one of {sorted(FRAMEWORKS)}")
    return FRAMEWORKS[name](scale, channels, **kwargs)


__all__ = [
    "FRAMEWORKS",
    "build_framework",
    "SRModel",
    "PreUpsamplingSR",
    "PostUpsamplingSR",
    "ProgressiveSR",
    "IterativeSR",
    "UpProjection",
    "DownProjection",
    "SubPixelUpsampler",
    "icnr_",
    "deconv_upsampler",
    "bilinear_deconv_weight",
    "bicubic_upsample",
    "BicubicUpsample",
    "checkerboard_energy",
    "count_parameters",
]
