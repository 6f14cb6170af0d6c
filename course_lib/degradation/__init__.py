"""How HR images become LR images: MATLAB bicubic resizing, blur kernels, the one family of linear
operators ``A`` (forward, adjoint, pseudo-inverse, projections, ``prox_l2``) that every method and
metric of the course uses, and the classical degradation pipeline."""

from .bicubic import bicubic_downscale, cubic, imresize, mod_crop, quantize_8bit
from .kernels import (
    analytic_x4_kernel,
    anisotropic_gaussian_kernel,
    bicubic_kernel,
    embed_kernel,
    gaussian_kernel,
    kernel_centre_of_mass,
    kernel_covariance,
    mean_div2krk_kernel,
    post_process_kernel,
    random_div2krk_kernel,
    shift_kernel_to_centre,
)
from .operators import (
    BOUNDARIES,
    BicubicDownsample,
    BlurDownsample,
    CirculantWeight,
    ImageOperator,
    LinearOperator,
    MatrixOperator,
    Subsample,
    conjugate_gradient,
    gradient_penalty,
    kernel_offset,
    kernel_target_centre,
)
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
    "kernel_centre_of_mass",
    "kernel_covariance",
    "shift_kernel_to_centre",
    "embed_kernel",
    "post_process_kernel",
    "analytic_x4_kernel",
    "LinearOperator",
    "ImageOperator",
    "BlurDownsample",
    "BicubicDownsample",
    "MatrixOperator",
    "Subsample",
    "CirculantWeight",
    "gradient_penalty",
    "conjugate_gradient",
    "BOUNDARIES",
    "kernel_offset",
    "kernel_target_centre",
    "degrade",
    "jpeg_compress",
]
