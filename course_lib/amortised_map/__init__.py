"""Amortised MAP inference for super-resolution (Sønderby et al. 2017), chapter 3.

* :mod:`.projection`: the affine projection layer ``f(y) = (I - A^+ A) g(y) + A^+ y`` with the
  exact pseudo-inverse of :class:`~course_lib.degradation.operators.BlurDownsample` or a learned one.
* :mod:`.affgan`, :mod:`.affdg`, :mod:`.affll`: the three solvers of the cross-entropy objective.
* :mod:`.baselines`: MSE, Aff-MSE and MAE regression, and the networks.
* :mod:`.toy2d`: the 2D toy problem with an exact MAP; :mod:`.image_demo`: the image experiment.

Equation numbers: the paper's text was not at hand when this was written, so the docstrings name the
method ("AffGAN", "affine projection") rather than an equation number; no official code is public.
"""

from __future__ import annotations

from ..degradation import MatrixOperator  # the 2D toy's operator, re-exported
from .affdg import (
    ConvDenoiser,
    MLPDenoiser,
    affdg_loss,
    denoiser_loss,
    denoiser_residual,
    gaussian_mmse_denoiser,
    map_by_score_ascent,
    score_estimate,
    train_denoiser,
)
from .affgan import (
    ImageDiscriminator,
    add_instance_noise,
    affgan_step,
    generator_loss,
    instance_noise_sigma,
    noisy_discriminator_loss,
    train_affgan,
)
from .affll import affll_loss, bits_per_dim, density_nll, freeze, train_density
from .baselines import SRNet, mae_loss, mlp, mse_loss
from .projection import (
    AffineProjection,
    LearnedPseudoInverse,
    ProjectedNetwork,
    blur_operator,
    consistency_psnr,
    consistency_rmse,
    fit_pseudo_inverse,
)
from .tables import markdown_table
from .toy2d import ToyMAPProblem, evaluate_toy, map_demo_prior, plot_toy_demo

__all__ = [
    "AffineProjection", "LearnedPseudoInverse", "MatrixOperator", "ProjectedNetwork", "blur_operator",
    "consistency_psnr", "consistency_rmse", "fit_pseudo_inverse",
    "ImageDiscriminator", "add_instance_noise", "affgan_step", "noisy_discriminator_loss", "generator_loss",
    "instance_noise_sigma", "train_affgan",
    "ConvDenoiser", "MLPDenoiser", "affdg_loss", "denoiser_loss", "gaussian_mmse_denoiser",
    "denoiser_residual", "map_by_score_ascent", "score_estimate", "train_denoiser",
    "affll_loss", "bits_per_dim", "density_nll", "freeze", "train_density",
    "SRNet", "mae_loss", "mlp", "mse_loss",
    "ToyMAPProblem", "evaluate_toy", "map_demo_prior", "plot_toy_demo",
    "markdown_table",
]
