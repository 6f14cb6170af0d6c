"""Zero-shot, kernel-aware super-resolution in the style of ZSSR (Shocher, Cohen & Irani, CVPR 2018).

A non-blind SR method needs the degradation. ZSSR needs nothing else: it trains a small CNN on the
test image alone. The LR image ``y`` (and a few downscaled copies of it, the "HR fathers") plays the
role of the high-resolution image; each father ``f`` is degraded with the *given* kernel into a
"LR son" ``(f * k) downsampled by s``; the CNN learns to map the bicubically enlarged son back to the
father; then it is applied to ``y`` itself. Because the sons are made with ``k``, the CNN learns to
undo exactly that blur, so the result depends on the kernel one gives it: the bicubic kernel (the
usual assumption), a kernel estimated by :mod:`course_lib.kernelgan`, or the true kernel. This is
the SR half of the paper's blind pipeline "KernelGAN + ZSSR".

Our choices (why this rather than a kernel-aware closed-form reconstruction): ZSSR is what the
KernelGAN paper evaluates with, it uses the kernel only through the degradation model (so any
kernel, of any size, plugs in), and a small version trains in seconds on a CPU. Differences from
the official TensorFlow code: fixed learning-rate schedule (cosine) instead of the adaptive one, a
fixed number of fathers (the image at a few scales, 8 flips/rotations each, all degraded once
before training), the mean instead of the median of the 8-fold geometric self-ensemble, and x4 in
one step rather than gradually through x2.

Network (official configuration): ``layers`` 3x3 convolutions of ``channels`` (8 x 64) with ReLUs,
predicting the residual over the bicubic enlargement; L1 loss; Adam with lr 1e-3. After the
network, ``back_projection`` rounds of iterative back-projection (Irani & Peleg, 1991) make the
result consistent with ``y`` under the kernel: ``x <- x + bicubic_up(y - (x * k) downsampled)``.

For quick experiments (sweeping many kernels) :func:`~course_lib.zssr.wiener_sr` is a second kernel-aware method that
needs no training at all: the regularised least-squares solution of ``y = A x`` with a smoothness
prior, ``A.prox_l2`` of :class:`~course_lib.degradation.operators.BlurDownsample`, computed exactly with FFTs.

Both use the course's one operator ``A``: ZSSR degrades its fathers with
``BlurDownsample(kernel, scale, boundary="symmetric")`` (no wrap-around), the Wiener step solves
with the periodic one on a mirror-padded image.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .checks import check_unit_range
from .config import get_device
from .data.patches import dihedral
from .degradation import BlurDownsample, bicubic_kernel, gradient_penalty, imresize
from .training import History, fit

__all__ = ["ZSSRConfig", "ZSSRNet", "make_fathers", "zssr", "back_project", "degrade_with_kernel", "wiener_sr"]


@dataclass(frozen=True)
class ZSSRConfig:
    """Hyper-parameters. Defaults: the official network (8 layers, 64 channels, lr 1e-3) with our
    fixed schedule; ``crop_size`` is the HR-father crop (128 in the official code)."""

    steps: int = 1500
    channels: int = 64
    layers: int = 8
    crop_size: int = 64
    batch_size: int = 4
    lr: float = 1e-3
    father_scales: tuple[float, ...] = (1.0, 0.85, 0.7)
    back_projection: int = 2
    ensemble: bool = True

    def __post_init__(self) -> None:
        for name in ("steps", "channels", "layers", "crop_size", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.layers < 2:
            raise ValueError(f"layers must be at least 2, got {self.layers}")
        if not self.father_scales or any(not 0 < s <= 1 for s in self.father_scales):
            raise ValueError(f"father_scales must be in (0, 1], got {self.father_scales!r}")
        if self.back_projection < 0:
            raise ValueError(f"back_projection must be >= 0, got {self.back_projection}")


class ZSSRNet(nn.Module):
    """A plain CNN that predicts the residual over its (already bicubic-enlarged) input."""

    def __init__(self, channels: int = 64, layers: int = 8, image_channels: int = 3):
        super().__init__()
        body: list[nn.Module] = [nn.Conv2d(image_channels, channels, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(layers - 2):
            body += [nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True)]
        body.append(nn.Conv2d(channels, image_channels, 3, padding=1))
        self.body = nn.Sequential(*body)
        nn.init.zeros_(self.body[-1].weight)  # starts as the bicubic enlargement
        nn.init.zeros_(self.body[-1].bias)

    def forward(self, upsampled: torch.Tensor) -> torch.Tensor:
        """The bicubically enlarged LR image plus the predicted residual."""
        return upsampled + self.body(upsampled)


def _check_inputs(lr, kernel, scale) -> tuple[torch.Tensor, torch.Tensor, int]:
    if not isinstance(lr, torch.Tensor):
        raise TypeError(f"lr must be a torch.Tensor, got {type(lr).__name__}")
    if lr.ndim == 4:
        if lr.shape[0] != 1:
            raise ValueError(f"ZSSR super-resolves one image at a time, got a batch of {lr.shape[0]}")
        lr = lr[0]
    if lr.ndim != 3 or lr.shape[0] not in (1, 3):
        raise ValueError(f"lr must have shape (C, H, W) with C = 1 or 3, got {tuple(lr.shape)}")
    if not lr.is_floating_point():
        raise TypeError(f"lr must be a floating-point tensor in [0, 1], got {lr.dtype}")
    if not torch.isfinite(lr).all():
        raise ValueError("lr contains non-finite values (NaN or inf)")
    check_unit_range(lr, "lr")
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 2:
        raise ValueError(f"scale must be an int >= 2, got {scale!r}")
    scale = int(scale)
    if kernel is None:
        kernel = bicubic_kernel(scale)
    if not isinstance(kernel, torch.Tensor) or kernel.ndim != 2:
        raise ValueError("kernel must be a 2D tensor (or None for the bicubic kernel)")
    if not torch.isfinite(kernel).all() or kernel.sum() <= 0:
        raise ValueError("kernel must be finite with a positive sum")
    kernel = kernel.detach().to("cpu", torch.float64)
    return lr, kernel / kernel.sum(), scale


def degrade_with_kernel(hr: torch.Tensor, kernel: torch.Tensor, scale: int) -> torch.Tensor:
    """``BlurDownsample(kernel, scale, boundary="symmetric").A(hr)``: blur with mirrored borders (no
    wrap-around), then subsample; ``hr`` is cropped to a multiple of ``scale`` first."""
    h, w = hr.shape[-2:]
    hr = hr[..., : h - h % scale, : w - w % scale]
    return BlurDownsample(kernel.to(hr), scale, boundary="symmetric").A(hr)


def make_fathers(lr: torch.Tensor, kernel: torch.Tensor, scale: int, scales=(1.0, 0.85, 0.7),
                 min_size: int = 8) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Training pairs ``(bicubic-enlarged son, father)`` for every father scale and the 8
    flips/rotations: the father is ``lr`` (bicubically downscaled by ``scales``), the son is the
    father degraded with ``kernel``. Fathers are cropped to multiples of ``scale``."""
    pairs = []
    for s in scales:
        father = lr if s == 1.0 else imresize(lr, s).clamp(0, 1)
        h, w = father.shape[-2:]
        father = father[..., : h - h % scale, : w - w % scale]
        if min(father.shape[-2:]) < max(min_size, scale * 4):
            continue
        for t in range(8):
            f = dihedral(father, t)
            son = degrade_with_kernel(f, kernel, scale)
            pairs.append((imresize(son, float(scale)), f))
    if not pairs:
        raise ValueError(f"the LR image {tuple(lr.shape[-2:])} is too small to make training pairs")
    return pairs


