"""How HR images become LR images: MATLAB bicubic resizing, blur kernels, the linear operator ``A``
(with adjoint and exact pseudo-inverse) and the classical degradation pipeline."""

from .bicubic import bicubic_downscale, cubic, imresize, mod_crop, quantize_8bit
from .kernels import (
    anisotropic_gaussian_kernel,
    bicubic_kernel,
    gaussian_kernel,
    kernel_center_of_mass,
    kernel_covariance,
    mean_div2krk_kernel,
    random_div2krk_kernel,
    shift_kernel_to_center,
)
from .operators import BlurDownsample, Subsample, kernel_offset, kernel_target_center
from .pipeline import degrade, jpeg_compress

__all__ = [
    "imresize",
    "bicubic_downscale",
    "quantize_8bit",
    "mod_crop",
    "cubic",
    "gaussian_kernel",
    "anisotropic_gaussian_kernel",
    "bicubic_kernel",
    "random_div2krk_kernel",
    "mean_div2krk_kernel",
    "kernel_center_of_mass",
    "kernel_covariance",
    "shift_kernel_to_center",
    "BlurDownsample",
    "Subsample",
    "kernel_offset",
    "kernel_target_center",
    "degrade",
    "jpeg_compress",
]
