"""The internal GAN on one LR image (:class:`KernelGAN`: networks, optimisers, crops, losses, one
training step, training on the shared loop) and the one-call :func:`estimate_kernel`."""

from __future__ import annotations

import os
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from course_lib.checks import check_unit_range
from course_lib.config import get_device
from course_lib.degradation import analytic_x4_kernel, imresize, kernel_offset, post_process_kernel
from course_lib.metrics import kernel_error
from course_lib.training import History, Trainer

from .config import PAPER_ITERATIONS, KernelGANConfig
from .crops import crop_probabilities, gradient_weight_map, sample_crop_corners
from .networks import DeepLinearGenerator, KernelGANDiscriminator, downscale_valid
from .regularizers import boundary_mask, kernel_regularizers
from .schedule import ConstraintSchedule

__all__ = ["KernelGAN", "estimate_kernel"]


def _check_lr_image(image, crop_size: int) -> torch.Tensor:
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"lr_image must be a torch.Tensor, got {type(image).__name__}")
    if image.ndim == 4:
        if image.shape[0] != 1:
            raise ValueError(f"estimate the kernel of one image at a time, got a batch of {image.shape[0]}")
        image = image[0]
    if image.ndim != 3:
        raise ValueError(f"lr_image must have shape (C, H, W) or (1, C, H, W), got {tuple(image.shape)}")
    if image.shape[0] not in (1, 3):
        raise ValueError(f"lr_image must have 1 or 3 channels, got {image.shape[0]} in shape {tuple(image.shape)}")
    if not image.is_floating_point():
        raise TypeError(f"lr_image must be a floating-point tensor in [0, 1], got {image.dtype}")
    if not torch.isfinite(image).all():
        raise ValueError("lr_image contains non-finite values (NaN or inf)")
    check_unit_range(image, "lr_image")  # a 0-255 image would give another kernel, silently
    if float(image.detach().float().std()) < 1e-6:
        raise ValueError("lr_image is constant (a flat image): it has no edges, so there is no kernel to estimate")
    h, w = image.shape[-2:]
    if min(h, w) < crop_size:
        raise ValueError(f"the LR image ({h}x{w}) is smaller than the crop size {crop_size}; "
                         "use a larger image or a smaller crop_size")
    return image


def _check_scale(scale) -> int:
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or int(scale) not in (2, 4):
        raise ValueError(f"KernelGAN estimates x2 or x4 kernels; scale must be 2 or 4, got {scale!r}")
    return int(scale)


def _step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(step) + 17)


