"""Invertible layers and normalizing-flow models (chapter 4; used by IRN, HCFlow and AffLL).

The contract (see ``course_lib.flows.base``): every layer maps ``forward(x, cond=None) ->
(z, logdet)`` with ``logdet`` of shape (N,), and back with ``inverse(z, cond=None) -> x``;
``inverse_and_logdet(z, cond=None) -> (x, -logdet)`` gives the inverse with its log-determinant.
``UniformDequantization`` is not a layer of that kind (it adds noise); it is applied to the data.
Multi-scale models return a list of latents; Gaussian split priors are layers (``Gaussianize``),
so every latent is scored under N(0, I).
"""

from __future__ import annotations

from .actnorm import ActNorm
from .base import FlowSequential, Inverse, InvertibleModule
from .coupling import AdditiveAffineCoupling, AdditiveCoupling, AffineCoupling, AffineInjector, soft_clamp
from .dequantization import UniformDequantization
from .distributions import (
    ConditionalDiagonalGaussian,
    DiagonalGaussian,
    StandardNormal,
    gaussian_log_prob,
)
from .invconv import InvertibleConv1x1
from .models import FlowModel, Glow, MultiScaleFlow, RealNVP2D, glow_step
from .reshape import HaarDownsampling, Permutation, Squeeze
from .split import Gaussianize, Split
from .subnets import MLP, ConvNet, DenseBlock, subnet
from .utils import autograd_logdet, check_invertible, nll_bits_per_dim, num_dims

__all__ = [
    "ActNorm",
    "AdditiveAffineCoupling",
    "AdditiveCoupling",
    "AffineCoupling",
    "AffineInjector",
    "ConditionalDiagonalGaussian",
    "ConvNet",
    "DenseBlock",
    "DiagonalGaussian",
    "FlowModel",
    "FlowSequential",
    "Gaussianize",
    "Glow",
    "HaarDownsampling",
    "Inverse",
    "InvertibleConv1x1",
    "InvertibleModule",
    "MLP",
    "MultiScaleFlow",
    "Permutation",
    "RealNVP2D",
    "Split",
    "Squeeze",
    "StandardNormal",
    "UniformDequantization",
    "autograd_logdet",
    "check_invertible",
    "gaussian_log_prob",
    "glow_step",
    "nll_bits_per_dim",
    "num_dims",
    "soft_clamp",
    "subnet",
]
