"""Images in, images out for invertible rescaling models (IRN, chapter 5; HCFlow, chapter 6).

Both models are one bijection from an HR image to an LR image and a latent ``z`` of the same
resolution, packed as the channels ``[LR | z]``::

    f(x) = [y | z]  (N, 3 s^2, H/s, W/s),       x = f^{-1}([y | z]),       z ~ N(0, T^2 I) to upscale.

:class:`RescalingFlow` is the base class of such a model (:class:`course_lib.irn.IRN`,
:class:`course_lib.hcflow.model.HCFlow`): it gives the ``(y, z)`` views ``encode`` / ``decode`` /
``sample_z``. The functions below work for any of them:

* :func:`downscale`: HR -> the 8-bit LR image (:func:`quantize`, straight-through gradient);
* :func:`upscale`: LR -> HR with a fresh ``z`` at temperature ``T``;
* :func:`as_rgb_batch`, :func:`check_divisible`, :func:`check_scale`, :func:`check_temperature`:
  the input checks with the same messages for both models;
* :func:`center_crop`, :func:`round_8bit`, :func:`evaluation_images`: what the evaluations share;
* :func:`report_training`: the last lines of both training command lines.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from course_lib import training
from course_lib.flows import InvertibleModule

Tensor = torch.Tensor

CHANNELS = 3  # RGB


# ------------------------------------------------------------------------------------------------
# input checks
# ------------------------------------------------------------------------------------------------


def as_rgb_batch(img, name: str, where: str) -> tuple[Tensor, bool]:
    """(3,H,W) or (N,3,H,W) finite float tensor -> (N,3,H,W) and whether a batch dim was added."""
    if not isinstance(img, torch.Tensor):
        raise TypeError(f"{where}: {name} must be a torch.Tensor, got {type(img).__name__}")
    if not img.is_floating_point():
        raise TypeError(f"{where}: {name} must be a floating tensor with values in [0, 1], got {img.dtype}")
    if img.dim() not in (3, 4):
        raise ValueError(f"{where}: {name} must have shape (3, H, W) or (N, 3, H, W), got {tuple(img.shape)}")
    if img.shape[-3] != CHANNELS:
        raise ValueError(f"{where}: {name} must be an RGB image with 3 channels, got {img.shape[-3]} "
                         f"(shape {tuple(img.shape)})")
    if not bool(torch.isfinite(img).all()):
        raise ValueError(f"{where}: {name} contains non-finite values (NaN or Inf)")
    return (img.unsqueeze(0), True) if img.dim() == 3 else (img, False)


def check_divisible(x: Tensor, scale: int, where: str) -> None:
    """Raise a clear error when H or W of ``x`` is not a multiple of ``scale`` (non-square is fine)."""
    h, w = x.shape[-2:]
    if h % scale or w % scale:
        raise ValueError(f"{where}: image size {h}x{w} is not divisible by the scale {scale}; crop it "
                         f"first, e.g. course_lib.degradation.mod_crop(img, {scale})")


def check_scale(scale, reason: str) -> int:
    """Return ``scale`` if it is an int power of two >= 2; ``reason`` ends the error message
    (why the model needs one, e.g. "IRN downscales by x2 per Haar stage")."""
    if isinstance(scale, bool) or not isinstance(scale, int):
        raise TypeError(f"scale must be an int power of two (2, 4, 8, ...), got {scale!r}")
    if scale < 2 or scale & (scale - 1):
        raise ValueError(f"scale must be a power of two >= 2 (2, 4, 8, ...), got {scale}: {reason}")
    return scale


def check_temperature(temperature) -> float:
    """Return ``temperature`` as a float if it is a number >= 0 (the std of the sampled ``z``)."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature >= 0:
        raise ValueError(f"temperature must be a number >= 0, got {temperature!r}")
    return float(temperature)


# ------------------------------------------------------------------------------------------------
# the models' common interface
# ------------------------------------------------------------------------------------------------


