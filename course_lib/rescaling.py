"""Images in, images out for invertible rescaling models (IRN, chapter 5; HCFlow, chapter 6).

Both models are one bijection from an HR image to an LR image and a latent ``z`` of the same
resolution, packed as the channels ``[LR | z]``::

    f(x) = [y | z]  (N, 3 s^2, H/s, W/s),       x = f^{-1}([y | z]),       z ~ N(0, T^2 I) to upscale.

:class:`RescalingFlow` is the base class of such a model (:class:`course_lib.irn.model.IRN`,
:class:`course_lib.hcflow.model.HCFlow`): it gives the ``(y, z)`` views ``encode`` / ``decode`` /
``sample_z``, a ``mode`` (``"rescale"``: it upscales the LR image it made; ``"sr"``: it upscales
a given bicubic LR image) and its constructor arguments ``config()``. The functions below work for
any of them:

* :func:`downscale`: HR -> the 8-bit LR image (:func:`quantize`, straight-through gradient);
* :func:`upscale`: LR -> HR with a fresh ``z`` at temperature ``T``;
* :func:`as_rgb_batch`, :func:`check_divisible`, :func:`check_scale`, :func:`check_temperature`:
  the input checks with the same messages for both models;
* :func:`center_crop`, :func:`round_8bit`, :func:`evaluation_images`: the images of the shared
  evaluation (:mod:`course_lib.evaluation`);
* :func:`command_parser`, :func:`run_command`, :func:`report_training`: the command lines
  ``python -m course_lib.irn`` and ``python -m course_lib.hcflow`` (one set of shared flags, one
  ``evaluate`` command);
* :func:`upcast`: half-precision tensors to float32, for the losses under mixed precision.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from course_lib import config, training
from course_lib.checks import check_unit_range
from course_lib.flows import InvertibleModule

__all__ = [
    "CHANNELS", "MODES", "RescalingFlow", "as_rgb_batch", "center_crop", "check_divisible", "check_scale",
    "check_temperature", "command_parser", "downscale", "evaluation_images", "quantize", "report_training",
    "round_8bit", "run_command", "upcast", "upscale",
]

Tensor = torch.Tensor

CHANNELS = 3  # RGB
# What a model's upscaler is given: the bicubic LR image ("sr") or the LR image it made itself ("rescale").
MODES = ("sr", "rescale")


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

    A subclass sets ``scale`` and ``out_channels`` (``3 s^2``: the 3 LR channels first), ``mode``
    if it is not ``"rescale"`` (one of ``MODES``), implements ``_forward`` / ``_inverse`` of
    :class:`course_lib.flows.base.InvertibleModule` (checking its inputs with ``_check_hr`` and
    ``_check_packed``) and :meth:`config`; it then has the ``(y, z)`` views :meth:`encode`,
    :meth:`decode` and :meth:`sample_z`, and works with :func:`course_lib.rescaling.downscale`,
    :func:`course_lib.rescaling.upscale` and :func:`course_lib.evaluation.evaluate`.
    """

    scale: int
    out_channels: int
    mode: str = "rescale"

    def config(self) -> dict[str, Any]:
        """The constructor arguments as plain Python values: ``type(self)(**self.config())`` builds
        the same architecture. The training loops store it in checkpoints as ``model_config``."""
        raise NotImplementedError(f"{type(self).__name__} does not define config()")

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

    A 0-255 image is refused (:func:`course_lib.checks.check_unit_range`).

    Gradients pass the quantiser straight through; wrap in ``torch.no_grad()`` for inference.
    ``H`` and ``W`` must be divisible by ``model.scale`` (crop with ``degradation.mod_crop``).
    """
    x, added = as_rgb_batch(hr, "hr", "downscale")
    check_unit_range(x.detach(), "downscale: hr")
    check_divisible(x, model.scale, "downscale")
    lr, _ = model.encode(x)
    lr = quantize(lr)
    return lr[0] if added else lr


def upscale(model: RescalingFlow, lr: Tensor, temperature: float = 1.0,
            generator: torch.Generator | None = None, *, clamp: bool = True) -> Tensor:
    """LR ``(3,h,w)`` or ``(N,3,h,w)`` -> HR ``s`` times larger, with ``z ~ N(0, temperature^2 I)``.

    ``temperature=0`` uses ``z = 0`` (the mode). The result is clamped to [0, 1] unless
    ``clamp=False``. A rescaling model upscales well only the LR its own :func:`downscale` made.
    ``lr`` must be in [0, 1] (a 0-255 image is refused: :func:`course_lib.checks.check_unit_range`).
    """
    y, added = as_rgb_batch(lr, "lr", "upscale")
    check_unit_range(y.detach(), "upscale: lr")
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


def evaluation_images(model: RescalingFlow, photos: Sequence[str] | Sequence[Tensor] | Mapping[str, Tensor] | None,
                      crop: int | None,
                      device: torch.device | str | None = None) -> Iterator[tuple[str, Tensor]]:
    """``(name, hr (1,3,H,W))`` for each evaluation image of ``model``: centre-cropped to at most
    ``crop x crop`` and to multiples of ``model.scale`` (:func:`center_crop`), on ``device``
    (default: the model's).

    ``photos``: names of packaged photos (default ``data.EVAL_PHOTOS``), image tensors (named
    ``image0``, ``image1``, ...) or a mapping ``{name: image tensor}``.
    """
    from course_lib.data import EVAL_PHOTOS, load_photo

    device = torch.device(device) if device is not None else next(model.parameters(), torch.empty(0)).device
    if isinstance(photos, Mapping):
        for name, hr in photos.items():
            yield str(name), center_crop(hr, crop, model.scale).unsqueeze(0).to(device)
        return
    for i, photo in enumerate(EVAL_PHOTOS if photos is None else photos):
        name = photo if isinstance(photo, str) else f"image{i}"
        hr = load_photo(photo) if isinstance(photo, str) else photo
        yield name, center_crop(hr, crop, model.scale).unsqueeze(0).to(device)


# ------------------------------------------------------------------------------------------------
# mixed precision
# ------------------------------------------------------------------------------------------------


def upcast(t: Tensor) -> Tensor:
    """``t`` in float32 if it is float16 or bfloat16 (under mixed precision), else unchanged (float64
    stays float64). The losses cast with it inside :func:`course_lib.training.full_precision`."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


# ------------------------------------------------------------------------------------------------
# command lines
# ------------------------------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    """argparse type: an int of at least 1 (``--steps 0`` would train nothing and write no checkpoint)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive number of steps, got {value}")
    return value


def command_parser(prog: str, description: str, *, shipped: tuple[str, dict[str, Any]]) -> tuple:
    """The parser of ``python -m course_lib.irn`` / ``course_lib.hcflow``, with the flags both share.

    Returns three ``argparse.ArgumentParser``: ``(parser, train, evaluate)``, the sub-command
    parsers for the model to add its own flags to. ``train`` has ``--profile``
    (``course_lib.config.PROFILES``), ``--out``, ``--steps``, ``--seed``, ``--device``,
    ``--threads``, ``--eval-every``, ``--init``, ``--features``, ``--no-progress``, ``--weights``,
    ``--data`` (``photos``, ``div2k`` or a folder), ``--workers``, ``--max-seconds`` and
    ``--amp`` / ``--no-amp``; ``evaluate`` has ``--checkpoint`` or the flag naming a shipped checkpoint
    (``shipped = (flag, add_argument keywords)``, e.g. ``("--scale", {"type": int, "help": ...})``),
    ``--eval`` (``photos``, ``set5``, ``set14``, ``b100``, ``urban100`` or a folder), ``--crop``,
    ``--draws``, ``--temperature``, ``--lpips``, ``--device`` and ``--threads``. :func:`run_command`
    runs the parsed arguments.
    """
    p = argparse.ArgumentParser(prog=prog, description=description)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train (checkpoints, resume, progress bar, seeded)")
    t.add_argument("--profile", choices=config.PROFILES, default=None,
                   help="sizes of the run (default: $COURSE_PROFILE or the hardware); gpu = the paper's model")
    t.add_argument("--out", required=True,
                   help="checkpoint file (written every few hundred steps); resumed from when it exists")
    t.add_argument("--steps", type=_positive_int, default=None, help="total training steps (overrides the profile)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default=None, help="cpu, cuda, ... (default: best available)")
    t.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    t.add_argument("--eval-every", type=int, default=0, help="held-out figures on centre crops every N steps")
    t.add_argument("--init", default=None,
                   help="start from the weights of this checkpoint (fine-tuning; the optimiser starts fresh "
                        "and the architecture comes from the checkpoint)")
    t.add_argument("--features", default=None,
                   help="VGG-19 weights file for the feature loss of IRN+ / HCFlow++ (default: the Gabor stand-in)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar (log files)")
    t.add_argument("--weights", default=None,
                   help="also write a weights-only copy (no optimiser state) here at the end")
    t.add_argument("--data", default="photos",
                   help="training images: photos (the packaged training photos and dead leaves, offline), "
                        "div2k (the 800 DIV2K training images, the papers' data: downloaded once, 3.5 GB) or a "
                        "folder of images")
    t.add_argument("--workers", type=int, default=None,
                   help="DataLoader worker processes that build batches ahead (default: 2 on CUDA, else 0)")
    t.add_argument("--max-seconds", type=float, default=None,
                   help="stop after this much wall-clock time, checkpoint written; run again to continue")
    t.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="mixed precision (default: on for CUDA; likelihoods and log-determinants stay float32)")
    e = sub.add_parser("evaluate", help="held-out Y-PSNR/SSIM and LR figures of a checkpoint")
    src = e.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="checkpoint file")
    flag, kwargs = shipped
    src.add_argument(flag, **kwargs)
    e.add_argument("--eval", default="photos",
                   help="photos (the packaged held-out photos, offline), set5, set14, b100, urban100 (downloaded "
                        "once) or a folder of HR images")
    e.add_argument("--crop", type=int, default=None, help="centre crop size (default: whole images)")
    e.add_argument("--draws", type=int, default=1, help="samples of z per image")
    e.add_argument("--temperature", type=float, default=None,
                   help="std of z (default: 1.0 for rescaling, 0.9 for SR)")
    e.add_argument("--lpips", action="store_true",
                   help="also LPIPS, if the optional lpips or torchmetrics package is installed")
    e.add_argument("--device", default=None, help="cpu, cuda, ... (default: best available)")
    e.add_argument("--threads", type=int, default=None)
    return p, t, e


