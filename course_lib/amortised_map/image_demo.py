"""The image experiment of chapter 3: MSE, MAE, Aff-MSE, AffGAN, AffDG and AffLL on one SR task.

An :class:`ImageTask` bundles the degradation ``A`` (Gaussian blur + subsampling, periodic
boundaries), samplers of HR training patches and held-out evaluation images. Training functions
mirror those of :mod:`course_lib.amortised_map.toy2d`; :func:`evaluate_images` measures PSNR/SSIM against the ground
truth, the LR consistency ``A f(y) = y`` and the cross-entropy of the outputs under an
independently trained flow (a density "judge" that no method was trained with).

Every MAP method starts from the Aff-MSE network (a warm start: the posterior mean is a sensible,
consistent first guess) and then trains on its own objective; the chapter says so next to the
numbers.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from ..data import EVAL_PHOTOS, TRAIN_PHOTOS, PatchSampler, dead_leaves, load_photo
from ..degradation import BlurDownsample, gaussian_kernel
from ..flows import Glow
from ..metrics import gradient_energy, psnr, ssim
from ..training import evaluation_mode, fit
from .affdg import ConvDenoiser, affdg_loss, denoiser_residual, train_denoiser
from .affgan import ImageDiscriminator, instance_noise_sigma, train_affgan
from .affll import affll_loss, bits_per_dim, freeze, train_density
from .baselines import SRNet, mae_loss, mse_loss
from .projection import ProjectedNetwork, blur_operator, consistency_psnr

__all__ = [
    "ImageTask",
    "dead_leaves_task",
    "photo_task",
    "sr_network",
    "train_regression",
    "train_image_affgan",
    "train_image_denoiser",
    "train_image_affdg",
    "train_image_flow",
    "train_image_affll",
    "super_resolve",
    "evaluate_images",
]

Tensor = torch.Tensor


@dataclass
class ImageTask:
    """What every method of the image experiment shares.

    ``train`` draws HR patches for the networks (the LR inputs are ``A`` of them), ``prior`` draws
    independent HR patches for the discriminator, the denoiser and AffLL's flow, ``judge`` draws
    patches of *other* images for the independent density judge, and ``eval_hr`` are held-out
    images ``(N, C, H, W)``.
    """

    name: str
    operator: BlurDownsample
    train: PatchSampler
    prior: PatchSampler
    judge: PatchSampler
    eval_hr: Tensor

    @property
    def scale(self) -> int:
        return self.operator.scale

    @property
    def channels(self) -> int:
        return self.eval_hr.shape[1]

    def pairs(self, step: int) -> tuple[Tensor, Tensor]:
        """``(y, x)`` with ``x`` a batch of HR training patches and ``y = A x``."""
        x = self.train(step)
        return self.operator.A(x), x

    def lr_batch(self, step: int) -> Tensor:
        return self.operator.A(self.train(step))

    @property
    def eval_lr(self) -> Tensor:
        return self.operator.A(self.eval_hr)


def _blur(scale: int, kernel_size: int, blur_sigma: float) -> BlurDownsample:
    return blur_operator(gaussian_kernel(kernel_size, blur_sigma), scale)


def dead_leaves_task(*, scale: int = 4, kernel_size: int = 16, blur_sigma: float = 1.6, patch_size: int = 32,
                     batch_size: int = 16, n_images: int = 16, image_size: int = 128, n_eval: int = 4,
                     eval_size: int = 96, r_min: float = 2.0, tones: tuple[float, ...] | None = None,
                     seed: int = 0) -> ImageTask:
    """Dead-leaves images (Lee et al. 2001): a prior with sharp edges whose samples we can draw at will.

    Colour leaves by default; with ``tones`` (grey levels in [0, 1]) grayscale images whose leaves
    take only those values, e.g. ``(0.15, 0.85)``: a prior with no mass on intermediate greys, so
    a blurred edge is plainly improbable under it. Three disjoint sets of images come from three
    seeds: training/prior patches, the judge's patches, and the held-out evaluation images.
    """
    if eval_size % scale or patch_size % scale:
        raise ValueError(f"patch_size and eval_size must be divisible by the scale {scale}")
    palette, channels = None, 3
    if tones is not None:
        palette = torch.as_tensor(tones, dtype=torch.float32).reshape(-1, 1)
        if palette.numel() < 2 or not bool(((palette >= 0) & (palette <= 1)).all()):
            raise ValueError(f"tones must be at least two grey levels in [0, 1], got {tones!r}")
        channels = 1

    def images(n: int, size: int, offset: int) -> list[Tensor]:
        g = torch.Generator().manual_seed(seed * 7919 + offset)
        return [dead_leaves(size, generator=g, r_min=r_min, channels=channels, palette=palette) for _ in range(n)]

    train_images = images(n_images, image_size, 1)
    judge_images = images(n_images, image_size, 2)
    eval_hr = torch.stack(images(n_eval, eval_size, 3))
    return ImageTask(
        name="dead leaves",
        operator=_blur(scale, kernel_size, blur_sigma),
        train=PatchSampler(train_images, patch_size, batch_size, seed=seed, scale=scale),
        prior=PatchSampler(train_images, patch_size, batch_size, seed=seed + 1, scale=scale),
        judge=PatchSampler(judge_images, patch_size, batch_size, seed=seed + 2, scale=scale),
        eval_hr=eval_hr,
    )


def photo_task(*, scale: int = 4, kernel_size: int = 16, blur_sigma: float = 1.6, patch_size: int = 48,
               batch_size: int = 16, eval_size: int = 128, seed: int = 0) -> ImageTask:
    """Photos shipped with scikit-image / scikit-learn / matplotlib: patches of ``TRAIN_PHOTOS``
    for training (and, with another seed, for the judge), centre crops of ``EVAL_PHOTOS`` held out."""
    if eval_size % scale or patch_size % scale:
        raise ValueError(f"patch_size and eval_size must be divisible by the scale {scale}")
    crops = []
    for name in EVAL_PHOTOS:
        img = load_photo(name)
        top = (img.shape[1] - eval_size) // 2
        left = (img.shape[2] - eval_size) // 2
        crops.append(img[:, top:top + eval_size, left:left + eval_size])
    train_images = [load_photo(name) for name in TRAIN_PHOTOS]
    return ImageTask(
        name="photos",
        operator=_blur(scale, kernel_size, blur_sigma),
        train=PatchSampler(train_images, patch_size, batch_size, seed=seed, scale=scale),
        prior=PatchSampler(train_images, patch_size, batch_size, seed=seed + 1, scale=scale),
        judge=PatchSampler(train_images, patch_size, batch_size, seed=seed + 2, scale=scale),
        eval_hr=torch.stack(crops),
    )


# --------------------------------------------------------------------------- training
def sr_network(task: ImageTask, *, projected: bool, features: int = 32, layers: int = 4, hr_features: int = 16,
               hr_layers: int = 2) -> nn.Module:
    """:class:`~course_lib.amortised_map.baselines.SRNet` for the task (by default with two
    convolutions at HR, which draw sharp edges far more readily than a plain sub-pixel shuffle),
    wrapped in the exact affine projection when ``projected``."""
    net = SRNet(task.scale, task.channels, features, layers, hr_features=hr_features, hr_layers=hr_layers)
    return ProjectedNetwork(net, task.operator) if projected else net


def _device(model: nn.Module, device) -> torch.device:
    return torch.device(device) if device is not None else next(model.parameters()).device


def train_regression(task: ImageTask, steps: int, *, loss: str = "mse", projected: bool = False,
                     init: nn.Module | None = None, lr: float = 1e-3, device=None, seed: int = 0,
                     progress: bool = True, **net_kwargs):
    """MSE or MAE regression on pairs ``(A x, x)``; ``projected=True`` with MSE is Aff-MSE.
    With ``init`` a copy of that model trains on (a fresh optimiser, as the MAP methods' warm
    start gets), e.g. to give Aff-MSE as many steps as a MAP method. Returns ``(model, history)``."""
    losses = {"mse": mse_loss, "mae": mae_loss}
    if loss not in losses:
        raise ValueError(f"loss must be 'mse' or 'mae', got {loss!r}")
    torch.manual_seed(seed)
    if init is None:
        model = sr_network(task, projected=projected, **net_kwargs)
    elif isinstance(init, ProjectedNetwork) != projected:
        raise ValueError(f"init is {'' if isinstance(init, ProjectedNetwork) else 'not '}projected, "
                         f"but projected={projected}")
    else:
        model = copy.deepcopy(init)
    name = ("Aff-" if projected else "") + loss.upper()
    history = fit(model, losses[loss], task.pairs, steps, lr=lr, device=device, seed=seed,
                  progress=progress, desc=name, tag=f"image-{name}")
    return model, history


def _warm_start(task: ImageTask, init: nn.Module | None) -> nn.Module:
    if init is None:
        return sr_network(task, projected=True)
    if not isinstance(init, ProjectedNetwork):
        raise TypeError("the MAP methods start from a projected network (e.g. the Aff-MSE model)")
    return copy.deepcopy(init)


def train_image_affgan(task: ImageTask, steps: int, *, init: nn.Module | None = None, sigma_start: float = 0.1,
                       sigma_end: float = 0.01, lr_g: float = 1e-4, lr_d: float = 2e-4, d_steps: int = 1,
                       features: int = 32, device=None, seed: int = 0, progress: bool = True):
    """AffGAN: the projected network against an
    :class:`~course_lib.amortised_map.affgan.ImageDiscriminator` with annealed instance noise.
    Returns ``(generator, {"history": ..., "discriminator": ...})``."""
    torch.manual_seed(seed)
    generator = _warm_start(task, init)
    discriminator = ImageDiscriminator(task.channels, features)
    history = train_affgan(generator, discriminator, task.lr_batch, task.prior, steps, sigma_start=sigma_start,
                           sigma_end=sigma_end, lr_g=lr_g, lr_d=lr_d, d_steps=d_steps,
                           device=device, seed=seed, progress=progress, desc="AffGAN")
    return generator, {"history": history, "discriminator": discriminator}


def train_image_denoiser(task: ImageTask, steps: int, *, sigma_min: float = 0.02, sigma_max: float = 0.3,
                         features: int = 32, layers: int = 5, lr: float = 1e-3, device=None, seed: int = 0,
                         progress: bool = True):
    """A noise-conditional :class:`~course_lib.amortised_map.affdg.ConvDenoiser` on HR prior patches.
    Returns ``(denoiser, history)``."""
    torch.manual_seed(seed)
    denoiser = ConvDenoiser(task.channels, features, layers)
    history = train_denoiser(denoiser, task.prior, steps, sigma_min=sigma_min, sigma_max=sigma_max, lr=lr,
                             device=device, seed=seed, progress=progress)
    return denoiser, history


def train_image_affdg(task: ImageTask, steps: int, denoiser: nn.Module, *, init: nn.Module | None = None,
                      sigma_start: float = 0.3, sigma_end: float = 0.03, lr: float = 5e-4, device=None,
                      seed: int = 0, progress: bool = True):
    """AffDG: the projected network follows the denoiser's score, ``sigma`` annealed geometrically.
    Returns ``(model, history)``."""
    torch.manual_seed(seed)
    model = _warm_start(task, init)
    device = _device(model, device)
    freeze(denoiser).to(device)

    def batch_fn(step: int):
        return task.lr_batch(step), instance_noise_sigma(step, steps, sigma_start, sigma_end)

    history = fit(model, lambda m, b: affdg_loss(m, b[0], denoiser, b[1]), batch_fn, steps, lr=lr,
                  device=device, seed=seed, progress=progress, desc="AffDG", tag="image-affdg")
    return model, history


def train_image_flow(task: ImageTask, steps: int, *, source: str = "prior", levels: int = 2, flow_steps: int = 4,
                     hidden: int = 32, lr: float = 1e-3, device=None, seed: int = 0, progress: bool = True):
    """A small :class:`~course_lib.flows.models.Glow` fitted by maximum likelihood (dequantized) to HR
    patches of ``task.prior`` (AffLL's prior) or ``task.judge`` (the independent judge).
    Returns ``(flow, history)``."""
    samplers = {"prior": task.prior, "judge": task.judge}
    if source not in samplers:
        raise ValueError(f"source must be 'prior' or 'judge', got {source!r}")
    torch.manual_seed(seed)
    flow = Glow(task.channels, levels=levels, steps=flow_steps, hidden=hidden)
    history = train_density(flow, samplers[source], steps, dequantize=1 / 256, lr=lr, device=device,
                            seed=seed, progress=progress, desc=f"Glow ({source})")
    return flow, history


def train_image_affll(task: ImageTask, steps: int, flow: nn.Module, *, init: nn.Module | None = None,
                      lr: float = 5e-4, device=None, seed: int = 0, progress: bool = True):
    """AffLL: maximise the flow's log-density of the projected network's outputs.
    Returns ``(model, history)``."""
    torch.manual_seed(seed)
    model = _warm_start(task, init)
    device = _device(model, device)
    freeze(flow).to(device)
    history = fit(model, lambda m, y: affll_loss(m, y, flow), task.lr_batch, steps, lr=lr, device=device,
                  seed=seed, progress=progress, desc="AffLL", tag="image-affll")
    return model, history


# --------------------------------------------------------------------------- evaluation
def super_resolve(model: nn.Module, y: Tensor, *, batch: int = 8) -> Tensor:
    """``model(y)`` without gradients, in eval mode, in chunks, on the model's device; returns CPU."""
    device = next(model.parameters()).device
    with evaluation_mode(model), torch.no_grad():
        out = [model(y[i:i + batch].to(device)).cpu() for i in range(0, y.shape[0], batch)]
    return torch.cat(out)


def evaluate_images(task: ImageTask, outputs: dict[str, Tensor], judge: nn.Module | None = None, *,
                    denoiser: nn.Module | None = None, prior_sigma: float = 0.05) -> dict[str, dict[str, float]]:
    """Per method (``outputs``: name -> SR images of ``task.eval_hr``): PSNR and SSIM on the Y
    channel with a ``scale``-pixel shave (outputs clamped to [0, 1] first, as saved images are),
    the gradient energy (:func:`~course_lib.metrics.gradient_energy`) relative to the ground truth
    (1 = as much local contrast as the HR images), LR-consistency PSNR of the raw outputs under
    ``A``, the judge's cross-entropy in bits/dim when a ``judge`` flow is given, and with a
    ``denoiser`` the prior's own score :func:`~course_lib.amortised_map.affdg.denoiser_residual`
    at ``prior_sigma`` (lower: more probable under the learned prior)."""
    hr, lr_img = task.eval_hr, task.eval_lr
    reference = float(gradient_energy(hr).mean())
    rgb = hr.shape[1] == 3  # Y channel for colour images, the one channel otherwise
    rows: dict[str, dict[str, float]] = {}
    for name, out in outputs.items():
        if out.shape != hr.shape:
            raise ValueError(f"{name}: outputs {tuple(out.shape)} do not match the HR images {tuple(hr.shape)}")
        clamped = out.clamp(0, 1)
        row = {
            "PSNR (dB)": float(psnr(clamped, hr, shave=task.scale, y_channel=rgb).mean()),
            "SSIM": float(ssim(clamped, hr, shave=task.scale, y_channel=rgb).mean()),
            "gradient energy (x HR)": float(gradient_energy(clamped).mean()) / reference,
            "LR consistency (dB)": consistency_psnr(out, lr_img, task.operator),
        }
        if judge is not None:
            device = next(judge.parameters()).device
            row["judge bits/dim"] = float(bits_per_dim(judge, out.to(device)).mean())
        if denoiser is not None:
            device = next(denoiser.parameters()).device
            row["prior: denoiser residual"] = float(denoiser_residual(denoiser, out.to(device), prior_sigma).mean())
        rows[name] = row
    return rows