def back_project(sr: torch.Tensor, lr: torch.Tensor, kernel: torch.Tensor, scale: int,
                 iterations: int = 2) -> torch.Tensor:
    """Iterative back-projection (Irani & Peleg, 1991): add the bicubically enlarged LR residual
    ``y - (x * k) downsampled`` to ``x``, ``iterations`` times; makes ``x`` agree with ``y`` under ``k``."""
    for _ in range(iterations):
        residual = lr - degrade_with_kernel(sr, kernel, scale)
        sr = sr + imresize(residual, float(scale))
    return sr


@torch.no_grad()
def _apply(net: nn.Module, lr: torch.Tensor, scale: int, ensemble: bool) -> torch.Tensor:
    outputs = []
    for t in range(8 if ensemble else 1):
        x = dihedral(lr, t)
        y = net(imresize(x, float(scale))[None])[0]
        outputs.append(dihedral(y, t, inverse=True))
    return torch.stack(outputs).mean(0)


def zssr(
    lr: torch.Tensor,
    kernel: torch.Tensor | None = None,
    scale: int = 2,
    *,
    config: ZSSRConfig | None = None,
    steps: int | None = None,
    device: torch.device | str | None = None,
    seed: int = 0,
    progress: bool = True,
    checkpoint: str | os.PathLike | None = None,
) -> tuple[torch.Tensor, History]:
    """Super-resolve ``lr`` by ``scale`` assuming it was degraded with ``kernel``; returns ``(sr, history)``.

    Args:
        lr: (C, H, W) or (1, C, H, W) image in [0, 1], C = 1 or 3.
        kernel: the blur kernel (any size, in the alignment of
            :class:`~course_lib.degradation.operators.BlurDownsample`); ``None`` = MATLAB bicubic (the standard
            assumption). It is normalised to sum 1.
        scale: integer factor (2 or 4 in the chapter).
        config: network and training sizes (:class:`~course_lib.zssr.ZSSRConfig`); ``steps`` overrides ``config.steps``.
        device, seed, progress, checkpoint: as in :func:`~course_lib.training.fit`.

    Returns:
        ``sr``: (C, sH, sW) clamped to [0, 1], on the CPU; ``history``: the training log (L1 loss).
    """
    lr, kernel, scale = _check_inputs(lr, kernel, scale)
    config = config or ZSSRConfig()
    if steps is not None:
        config = replace(config, steps=steps)
    device = torch.device(device) if device is not None else get_device()
    crop = config.crop_size - config.crop_size % scale
    pairs = make_fathers(lr.to(torch.float32), kernel, scale, config.father_scales, min_size=crop)
    pairs = [(u.to(device), f.to(device)) for u, f in pairs]
    areas = torch.tensor([float(f.shape[-1] * f.shape[-2]) for _, f in pairs], dtype=torch.float64)

    def batch_fn(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(seed * 7919 + step)
        which = torch.multinomial(areas, config.batch_size, replacement=True, generator=g).tolist()
        inputs, targets = [], []
        for i in which:
            up, father = pairs[i]
            h, w = father.shape[-2:]
            top = int(torch.randint(0, h - crop + 1, (1,), generator=g))
            left = int(torch.randint(0, w - crop + 1, (1,), generator=g))
            inputs.append(up[:, top:top + crop, left:left + crop])
            targets.append(father[:, top:top + crop, left:left + crop])
        return torch.stack(inputs), torch.stack(targets)

    def loss_fn(net: nn.Module, batch) -> torch.Tensor:
        inputs, targets = batch
        return F.l1_loss(net(inputs), targets)

    torch.manual_seed(seed)
    net = ZSSRNet(config.channels, config.layers, lr.shape[0]).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.steps, eta_min=config.lr * 0.01)
    history = fit(net, loss_fn, batch_fn, config.steps, optimizer=optimizer, scheduler=scheduler,
                  checkpoint=checkpoint, seed=seed, tag=f"zssr:{config.layers}x{config.channels}:x{scale}",
                  device=device, desc=f"ZSSR x{scale}", progress=progress)
    net.eval()
    sr = _apply(net, lr.to(device), scale, config.ensemble).cpu()
    sr = back_project(sr, lr, kernel, scale, config.back_projection)
    return sr.clamp(0, 1), history