def run_command(args, *, train: Callable[..., tuple[nn.Module, Any]], load: Callable[..., RescalingFlow],
                nll: Callable[..., Tensor] | None = None) -> int:
    """Run the arguments parsed by a :func:`command_parser` parser (an ``argparse.Namespace``);
    returns the exit status.

    ``train``: ``train(args) -> (model, history)``, timed, then :func:`report_training`.
    ``evaluate``: ``load(args)`` gives the model, :func:`course_lib.evaluation.evaluate` its
    figures (with ``nll``, the likelihood function, when ``args.nll`` is set and the model is an SR
    model), printed as :func:`course_lib.evaluation.format_results`.
    """
    if args.threads is not None:
        config.set_threads(args.threads)
    if args.command == "train":
        out = Path(args.out)
        if out.exists():
            print(f"resuming from {out}", flush=True)
        start = time.perf_counter()
        model, history = train(args)
        report_training(model, history, time.perf_counter() - start, out, args.weights, last_logs=True)
        return 0
    from course_lib import evaluation

    device = torch.device(args.device) if getattr(args, "device", None) else config.get_device()
    what, images = evaluation.evaluation_set(getattr(args, "eval", "photos"), download=True)  # --eval names it
    model = load(args).to(device)
    use_nll = nll if getattr(args, "nll", False) and model.mode == "sr" else None
    if getattr(args, "nll", False) and use_nll is None:
        print(f"--nll: {model.tag} has no likelihood of the HR image given the bicubic LR; skipped")
    lpips = None
    if getattr(args, "lpips", False):
        lpips, source = evaluation.lpips_metric(device)
        print(source)
    results = evaluation.evaluate(model, images, crop=args.crop, draws=args.draws, temperature=args.temperature,
                                  nll=use_nll, device=device, lpips=lpips)
    print(f"{model.tag} ({sum(p.numel() for p in model.parameters())} parameters), {what}, Y channel, "
          f"shave {model.scale}, temperature {results['temperature']}, {args.draws} draw(s)")
    print(evaluation.format_results(results))
    if "nll_bpd" in results:
        print(f"NLL: {results['nll_bpd']:.3f} bits/dim")
    return 0


def report_training(model: nn.Module, history: training.History, seconds: float,
                    checkpoint: str | os.PathLike, weights: str | os.PathLike | None = None, *,
                    last_logs: bool = False) -> None:
    """Print the end of a training command: steps, parameters, ``seconds`` (the wall time of this
    session), the total training time and the checkpoint, with ``last_logs`` also the last logged
    values; with ``weights`` also write a weights-only copy there
    (:func:`course_lib.training.export_weights`)."""
    if not training.is_main_process():  # under torchrun the report (and the copy) come from process 0
        return
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
