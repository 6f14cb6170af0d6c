"""The regularizer ``R`` on the generator's kernel: sum to one, boundaries, sparsity, centre
(official ``loss.py``). Each term is a function of the (K, K) kernel alone, differentiable."""

from __future__ import annotations

import torch

from course_lib.degradation import kernel_target_centre

__all__ = [
    "boundary_mask",
    "sum_to_one_loss",
    "boundaries_loss",
    "sparsity_loss",
    "centre_loss",
    "kernel_regularizers",
]


def boundary_mask(size: int, penalty: float = 30.0) -> torch.Tensor:
    """Weights that punish kernel mass near the border: ``penalty * (1 - G / max G)`` with ``G`` a
    Gaussian of standard deviation ``size``, set to zero on the central square (all but a frame of
    ``(size - ceil(size / 2)) // 2 - 1`` pixels; a 2-pixel frame for 13x13) (official
    ``util.py:create_penalty_mask``)."""
    z = torch.arange(size, dtype=torch.float64) - (size - 1) // 2
    g = torch.exp(-(z**2) / (2.0 * size**2))
    g2 = torch.outer(g, g)
    mask = 1.0 - g2 / g2.max()
    margin = (size - (size // 2 + size % 2)) // 2 - 1
    if margin > 0:
        mask[margin:-margin, margin:-margin] = 0.0
    else:
        mask.zero_()
    return (penalty * mask).to(torch.float32)


def sum_to_one_loss(kernel: torch.Tensor) -> torch.Tensor:
    """``|1 - sum(k)|``: a blur kernel keeps the mean brightness.

    Paper: Bell-Kligler et al. 2019 (NeurIPS version), regularizer R, eq. number not verified · Book: chapter 7,
    section "What each regularizer prevents" · Official code: sefibk/KernelGAN, loss.py:SumOfWeightsLoss
    """
    return (1.0 - kernel.sum()).abs()


def boundaries_loss(kernel: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``mean |k * mask|`` with :func:`~course_lib.kernelgan.regularizers.boundary_mask`: no mass near the kernel's border.

    Paper: Bell-Kligler et al. 2019 (NeurIPS version), regularizer R, eq. number not verified · Book: chapter 7,
    section "What each regularizer prevents" · Official code: sefibk/KernelGAN, loss.py:BoundariesLoss
    """
    mask = boundary_mask(kernel.shape[-1]) if mask is None else mask
    return (kernel * mask.to(kernel)).abs().mean()


def sparsity_loss(kernel: torch.Tensor, power: float = 0.2) -> torch.Tensor:
    """``mean |k|^0.2``: a concave penalty that prefers few non-zero taps (a compact kernel).

    Paper: Bell-Kligler et al. 2019 (NeurIPS version), regularizer R, eq. number not verified · Book: chapter 7,
    section "What each regularizer prevents" · Official code: sefibk/KernelGAN, loss.py:SparsityLoss
    """
    magnitude = kernel.abs()
    nonzero = magnitude > 0  # |k|^0.2 has an infinite slope at 0: keep exact zeros out of autograd
    return torch.where(nonzero, magnitude.clamp_min(1e-30).pow(power), torch.zeros_like(magnitude)).mean()


def centre_loss(kernel: torch.Tensor, scale: int = 2) -> torch.Tensor:
    """Mean squared distance between the kernel's centre of mass (row, col) and the target centre
    ``kernel_target_centre(K, scale)`` (6.5 for 13x13 at x2); fixes the otherwise free translation.

    Paper: Bell-Kligler et al. 2019 (NeurIPS version), regularizer R, eq. number not verified · Book: chapter 7,
    section "What each regularizer prevents" · Official code: sefibk/KernelGAN, loss.py:CentralizedLoss
    """
    size = kernel.shape[-1]
    idx = torch.arange(size, dtype=kernel.dtype, device=kernel.device)
    total = kernel.sum()
    centre = torch.stack([(kernel.sum(1) * idx).sum() / total, (kernel.sum(0) * idx).sum() / total])
    target = float(kernel_target_centre(size, scale))
    return ((centre - target) ** 2).mean()


def kernel_regularizers(kernel: torch.Tensor, scale: int = 2, mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """All four kernel terms of the paper's ``R``: sum to one, boundaries, sparsity, centre.

    Paper: Bell-Kligler et al. 2019 (NeurIPS version), regularizer R, eq. number not verified · Book: chapter 7,
    section "What each regularizer prevents" · Official code: sefibk/KernelGAN,
    kernelGAN.py:KernelGAN.calc_constraints
    """
    return {
        "sum_to_one": sum_to_one_loss(kernel),
        "boundaries": boundaries_loss(kernel, mask),
        "sparsity": sparsity_loss(kernel),
        "centre": centre_loss(kernel, scale),
    }