class RescalingFlow(InvertibleModule):
    """Base class of a bijection ``x (N,3,H,W) <-> [y | z] (N, out_channels, H/s, W/s)``.

    A subclass sets ``scale`` and ``out_channels`` (``3 s^2``: the 3 LR channels first) and
    implements ``_forward`` / ``_inverse`` of :class:`course_lib.flows.base.InvertibleModule`
    (checking its inputs with ``_check_hr`` and ``_check_packed``); it then has the
    ``(y, z)`` views :meth:`encode`, :meth:`decode` and :meth:`sample_z`, and works with
    :func:`course_lib.rescaling.downscale` and :func:`course_lib.rescaling.upscale`.
    """

    scale: int
    out_channels: int

    @property
    def z_channels(self) -> int:
        """Channels of the latent ``z``: everything but the 3 LR channels."""
        return self.out_channels - CHANNELS

    def _check_hr(self, x: Tensor, where: str) -> None:
        """Refuse an HR batch that is not (N, 3, H, W) with H and W divisible by the scale."""
        if x.dim() != 4 or x.shape[1] != CHANNELS:
            raise ValueError(f"{where} expects (N, 3, H, W), got {tuple(x.shape)}")
        check_divisible(x, self.scale, where)

    def _check_packed(self, z: Tensor, where: str) -> None:
        """Refuse a packed ``[LR | z]`` batch without ``out_channels`` channels."""
        if z.dim() != 4 or z.shape[1] != self.out_channels:
            raise ValueError(f"{where} expects (N, {self.out_channels}, h, w) = [LR | z], "
                             f"got {tuple(z.shape)}")

    def encode(self, hr: Tensor) -> tuple[Tensor, Tensor]:
        """HR (N,3,H,W) -> (LR (N,3,H/s,W/s) before quantisation, z (N,3s^2-3,H/s,W/s))."""
        out, _ = self(hr)
        return out[:, :CHANNELS], out[:, CHANNELS:]

    def decode(self, lr: Tensor, z: Tensor) -> Tensor:
        """(LR, z) -> HR, the exact inverse of :meth:`encode`."""
        if lr.shape[0] != z.shape[0] or lr.shape[2:] != z.shape[2:] or z.shape[1] != self.z_channels:
            raise ValueError(f"decode: z must have shape (N, {self.z_channels}, h, w) matching the LR "
                             f"{tuple(lr.shape)}, got {tuple(z.shape)}")
        return self.inverse(torch.cat([lr, z], dim=1))

    def sample_z(self, lr: Tensor, temperature: float = 1.0,
                 generator: torch.Generator | None = None) -> Tensor:
        """z ~ N(0, temperature^2 I) of the shape that goes with ``lr`` (N,3,h,w), drawn with
        ``generator`` (on its device) when given."""
        temperature = check_temperature(temperature)
        shape = (lr.shape[0], self.z_channels, *lr.shape[2:])
        device = generator.device if generator is not None else lr.device
        z = torch.randn(shape, generator=generator, device=device, dtype=lr.dtype)
        return temperature * z.to(lr.device)


# ------------------------------------------------------------------------------------------------
# images in, images out
# ------------------------------------------------------------------------------------------------


def round_8bit(img: Tensor) -> Tensor:
    """Clamp to [0, 1] and round to the 256 levels of an 8-bit image: ``round(255 x) / 255``.

    ``torch.round`` rounds halves to even, as the official IRN and HCFlow code does (MATLAB's
    ``uint8`` rounds them away from zero: :func:`course_lib.degradation.bicubic.quantize_8bit`).
    """
    return torch.round(img.clamp(0.0, 1.0) * 255.0) / 255.0


def quantize(x: Tensor) -> Tensor:
    """8-bit quantiser with a straight-through gradient (IRN's and HCFlow's ``Quantization``).

    Forward: :func:`course_lib.rescaling.round_8bit`; backward: the identity (Bengio et al.
    2013), so a reconstruction loss trains the downscaler through the rounding.
    """
    return x + (round_8bit(x) - x).detach()