def wiener_sr(lr: torch.Tensor, kernel: torch.Tensor | None, scale: int = 2, *, mu: float = 2e-3,
              eps: float = 1e-3, pad: int = 8, clamp: bool = True) -> torch.Tensor:
    """Closed-form kernel-aware SR: the minimiser of ``||A x - y||^2 + mu (||grad x||^2 + eps ||x||^2)``
    for ``A = BlurDownsample(kernel, scale)`` (periodic boundaries), computed exactly with FFTs.

    This is ``A.prox_l2(0, y, gamma=1/mu, weight=gradient_penalty(eps))``: a Wiener filter with a
    smoothness prior (see :meth:`~course_lib.degradation.operators.BlurDownsample.prox_l2` for the
    push-through identity that makes it two FFTs). ``lr`` is mirror-padded by ``pad`` LR pixels first
    and the result cropped, so that the periodic wrap-around does not show at the borders. Instant,
    no training; sharper with the right kernel, blurry or ringing with a wrong one. ``clamp`` clips
    the result to [0, 1].
    """
    lr, kernel, scale = _check_inputs(lr, kernel, scale)
    if not (mu > 0 and eps > 0):
        raise ValueError(f"mu and eps must be positive, got mu={mu}, eps={eps}")
    y = F.pad(lr[None].double(), (pad, pad, pad, pad), mode="reflect")[0] if pad else lr.double()
    h, w = y.shape[-2:]
    operator = BlurDownsample(kernel.double(), scale)
    start = torch.zeros(*y.shape[:-2], h * scale, w * scale, dtype=torch.float64, device=y.device)
    x = operator.prox_l2(start, y, 1.0 / mu, weight=gradient_penalty(eps))
    if pad:
        x = x[..., pad * scale: -pad * scale, pad * scale: -pad * scale]
    return (x.clamp(0, 1) if clamp else x).to(lr.dtype)


if __name__ == "__main__":  # `python -m course_lib.zssr ...` used to exit 0 doing nothing
    import sys

    print("course_lib.zssr has no command line here; use python -m course_lib blind IN.png OUT.png --scale 2 "
          "--sr zssr (KernelGAN kernel, then ZSSR) or course_lib.zssr.zssr(lr, kernel, scale) in Python",
          file=sys.stderr)
    sys.exit(2)
