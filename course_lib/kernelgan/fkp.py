"""FKP: a flow-based kernel prior (Liang, Zhang, Gu, Van Gool & Timofte, CVPR 2021), and
KernelGAN-FKP, KernelGAN whose generator is the flow.

The prior. A blur kernel ``k`` (11x11 at x2, FKP's size ``4 s + 3``) is mapped to an unconstrained
vector ``x`` (divide by a fixed ``normalization`` a little above the largest kernel value, add
dequantisation noise ``U(0, 1/720)``, take the logit), and a normalizing flow ``f`` built from
:mod:`course_lib.flows` maps ``x`` to a latent ``z = f(x)`` with a standard normal density. It is
trained by maximum likelihood on kernels of the DIV2KRK generator
(:func:`~course_lib.degradation.kernels.random_div2krk_kernel`), never on images. Inverting the
flow turns any ``z`` into a plausible kernel; ``z = 0``, the mode of the base density, gives a
round mid-sized one.

KernelGAN-FKP. KernelGAN's deep linear generator is replaced by ``G_z = blur with f^{-1}(z), keep
every second pixel``; only ``z`` (121 numbers) is optimised. As in the official code, ``z`` starts
as a seeded N(0, I) draw and stays on the sphere ``|z| = 10`` (its spherical optimiser), and the
critic is a WGAN-GP one (:class:`~course_lib.kernelgan.fkp.WGANCritic`, three critic and three ``z``
updates per iteration).
The regularizers and the bicubic prior are dropped: every ``z`` decodes to a kernel that is
non-negative, sums to one and lies on the learned kernel manifold, so there is nothing left for
them to enforce.

Our differences from the official code (``JingyunLiang/FKP``), named: affine couplings that split
the kernel's pixels by a fixed random permutation (official: alternating binary masks), ActNorm
(official: a flow batch norm), 8 crops per iteration (official: 64), the gradient penalty's norm
over each sample's pixels with one mixing weight per sample (official: over channels, one weight
per batch), ``z`` updated on fresh fakes in each of its three steps (official: on the last critic
step's fakes), 600 iterations (official: 1000), and KernelGAN's crop sampling. The decoded kernel is
clamped at zero and normalised to sum one before it is used. The former choices (KernelGAN's
discriminator, ``z`` free from the mode) stay available and are compared in chapter 7.

Command line (the shipped ``course_lib/checkpoints/fkp_x2.pt`` was made with it)::

    python -m course_lib.kernelgan.fkp train --out course_lib/checkpoints/fkp_x2.pt
"""

from __future__ import annotations

import argparse
import math
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from course_lib.degradation import random_div2krk_kernel
from course_lib.flows import MLP, ActNorm, AffineCoupling, FlowModel, FlowSequential, Permutation, StandardNormal
from course_lib.training import History, Trainer, export_weights, load_checkpoint

from .config import KernelGANConfig
from .gan import KernelGAN

__all__ = [
    "FKPConfig",
    "KernelFlow",
    "kernel_dataset",
    "train_kernel_flow",
    "load_kernel_flow",
    "FKPGenerator",
    "KernelGANFKP",
    "WGANCritic",
    "gradient_penalty",
    "estimate_kernel_fkp",
    "FKP_CHECKPOINT",
    "FKP_CONFIG",
]

FKP_CHECKPOINT = Path(__file__).resolve().parent.parent / "checkpoints" / "fkp_x2.pt"
_TAG = "fkp-kernel-flow"


@dataclass(frozen=True)
class FKPConfig:
    """The kernel flow and its training.

    ``kernel_size`` 11 at x2 (FKP's ``4 s + 3``); ``couplings`` affine couplings (FKP: 5 blocks) with
    MLP subnets of ``layers`` hidden layers of ``hidden`` units; ``alpha`` keeps the logit finite;
    ``dequantization`` is the width of the uniform noise added to the normalised kernel (FKP: 1/720).
    Training: ``kernels`` DIV2KRK kernels drawn once (seeded), ``steps`` Adam steps of batch
    ``batch_size`` with a cosine learning rate from ``lr``.
    """

    scale: int = 2
    kernel_size: int = 11
    couplings: int = 6
    hidden: int = 96
    layers: int = 2
    clamp: float = 2.0
    alpha: float = 1e-6
    dequantization: float = 1.0 / 720.0
    kernels: int = 12000
    steps: int = 6000
    batch_size: int = 256
    lr: float = 1e-3
    seed: int = 0