def downscale(model: RescalingFlow, hr: Tensor) -> Tensor:
    """HR ``(3,H,W)`` or ``(N,3,H,W)`` in [0, 1] -> the model's 8-bit-quantised LR image (same rank).

    Gradients pass the quantiser straight through; wrap in ``torch.no_grad()`` for inference.
    ``H`` and ``W`` must be divisible by ``model.scale`` (crop with ``degradation.mod_crop``).
    """
    x, added = as_rgb_batch(hr, "hr", "downscale")
    check_divisible(x, model.scale, "downscale")
    lr, _ = model.encode(x)
    lr = quantize(lr)
    return lr[0] if added else lr


def upscale(model: RescalingFlow, lr: Tensor, temperature: float = 1.0,
            generator: torch.Generator | None = None, *, clamp: bool = True) -> Tensor:
    """LR ``(3,h,w)`` or ``(N,3,h,w)`` -> HR ``s`` times larger, with ``z ~ N(0, temperature^2 I)``.

    ``temperature=0`` uses ``z = 0`` (the mode). The result is clamped to [0, 1] unless
    ``clamp=False``. A rescaling model upscales well only the LR its own :func:`downscale` made.
    """
    y, added = as_rgb_batch(lr, "lr", "upscale")
    z = model.sample_z(y, check_temperature(temperature), generator)
    hr = model.decode(y, z)
    if clamp:
        hr = hr.clamp(0.0, 1.0)
    return hr[0] if added else hr


# ------------------------------------------------------------------------------------------------
# evaluation
# ------------------------------------------------------------------------------------------------


def center_crop(img: Tensor, size: int | None, scale: int) -> Tensor:
    """Centre crop to at most ``size x size`` (``None``: keep all), then crop to multiples of ``scale``."""
    h, w = img.shape[-2:]
    if size is not None:
        th, tw = min(size, h), min(size, w)
        top, left = (h - th) // 2, (w - tw) // 2
        img = img[..., top:top + th, left:left + tw]
        h, w = th, tw
    return img[..., : h - h % scale, : w - w % scale]


def evaluation_images(model: RescalingFlow, photos: Sequence[str] | Sequence[Tensor] | None,
                      crop: int | None,
                      device: torch.device | str | None = None) -> Iterator[tuple[str, Tensor]]:
    """``(name, hr (1,3,H,W))`` for each evaluation image of ``model``: centre-cropped to at most
    ``crop x crop`` and to multiples of ``model.scale`` (:func:`center_crop`), on ``device``
    (default: the model's).

    ``photos``: names of packaged photos (default ``data.EVAL_PHOTOS``) or image tensors (named
    ``image0``, ``image1``, ...).
    """
    from course_lib.data import EVAL_PHOTOS, load_photo

    device = torch.device(device) if device is not None else next(model.parameters(), torch.empty(0)).device
    for i, photo in enumerate(EVAL_PHOTOS if photos is None else photos):
        name = photo if isinstance(photo, str) else f"image{i}"
        hr = load_photo(photo) if isinstance(photo, str) else photo
        yield name, center_crop(hr, crop, model.scale).unsqueeze(0).to(device)


# ------------------------------------------------------------------------------------------------
# command lines
# ------------------------------------------------------------------------------------------------


def report_training(model: nn.Module, history: training.History, seconds: float,
                    checkpoint: str | os.PathLike, weights: str | os.PathLike | None = None, *,
                    last_logs: bool = False) -> None:
    """Print the end of a training command: steps, parameters, ``seconds`` (the wall time of this
    session), the total training time and the checkpoint, with ``last_logs`` also the last logged
    values; with ``weights`` also write a weights-only copy there
    (:func:`course_lib.training.export_weights`)."""
    n_params = sum(p.numel() for p in model.parameters())
    steps = history.steps[-1] if history.steps else 0
    logs = ""
    if last_logs:
        last = {name: round(values[-1], 4) for name, values in history.logs.items()}
        logs = f"last logs {last}; "
    print(f"done: {steps} steps, {n_params} parameters, {seconds:.0f} s this session "
          f"({history.seconds:.0f} s training in total); {logs}checkpoint {checkpoint}", flush=True)
    if weights:
        print(f"weights-only copy: {training.export_weights(checkpoint, weights)}")