class KernelGAN:
    """The internal GAN on one LR image: networks, optimisers, crops, losses, one training step.

    Args:
        lr_image: (C, H, W) (C = 1 or 3) float image in [0, 1], at least ``crop_size`` on each side.
        config: hyper-parameters (:class:`~course_lib.kernelgan.config.KernelGANConfig`; official defaults).
        device: where to train (default :func:`~course_lib.config.get_device`).
        seed: seeds the weights, the crop positions and the noise (runs are reproducible).

    :meth:`~course_lib.kernelgan.gan.KernelGAN.fit` trains with :class:`~course_lib.training.Trainer` (progress bar, checkpoints, exact
    resume); :meth:`~course_lib.kernelgan.gan.KernelGAN.kernel` reads the current kernel; :meth:`~course_lib.kernelgan.gan.KernelGAN.final_kernel` post-processes it.
    """

    def __init__(self, lr_image: torch.Tensor, config: KernelGANConfig | None = None, *,
                 device: torch.device | str | None = None, seed: int = 0):
        self.config = config = config or KernelGANConfig()
        image = _check_lr_image(lr_image, config.crop_size)
        self.device = torch.device(device) if device is not None else get_device()
        self.seed = int(seed)
        torch.manual_seed(self.seed)
        self.G = DeepLinearGenerator(config.g_structure, config.g_channels, scale=2).to(self.device)
        self.D = KernelGANDiscriminator(image.shape[0], config.d_channels, config.d_layers,
                                        config.d_kernel_size).to(self.device)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=config.lr, betas=config.betas, foreach=True)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=config.lr, betas=config.betas, foreach=True)
        decay = config.period(config.lr_decay_every)
        self.schedulers = {
            "lr_g": torch.optim.lr_scheduler.StepLR(self.opt_g, decay, gamma=config.lr_decay_factor),
            "lr_d": torch.optim.lr_scheduler.StepLR(self.opt_d, decay, gamma=config.lr_decay_factor),
            "constraints": ConstraintSchedule(config),
        }
        self.mask = boundary_mask(config.kernel_size).to(self.device)

        # the image in [-1, 1] as in the official code (its loss thresholds refer to that range)
        self.image = (2.0 * image.detach().to(torch.float32) - 1.0).to(self.device)
        self.g_crop = config.crop_size
        self.d_crop = (config.crop_size - config.kernel_size) // 2 + 1  # size of G's output
        self._sample_crops(image)

    # -- data --------------------------------------------------------------------------------
    def _sample_crops(self, image: torch.Tensor) -> None:
        """All crop corners of the run, drawn once from the seed (so a resumed run sees the same)."""
        h, w = image.shape[-2:]
        generator = torch.Generator().manual_seed(self.seed)
        d_weights = gradient_weight_map(image)
        # G's crops: where the image downscaled by 2 has edges (a nearest-neighbour upsampled map)
        small = gradient_weight_map(imresize(image.detach().to(torch.float32), 0.5))
        g_weights = small.repeat_interleave(2, 0).repeat_interleave(2, 1)[:h, :w]
        n = self.config.iterations * self.config.crops_per_step
        self.g_probabilities = crop_probabilities(g_weights, self.g_crop)
        self.d_probabilities = crop_probabilities(d_weights, self.d_crop)
        self.g_corners = sample_crop_corners(self.g_probabilities, n, generator)
        self.d_corners = sample_crop_corners(self.d_probabilities, n, generator)

    def crops(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(G's input crops, D's real crops) of a step, each (B, C, size, size) in [-1, 1] with
        ``B = config.crops_per_step``."""
        b = self.config.crops_per_step
        i = (step % self.config.iterations) * b
        g_in = torch.stack([self.image[:, t:t + self.g_crop, left:left + self.g_crop]
                            for t, left in self.g_corners[i:i + b].tolist()])
        d_in = torch.stack([self.image[:, t:t + self.d_crop, left:left + self.d_crop]
                            for t, left in self.d_corners[i:i + b].tolist()])
        return g_in, d_in

    # -- losses ------------------------------------------------------------------------------
    def bicubic_loss(self, g_in: torch.Tensor, g_out: torch.Tensor) -> torch.Tensor:
        """MSE between ``G``'s output and the MATLAB-bicubic x2 downscaling of the same crop (official
        ``loss.py:DownScaleLoss``).

        With ``config.bicubic_reference = "channel_sum"`` (the default, as the official code computes
        it) every channel of ``G``'s output is compared with the *sum* over the three colour channels
        of the bicubic downscaling (a grey image counts three times); with ``"per_channel"`` with its
        own channel. See :class:`~course_lib.kernelgan.config.KernelGANConfig`.
        """
        reference = imresize(g_in, 0.5)
        if self.config.bicubic_reference == "channel_sum":
            reference = (reference.sum(1, keepdim=True) * (3.0 / reference.shape[1])).expand_as(reference)
        # G's output pixel j sits where the bicubic output pixel j + c/2 sits (c = kernel offset)
        shave = kernel_offset(self.config.kernel_size, 2) // 2
        reference = reference[..., shave:shave + g_out.shape[-2], shave:shave + g_out.shape[-1]]
        return F.mse_loss(g_out, reference)

    def train_step(self, step: int) -> dict[str, float]:
        """One iteration: update ``G`` (GAN + constraints), then ``D``; returns the logged values.

        Paper: Bell-Kligler et al. 2019 (NeurIPS version), the GAN objective with R, eq. number not verified · Book:
        chapter 7, section "KernelGAN: an internal GAN whose generator is the downscaler" · Official code:
        sefibk/KernelGAN, kernelGAN.py:KernelGAN.train
        """
        schedule: ConstraintSchedule = self.schedulers["constraints"]
        c = self.config
        g_in, d_in = self.crops(step)
        noise_gen = _step_generator(self.seed, step)
        noise_real = torch.randn(d_in.shape, generator=noise_gen).to(self.device) * c.noise_real
        noise_fake = torch.randn(d_in.shape, generator=noise_gen).to(self.device) * c.noise_fake

        # generator: fool D, stay a plausible kernel
        self.opt_g.zero_grad(set_to_none=True)
        kernel = self.G.kernel()
        fake = downscale_valid(g_in, kernel, 2)
        d_fake = self.D(fake + noise_fake if c.noise_in_g_step else fake)
        g_adv = F.l1_loss(d_fake, torch.ones_like(d_fake))
        terms = kernel_regularizers(kernel, 2, self.mask)
        bicubic = self.bicubic_loss(g_in, fake)
        weights = {
            "sum_to_one": c.lambda_sum_to_one if "sum_to_one" in c.regularizers else 0.0,
            "boundaries": c.lambda_boundaries if "boundaries" in c.regularizers else 0.0,
            "sparsity": schedule.lambda_sparsity,
            "centre": schedule.lambda_centre,
        }
        adversarial = 1.0 if schedule.similar_to_bicubic or not c.adversarial_after_bicubic else 0.0
        total = adversarial * g_adv + schedule.lambda_bicubic * bicubic + sum(weights[k] * terms[k] for k in terms)
        total = total + self.extra_generator_loss()
        total.backward()
        self.opt_g.step()
        self.after_generator_step()

        # discriminator: real crops of the image vs. G's (updated) downscaled crops
        self.opt_d.zero_grad(set_to_none=True)
        with torch.no_grad():
            fake = downscale_valid(g_in, self.G.kernel(), 2)
        d_real = self.D(d_in + noise_real)
        d_fake = self.D(fake + noise_fake)
        d_loss = 0.5 * (F.l1_loss(d_fake, torch.zeros_like(d_fake)) + F.l1_loss(d_real, torch.ones_like(d_real)))
        d_loss.backward()
        self.opt_d.step()

        schedule.observe(bicubic.item())
        return {
            "g_adv": g_adv.item(),
            "d_loss": d_loss.item(),
            "bicubic": bicubic.item(),
            **{k: v.item() for k, v in terms.items()},
            "kernel_sum": float(kernel.detach().sum()),
            "lambda_bicubic": schedule.lambda_bicubic,
        }

    def after_generator_step(self) -> None:
        """Called after every update of ``G`` (nothing here; KernelGAN-FKP projects its latent)."""

    def extra_generator_loss(self) -> torch.Tensor | float:
        """A term added to ``G``'s loss in every step (none here; KernelGAN-FKP adds its latent prior)."""
        return 0.0

    # -- training ----------------------------------------------------------------------------
    def trainer(self, *, checkpoint: str | os.PathLike | None = None, checkpoint_every: int = 500,
                true_kernel: torch.Tensor | None = None, true_scale: int = 2, eval_every: int | None = None,
                progress: bool = True, desc: str = "KernelGAN") -> Trainer:
        """A :class:`~course_lib.training.Trainer` for this GAN (two optimisers, three schedules).

        With ``true_kernel`` (known in synthetic experiments) the kernel error
        (:func:`~course_lib.metrics.kernel_error` of the raw kernel, or of its analytic x4 kernel if ``true_scale=4``) is
        evaluated every ``eval_every`` steps.
        """
        eval_fn = None
        if true_kernel is not None:
            truth = true_kernel.detach().cpu()
            true_scale = _check_scale(true_scale)

            def eval_fn(step: int) -> dict[str, float]:
                raw = self.G.kernel().detach().cpu()
                try:
                    estimate = raw if true_scale == 2 else analytic_x4_kernel(raw)
                    return {"kernel_error": kernel_error(estimate, truth, true_scale)}
                except ValueError:  # a kernel without mass (very early steps)
                    return {"kernel_error": float("nan")}

        c = self.config
        tag = f"kernelgan:{'-'.join(map(str, c.g_structure))}x{c.g_channels}:crop{c.crop_size}"
        return Trainer({"G": self.G, "D": self.D}, {"G": self.opt_g, "D": self.opt_d}, self.train_step,
                       schedulers=self.schedulers, checkpoint=checkpoint, checkpoint_every=checkpoint_every,
                       eval_fn=eval_fn, eval_every=eval_every or max(1, c.iterations // 30), tag=tag,
                       desc=desc, progress=progress)

    def fit(self, iterations: int | None = None, **trainer_kwargs) -> History:
        """Train for ``iterations`` steps in total (default: ``config.iterations``); see :meth:`~course_lib.kernelgan.gan.KernelGAN.trainer`."""
        iterations = self.config.iterations if iterations is None else iterations
        if iterations > self.config.iterations:
            raise ValueError(f"iterations ({iterations}) exceeds config.iterations ({self.config.iterations}),"
                             " for which the crops and schedules were prepared")
        return self.trainer(**trainer_kwargs).run(iterations)

    @torch.no_grad()
    def kernel(self) -> torch.Tensor:
        """The current raw x2 kernel of ``G`` (13x13 by default), on the CPU."""
        return self.G.kernel().detach().cpu().float()

    def final_kernel(self, scale: int = 2) -> torch.Tensor:
        """Post-processed x2 kernel (:func:`~course_lib.degradation.kernels.post_process_kernel`), or its analytic x4 kernel."""
        scale = _check_scale(scale)
        k2 = post_process_kernel(self.kernel(), self.config.n_filtering, 2)
        return k2 if scale == 2 else analytic_x4_kernel(k2)


def estimate_kernel(
    lr_image: torch.Tensor,
    scale: int = 2,
    iterations: int = PAPER_ITERATIONS,
    *,
    device: torch.device | str | None = None,
    seed: int = 0,
    progress: bool = True,
    config: KernelGANConfig | None = None,
    checkpoint: str | os.PathLike | None = None,
    true_kernel: torch.Tensor | None = None,
    postprocess: bool = True,
) -> tuple[torch.Tensor, History]:
    """Estimate the SR kernel of ``lr_image`` with KernelGAN; returns ``(kernel, history)``.

    Args:
        lr_image: (C, H, W) or (1, C, H, W), C = 1 or 3, floats in [0, 1]; at least the crop size
            (64 by default) on each side.
        scale: 2 (a 13x13 kernel) or 4 (the analytic x4 kernel of the x2 estimate, 27x27 with the
            zero padding of :func:`~course_lib.degradation.kernels.analytic_x4_kernel`). KernelGAN always trains at x2.
        iterations: training steps (3000 in the paper); overrides ``config.iterations``.
        device, seed, progress: where to train, the seed of weights/crops/noise, the tqdm bar.
        config: other hyper-parameters (:class:`~course_lib.kernelgan.config.KernelGANConfig`).
        checkpoint: file to save to / resume from (:class:`~course_lib.training.Trainer`).
        true_kernel: if known (synthetic tests), its distance to the estimate (at ``scale``) is
            logged in ``history.evals['kernel_error']``.
        postprocess: clean the kernel (:func:`~course_lib.degradation.kernels.post_process_kernel`); ``False`` returns ``G``'s raw
            x2 kernel (only with ``scale=2``).

    Example::

        kernel, history = estimate_kernel(lr, scale=2, iterations=3000)
        history.plot(["g_adv", "d_loss"])

    Paper: Bell-Kligler et al. 2019 (NeurIPS version), the whole method with its x4 kernel (appendix), eq. number
    not verified · Book: chapter 7, section "Blind SR on the test bed" · Official code: sefibk/KernelGAN,
    train.py:train
    """
    scale = _check_scale(scale)
    if isinstance(iterations, bool) or not isinstance(iterations, (int, np.integer)) or iterations < 1:
        raise ValueError(f"iterations must be a positive int, got {iterations!r}")
    if not postprocess and scale != 2:
        raise ValueError("the raw kernel (postprocess=False) exists only at scale 2")
    config = replace(config or KernelGANConfig(), iterations=int(iterations))
    gan = KernelGAN(lr_image, config, device=device, seed=seed)
    history = gan.fit(checkpoint=checkpoint, true_kernel=true_kernel, true_scale=scale, progress=progress,
                      desc=f"KernelGAN x{scale}")
    kernel = gan.final_kernel(scale) if postprocess else gan.kernel()
    return kernel, history