FKP_CONFIG = FKPConfig()


class KernelFlow(nn.Module):
    """A normalizing flow over ``K x K`` blur kernels (FKP's kernel prior).

    ``encode(k) -> x`` (normalise, logit), ``flow(x) -> (z, logdet)`` and ``log_prob(k)`` in nats
    of the logit-space vector; ``decode(z) -> k`` inverts the flow and the logit, clamps at zero and
    normalises the kernel to sum one (differentiable in ``z``).

    Paper: Liang et al. 2021, sec. 3.1 (the kernel prior) · Book: chapter 7, section "A learned kernel prior: FKP" ·
    Official code: JingyunLiang/FKP, FKP/network.py:KernelPrior
    """

    def __init__(self, config: FKPConfig = FKP_CONFIG, normalization: float = 1.0):
        super().__init__()
        self.config = config
        d = config.kernel_size**2
        generator = torch.Generator().manual_seed(config.seed + 1)
        layers: list[nn.Module] = []
        for _ in range(config.couplings):
            layers += [ActNorm(d), Permutation(d, "random", generator=generator),
                       AffineCoupling(d, lambda c_in, c_out: MLP(c_in, c_out, config.hidden, config.layers),
                                      clamp=config.clamp)]
        self.model = FlowModel(FlowSequential(layers), StandardNormal(d))
        self.register_buffer("normalization", torch.tensor(float(normalization)))

    @property
    def dim(self) -> int:
        return self.config.kernel_size**2

    def encode(self, kernels: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """(N, K, K) kernels -> (N, K*K) logit-space vectors (``noise`` in [0, 1) adds dequantisation)."""
        a = self.config.alpha
        u = kernels.reshape(kernels.shape[0], -1).clamp_min(0) / self.normalization
        if noise is not None:
            u = u + noise * self.config.dequantization
        u = a + (1 - 2 * a) * u.clamp(0, 1)
        return torch.log(u) - torch.log1p(-u)

    def log_prob(self, kernels: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Log-density (nats) of the encoded kernels under the flow, shape (N,)."""
        return self.model.log_prob(self.encode(kernels, noise))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(N, K*K) latents -> (N, K, K) kernels (non-negative, sum one)."""
        x = self.model.inverse(z)
        a = self.config.alpha
        k = ((torch.sigmoid(x) - a) / (1 - 2 * a)).clamp_min(0) * self.normalization
        k = k / k.sum(1, keepdim=True).clamp_min(1e-12)
        size = self.config.kernel_size
        return k.reshape(-1, size, size)


def kernel_dataset(config: FKPConfig = FKP_CONFIG, n: int | None = None, *, seed: int | None = None,
                   progress: bool = True) -> torch.Tensor:
    """``n`` (default ``config.kernels``) DIV2KRK kernels (K, K) from a seeded generator, stacked."""
    from tqdm.auto import tqdm

    n = config.kernels if n is None else n
    generator = torch.Generator().manual_seed(config.seed if seed is None else seed)
    out = torch.empty(n, config.kernel_size, config.kernel_size)
    for i in tqdm(range(n), desc="DIV2KRK kernels", disable=not progress):
        out[i] = random_div2krk_kernel(config.scale, config.kernel_size, generator=generator)
    return out


def train_kernel_flow(config: FKPConfig = FKP_CONFIG, *, checkpoint: str | os.PathLike | None = None,
                      kernels: torch.Tensor | None = None, validation: torch.Tensor | None = None,
                      progress: bool = True) -> tuple[KernelFlow, History]:
    """Fit a :class:`KernelFlow` to DIV2KRK kernels by maximum likelihood (resumable).

    The negative log-likelihood per kernel (nats) is logged; with ``validation`` kernels its value
    on them is evaluated 20 times over the run (``val_nll``).
    """
    torch.manual_seed(config.seed)
    kernels = kernel_dataset(config, progress=progress) if kernels is None else kernels
    # a little above the largest value in the training set, as FKP's max + 0.01
    flow = KernelFlow(config, normalization=float(kernels.max()) + 0.01)
    flow.train()
    with torch.no_grad():  # ActNorm's data-dependent initialisation on a large batch
        flow.log_prob(kernels[: 2 * config.batch_size], torch.rand(2 * config.batch_size, flow.dim))
    optimizer = torch.optim.Adam(flow.parameters(), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.steps)

    def step_fn(step: int) -> dict[str, float]:
        g = torch.Generator().manual_seed(config.seed * 7919 + step)
        idx = torch.randint(len(kernels), (config.batch_size,), generator=g)
        noise = torch.rand(config.batch_size, flow.dim, generator=g)
        loss = -flow.log_prob(kernels[idx], noise).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(flow.parameters(), 100.0)
        optimizer.step()
        return {"nll": loss.item()}

    eval_fn = None
    if validation is not None:
        val_noise = torch.rand(len(validation), flow.dim, generator=torch.Generator().manual_seed(1))

        @torch.no_grad()
        def eval_fn(step: int) -> dict[str, float]:
            return {"val_nll": float(-flow.log_prob(validation, val_noise).mean())}

    trainer = Trainer({"model": flow}, {"model": optimizer}, step_fn, schedulers={"lr": scheduler},
                      checkpoint=checkpoint, checkpoint_every=500, eval_fn=eval_fn,
                      eval_every=max(1, config.steps // 20), tag=_TAG, desc="FKP kernel flow", progress=progress,
                      log_every=10, model_config={**asdict(config), "normalization": flow.normalization.item()})
    history = trainer.run(config.steps)
    flow.eval()
    return flow, history


def load_kernel_flow(path: str | os.PathLike | None = None) -> KernelFlow:
    """The trained kernel flow of a checkpoint (default: the shipped ``fkp_x2.pt``), in eval mode,
    with frozen weights."""
    state = load_checkpoint(FKP_CHECKPOINT if path is None else path, tag=_TAG)
    cfg = dict(state["model_config"])
    normalization = cfg.pop("normalization")
    flow = KernelFlow(FKPConfig(**cfg), normalization=normalization)
    flow.load_state_dict(state["modules"]["model"])
    flow.eval()
    for p in flow.parameters():
        p.requires_grad_(False)
    flow.history = state.get("history")
    return flow


class FKPGenerator(nn.Module):
    """KernelGAN-FKP's generator: the kernel ``f^{-1}(z)`` of a frozen :class:`KernelFlow`,
    embedded in a ``size x size`` frame; only the latent ``z`` is a parameter (it starts at the
    mode, 0). Same interface as :class:`~course_lib.kernelgan.networks.DeepLinearGenerator`.

    Paper: Liang et al. 2021, sec. 3.3 (KernelGAN-FKP) · Book: chapter 7, section "A learned kernel prior: FKP" ·
    Official code: JingyunLiang/FKP, KernelGANFKP/model/networks.py:Generator_KP
    """

    def __init__(self, flow: KernelFlow, size: int = 13, scale: int = 2):
        super().__init__()
        self.flow = flow
        for p in flow.parameters():
            p.requires_grad_(False)
        self.z = nn.Parameter(torch.zeros(1, flow.dim))
        self.size, self.scale = int(size), int(scale)

    @property
    def kernel_size(self) -> int:
        return self.size

    def train(self, mode: bool = True) -> FKPGenerator:  # the flow always stays in eval mode
        """Set training mode for everything but the kernel flow, which stays in eval mode."""
        super().train(mode)
        self.flow.eval()
        return self

    def kernel(self) -> torch.Tensor:
        """The (size, size) kernel decoded from ``z``, differentiable in ``z``."""
        k = self.flow.decode(self.z)[0]
        pad = (self.size - k.shape[-1]) // 2
        return F.pad(k, (pad, pad, pad, pad)) if pad > 0 else k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from .networks import downscale_valid

        return downscale_valid(x, self.kernel(), self.scale)


class WGANCritic(nn.Module):
    """KernelGAN-FKP's critic as in the official code (``Discriminator_KP``): ``layers - 1`` blocks of
    a 3x3 convolution, batch norm and LeakyReLU(0.2), then a 3x3 convolution to one channel and no
    sigmoid, so its output map scores every 11x11 window (5 layers) on an unbounded WGAN scale.
    Initial weights N(0, 0.02), batch-norm scales N(1, 0.02).

    Official code: JingyunLiang/FKP, KernelGANFKP/model/networks.py:Discriminator_KP
    """

    def __init__(self, in_channels: int = 3, channels: int = 32, layers: int = 5):
        super().__init__()
        blocks: list[nn.Module] = []
        c = in_channels
        for _ in range(layers - 1):
            blocks += [nn.Conv2d(c, channels, 3), nn.BatchNorm2d(channels), nn.LeakyReLU(0.2)]
            c = channels
        blocks.append(nn.Conv2d(c, 1, 3))
        self.net = nn.Sequential(*blocks)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, weight: float,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """WGAN-GP's penalty ``weight * E (|grad_x D(x_hat)| - 1)^2`` at ``x_hat = a real + (1 - a) fake``,
    one ``a ~ U(0, 1)`` per sample and the norm over each sample's pixels (Gulrajani et al. 2017;
    the official KernelGAN-FKP code draws one ``a`` per batch and takes the norm over channels only).
    """
    a = torch.rand(real.shape[0], 1, 1, 1, generator=generator).to(real)
    x_hat = (a * real + (1 - a) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    return weight * (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()


def _fkp_gan_config(config: KernelGANConfig | None, iterations: int, crops_per_step: int) -> KernelGANConfig:
    base = config or KernelGANConfig()
    # equal noise on D's real and fake crops: with the official 2:1 ratio G can match the real crops'
    # noise level only by sharpening its kernel, and on the validation photos the flow's kernel then
    # shrank to a near-delta (see the chapter); the WGAN-GP critic gets no noise at all (official)
    return replace(base, iterations=int(iterations), regularizers=(), adversarial_after_bicubic=False,
                   noise_real=base.noise_fake, crops_per_step=int(crops_per_step))


class KernelGANFKP(KernelGAN):
    """KernelGAN with its generator replaced by a kernel flow (:class:`FKPGenerator`); only the
    latent ``z`` is trained, with no regularizers and no bicubic prior.

    The defaults follow the official KernelGAN-FKP: ``z`` starts as a seeded N(0, I) draw and stays
    on the sphere ``|z| = latent_radius`` (10, the official ``kernel_size - 1``; its spherical
    optimiser), Adam on ``z`` at ``lr_latent``, and a WGAN-GP critic (``critic="wgan-gp"``:
    :class:`~course_lib.kernelgan.fkp.WGANCritic`, ``critic_steps`` updates of the critic and then
    of ``z`` per iteration, no instance noise) on ``crops_per_step`` crops per iteration (official:
    64; 8 here, for the CPU).
    ``critic="kernelgan"`` keeps KernelGAN's discriminator, L1 GAN loss and its noise, equal on real
    and fake crops; ``latent_radius=None`` starts ``z`` at the mode 0 and leaves its norm free; an
    optional Gaussian prior ``lambda_latent * mean(z^2)`` on ``z`` is off by default, as in FKP.
    Chapter 7 and ``benchmarks/RESULTS.md`` compare these choices on the validation photos.

    Paper: Liang et al. 2021, sec. 3.3 (KernelGAN-FKP) · Book: chapter 7, section "A learned kernel prior: FKP" ·
    Official code: JingyunLiang/FKP, KernelGANFKP/model/model_FKP.py:KernelGAN_FKP
    """

    def __init__(self, lr_image: torch.Tensor, config: KernelGANConfig | None = None, *,
                 flow: KernelFlow | None = None, lr_latent: float = 1e-3, lambda_latent: float = 0.0,
                 latent_radius: float | None = 10.0, critic: str = "wgan-gp", critic_steps: int = 3,
                 crops_per_step: int = 8, device: torch.device | str | None = None, seed: int = 0):
        if critic not in ("kernelgan", "wgan-gp"):
            raise ValueError(f"critic must be 'kernelgan' or 'wgan-gp', got {critic!r}")
        config = _fkp_gan_config(config, (config or KernelGANConfig()).iterations, crops_per_step)
        super().__init__(lr_image, config, device=device, seed=seed)
        self.critic, self.critic_steps = critic, int(critic_steps)
        if critic == "wgan-gp":  # the official KernelGAN-FKP's critic, its Adam (lr 5e-4) and schedule
            if self.d_crop < 11:
                raise ValueError(f"crop_size {config.crop_size} gives the critic {self.d_crop}-px crops, smaller "
                                 "than its 11-px receptive field; use crop_size >= 34")
            self.D = WGANCritic(self.image.shape[0]).to(self.device)
            self.opt_d = torch.optim.Adam(self.D.parameters(), lr=5e-4, betas=config.betas)
            self.schedulers["lr_d"] = torch.optim.lr_scheduler.StepLR(
                self.opt_d, config.period(config.lr_decay_every), gamma=config.lr_decay_factor)
        flow = load_kernel_flow() if flow is None else flow
        self.G = FKPGenerator(flow, config.kernel_size, 2).to(self.device)
        self.latent_radius = None if latent_radius is None else float(latent_radius)
        if self.latent_radius is not None:
            if not self.latent_radius > 0:
                raise ValueError(f"latent_radius must be positive, got {latent_radius!r}")
            with torch.no_grad():  # a seeded draw of the base density, on the sphere
                self.G.z.copy_(torch.randn(self.G.z.shape, generator=torch.Generator().manual_seed(self.seed)))
                self.after_generator_step()
        self.lambda_latent = float(lambda_latent)
        self.opt_g = torch.optim.Adam([self.G.z], lr=lr_latent, betas=config.betas)
        decay = config.period(config.lr_decay_every)
        self.schedulers["lr_g"] = torch.optim.lr_scheduler.StepLR(self.opt_g, decay, gamma=config.lr_decay_factor)

    @torch.no_grad()
    def after_generator_step(self) -> None:
        """With ``latent_radius``: put ``z`` back on the sphere ``|z| = latent_radius`` (FKP's
        spherical optimiser; the official radius is ``kernel_size - 1``)."""
        if self.latent_radius is not None:
            z = self.G.z
            z.mul_(self.latent_radius / z.norm().clamp_min(1e-12))

    def extra_generator_loss(self) -> torch.Tensor:
        """The latent's Gaussian prior, ``lambda_latent * mean(z^2)`` (zero at the flow's mode)."""
        return self.lambda_latent * self.G.z.pow(2).mean()

    def train_step(self, step: int) -> dict[str, float]:
        """One iteration: KernelGAN's (``critic="kernelgan"``) or, with ``critic="wgan-gp"``, the
        official KernelGAN-FKP's: ``critic_steps`` updates of the WGAN-GP critic (penalty weight 0.1),
        then as many of ``z``, each on a fresh fake batch, without instance noise."""
        out = super().train_step(step) if self.critic == "kernelgan" else self._wgan_step(step)
        out["z_norm"] = float(self.G.z.detach().norm())
        return out

    def _wgan_step(self, step: int) -> dict[str, float]:
        g_in, d_in = self.crops(step)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        for _ in range(self.critic_steps):
            with torch.no_grad():
                fake = self.G(g_in)
            self.opt_d.zero_grad(set_to_none=True)
            d_loss = self.D(fake).mean() - self.D(d_in).mean()
            (d_loss + gradient_penalty(self.D, d_in, fake, 0.1, generator)).backward()
            self.opt_d.step()
        for _ in range(self.critic_steps):
            self.opt_g.zero_grad(set_to_none=True)
            g_adv = -self.D(self.G(g_in)).mean()
            (g_adv + self.extra_generator_loss()).backward()
            self.opt_g.step()
            self.after_generator_step()
        kernel = self.G.kernel().detach()
        return {"g_adv": g_adv.item(), "d_loss": d_loss.item(), "kernel_sum": float(kernel.sum())}

    def final_kernel(self, scale: int = 2) -> torch.Tensor:
        """The decoded kernel (already clean: non-negative, sum one), re-centred; or its x4 kernel."""
        from course_lib.degradation import analytic_x4_kernel, shift_kernel_to_centre

        k2 = shift_kernel_to_centre(self.kernel(), 2)
        k2 = k2 / k2.sum()
        return k2 if scale == 2 else analytic_x4_kernel(k2)


def estimate_kernel_fkp(lr_image: torch.Tensor, iterations: int = 600, *, flow: KernelFlow | None = None,
                        config: KernelGANConfig | None = None, lr_latent: float = 1e-3,
                        lambda_latent: float = 0.0, latent_radius: float | None = 10.0,
                        critic: str = "wgan-gp", crops_per_step: int = 8,
                        device: torch.device | str | None = None, seed: int = 0,
                        progress: bool = True, true_kernel: torch.Tensor | None = None,
                        checkpoint: str | os.PathLike | None = None) -> tuple[torch.Tensor, History]:
    """Estimate the x2 kernel of ``lr_image`` with KernelGAN-FKP; returns ``(kernel 13x13, history)``.

    Paper: Liang et al. 2021, sec. 3.3 (KernelGAN-FKP) · Book: chapter 7, section "A learned kernel prior: FKP" ·
    Official code: JingyunLiang/FKP, KernelGANFKP/main.py
    """
    config = replace(config or KernelGANConfig(), iterations=int(iterations))
    gan = KernelGANFKP(lr_image, config, flow=flow, lr_latent=lr_latent, lambda_latent=lambda_latent,
                       latent_radius=latent_radius, critic=critic, crops_per_step=crops_per_step,
                       device=device, seed=seed)
    history = gan.fit(checkpoint=checkpoint, true_kernel=true_kernel, progress=progress, desc="KernelGAN-FKP")
    return gan.final_kernel(2), history


def _main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m course_lib.kernelgan.fkp",
                                     description="Train FKP's kernel flow on DIV2KRK kernels (x2).")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train the flow and write a weights-only checkpoint")
    train.add_argument("--out", default=str(FKP_CHECKPOINT))
    train.add_argument("--work", default="fkp_x2_work.pt", help="resumable full checkpoint")
    for name, value in asdict(FKP_CONFIG).items():
        train.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    train.add_argument("--validation", type=int, default=1000, help="held-out kernels (another seed)")
    train.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = FKPConfig(**{k: getattr(args, k) for k in asdict(FKP_CONFIG)})
    start, cpu = time.perf_counter(), time.process_time()
    kernels = kernel_dataset(cfg)
    validation = kernel_dataset(cfg, args.validation, seed=cfg.seed + 12345)
    print(f"{len(kernels)} training kernels in {time.process_time() - cpu:.0f} s CPU", flush=True)
    flow, history = train_kernel_flow(cfg, checkpoint=args.work, kernels=kernels, validation=validation)
    export_weights(args.work, args.out)
    params = sum(p.numel() for p in flow.parameters())
    print(f"wrote {args.out} ({os.path.getsize(args.out) / 1024:.0f} KB, {params} parameters); "
          f"{time.perf_counter() - start:.0f} s wall, {time.process_time() - cpu:.0f} s CPU")
    steps = history.eval_steps
    for s, v in zip(steps, history.evals.get("val_nll", [])):
        train_nll = history.logs["nll"][max(0, min(len(history.logs["nll"]) - 1,
                                                   history.steps.index(s) if s in history.steps else -1))]
        print(f"  step {s:6d}: train NLL {train_nll:9.2f}, validation NLL {v:9.2f} nats")
    if not math.isfinite(history.evals.get("val_nll", [0.0])[-1]):
        raise SystemExit("training diverged")


if __name__ == "__main__":
    _main()
