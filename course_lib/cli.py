"""``python -m course_lib``: the course's methods on your own image files.

::

    python -m course_lib rescale downscale photo.png lr.png --model irn --scale 4
    python -m course_lib rescale upscale lr.png hr.png --model irn --scale 4 [--temperature 1.0] [--seed 0]
    python -m course_lib sr lr.png sr.png --method hcflow --scale 4 [--temperature 0.9] [--samples 8]
    python -m course_lib sr lr.png sr.png --method bicubic --scale 4
    python -m course_lib blind lr.png sr.png --scale 2 [--iterations 3000] [--sr zssr|wiener]

Reading (:func:`course_lib.data.photos.read_image_file`, shared with the library): PNG, JPEG,
TIFF, BMP, WebP, ... in 8 or 16 bits; the EXIF orientation is applied (the image is processed upright,
as viewers show it); transparency is composited on white; a grayscale image is processed as 3
identical channels by the models that need RGB (IRN, HCFlow: the output is RGB) and as one channel
by the others (bicubic, KernelGAN, ZSSR, Wiener: the output is gray). What was done is printed.

Writing: PNG only, 16-bit when the input had more than 8 bits (16-bit PNG/TIFF, float TIFF), else
8-bit; the LR image of ``rescale downscale`` is always 8-bit (the models quantise it). An existing
output is never replaced without ``--overwrite``. ``blind`` also writes the estimated kernel next
to ``OUT``: ``OUT_kernel.npy`` (float32, sums to 1, the correlation convention of
:class:`~course_lib.degradation.operators.BlurDownsample`) and ``OUT_kernel.png`` (a picture).

Bad input (a missing or unreadable file, a wrong flag, an image too small for the method, a
checkpoint made for another model) ends with exit status 2 and a one-line message, no traceback.
:func:`main` is the same as a function: ``main(["sr", "in.png", "out.png", ...])`` returns the
exit status.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from course_lib import config
from course_lib.data.photos import ImageFile, read_image_file, save_png

__all__ = ["PROG", "CommandError", "fit_to_scale", "kernel_picture", "main", "parser"]

PROG = "python -m course_lib"
FITS = ("crop", "pad")
KERNEL_PICTURE_SIZE = 256  # about this many pixels per side for the kernel's picture


class CommandError(ValueError):
    """Bad input to the command line: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block), raised so that :func:`main` reports them."""

    def error(self, message: str):
        raise CommandError(f"{message} (see {self.prog} --help)")


# ------------------------------------------------------------------------------------------------
# the parser
# ------------------------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m course_lib``."""
    p = _Parser(prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
                description="Super-resolution and rescaling of your own images with the course's methods.",
                epilog="Any image the library reads: PNG, JPEG (EXIF rotation applied), TIFF, 16-bit, palette. "
                       "Transparency is composited on white. Grayscale is processed as 3 identical channels by "
                       "IRN and HCFlow (RGB output) and as one channel otherwise (gray output). Outputs are PNG "
                       "(16-bit for inputs with more than 8 bits); existing files are kept unless --overwrite.")
    sub = p.add_subparsers(dest="command", required=True, metavar="{rescale,sr,blind}")

    r = sub.add_parser("rescale", help="IRN or HCFlow rescaling: downscale an HR image, or upscale its LR image",
                       description="Invertible rescaling (IRN, chapter 5; HCFlow, chapter 6) with a shipped or "
                                   "given checkpoint. downscale: HR -> 8-bit LR, 1/scale the size. upscale: LR -> "
                                   "HR, scale x the size, with z ~ N(0, T^2): it works well only on an LR image "
                                   "the same model made.")
    r.add_argument("direction", choices=("downscale", "upscale"))
    _io(r)
    r.add_argument("--model", choices=("irn", "hcflow"), required=True)
    r.add_argument("--scale", type=int, choices=(2, 4), required=True,
                   help="shipped: IRN x2 and x4, HCFlow x4; other scales need --checkpoint")
    r.add_argument("--checkpoint", default=None, help="a checkpoint of python -m course_lib.irn|hcflow train")
    r.add_argument("--temperature", type=float, default=None, help="upscale: std of z (default 1.0)")
    r.add_argument("--seed", type=int, default=0, help="upscale: seed of z")
    r.add_argument("--fit", choices=FITS, default=None,
                   help="downscale, when the size is not divisible by the scale: crop = drop the last rows and "
                        "columns (the benchmarks' mod-crop, default); pad = mirror-pad to the next multiple, so "
                        "the LR image (ceil(H/scale) x ceil(W/scale)) covers the whole image. Upscaling takes "
                        "any size.")
    _common(r)

    s = sub.add_parser("sr", help="super-resolve an LR image: HCFlow samples or MATLAB bicubic",
                       description="Super-resolution of a (bicubically downscaled) LR image: samples of HCFlow's "
                                   "learned distribution at a temperature (shipped x4 SR checkpoint, chapter 6), or "
                                   "MATLAB-compatible bicubic interpolation. Any input size works.")
    _io(s)
    s.add_argument("--method", choices=("hcflow", "bicubic"), required=True)
    s.add_argument("--scale", type=int, required=True, help="hcflow: 4 (the shipped model); bicubic: any int >= 2")
    s.add_argument("--checkpoint", default=None, help="hcflow: an SR checkpoint instead of the shipped one")
    s.add_argument("--temperature", type=float, default=None, help="hcflow: std of z (default 0.9, the paper's)")
    s.add_argument("--samples", type=int, default=None,
                   help="hcflow: number of samples; with N > 1 they are written as OUT_1.png ... OUT_N.png")
    s.add_argument("--seed", type=int, default=0, help="hcflow: seed of the samples")
    _common(s)

    b = sub.add_parser("blind", help="blind SR: KernelGAN estimates the kernel, then a non-blind SR step",
                       description="Blind SR (chapter 7): KernelGAN estimates the image's SR kernel, then ZSSR "
                                   "(trains on the image itself, minutes) or the closed-form Wiener SR (instant) "
                                   "super-resolves with it. Writes OUT, OUT_kernel.npy and OUT_kernel.png. Any "
                                   "input size of at least 27 px per side works (KernelGAN's crops shrink below "
                                   "64 px, with a note).")
    _io(b)
    b.add_argument("--scale", type=int, choices=(2, 4), required=True)
    b.add_argument("--iterations", type=int, default=None, help="KernelGAN steps (default 3000, the paper's)")
    b.add_argument("--sr", choices=("zssr", "wiener"), default="zssr",
                   help="the non-blind step: zssr (the paper's pipeline, default) or wiener (instant)")
    b.add_argument("--zssr-steps", type=int, default=None, help="ZSSR training steps (default 1500)")
    b.add_argument("--seed", type=int, default=0, help="seeds KernelGAN and ZSSR")
    _common(b)
    return p


def _io(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", metavar="IN", help="the image file to read")
    p.add_argument("output", metavar="OUT", help="the PNG file to write (kept if it exists, unless --overwrite)")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: the best available)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: $COURSE_THREADS or all)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


# ------------------------------------------------------------------------------------------------
# running
# ------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0, or 2 with a one-line message for bad input)."""
    try:
        try:
            args = parser().parse_args(argv)
        except SystemExit as exit_:  # --help
            return int(exit_.code or 0)
        if args.threads is not None or os.environ.get("COURSE_THREADS", "").strip():
            config.set_threads(args.threads)
        return {"rescale": _rescale, "sr": _sr, "blind": _blind}[args.command](args)
    except (CommandError, ValueError, TypeError, OSError) as err:
        message = " ".join(str(err).split()) or type(err).__name__
        print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)
        return 2


def _say(text: str) -> None:
    print(text, flush=True)


def _device(args) -> torch.device:
    return torch.device(args.device) if args.device else config.get_device()


def _read(path: str, *, rgb: bool) -> ImageFile:
    """Read ``path`` (3 channels when ``rgb``, else the file's own 1 or 3) and print what was done."""
    info = read_image_file(path, channels=3 if rgb else None)
    c, h, w = info.image.shape
    kind = "gray" if info.file_channels == 1 else "RGB"
    _say(f"read {path}: {h}x{w} {kind}, {info.bit_depth}-bit")
    for note in info.notes():
        _say(f"note: {note}")
    return info


def _outputs(args, paths: Sequence[Path]) -> None:
    """Refuse a missing input, existing outputs (without --overwrite), non-PNG names and directories;
    before any work."""
    if not Path(args.input).exists():
        raise CommandError(f"image file not found: {args.input}")
    out = Path(args.output)
    if out.suffix.lower() != ".png":
        raise CommandError(f"OUT must be a .png file, got {out.name!r}")
    for path in paths:
        if path.is_dir():
            raise CommandError(f"{path} is a directory; OUT must be a file name")
        if path.exists() and not args.overwrite:
            raise CommandError(f"{path} exists; pass --overwrite to replace it")
    if Path(args.input).resolve() in {p.resolve() for p in paths} and not args.overwrite:
        raise CommandError("OUT is the input file; pass --overwrite to replace it")


def _write_png(img: torch.Tensor, path: Path, bits: int) -> None:
    """Write atomically (a temporary file, then rename), so that a failure leaves no half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".png", prefix=f".{path.stem}-", dir=path.parent)
    os.close(fd)
    try:
        save_png(img.detach().cpu(), tmp, bits=bits)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    c, h, w = img.shape
    _say(f"wrote {path} ({h}x{w} {'gray' if c == 1 else 'RGB'}, {bits}-bit)")


def _bits(info: ImageFile) -> int:
    return 16 if info.bit_depth > 8 else 8


def fit_to_scale(img: torch.Tensor, scale: int, fit: str) -> tuple[torch.Tensor, str | None]:
    """Make H and W of ``img`` (C, H, W) multiples of ``scale``: ``fit="crop"`` drops the last rows and
    columns (mod-crop), ``"pad"`` mirror-pads them. Returns the image and a line saying what was done
    (``None`` when the size was already divisible)."""
    if fit not in FITS:
        raise ValueError(f"fit must be one of {FITS}, got {fit!r}")
    h, w = img.shape[-2:]
    if h < scale or w < scale:
        raise CommandError(f"the image ({h}x{w}) is smaller than the scale {scale}")
    dh, dw = (-h) % scale, (-w) % scale
    if not (h % scale or w % scale):
        return img, None
    if fit == "crop":
        out = img[..., : h - h % scale, : w - w % scale]
        return out, (f"size {h}x{w} is not divisible by {scale}: --fit crop dropped the last {h % scale} row(s) "
                     f"and {w % scale} column(s) -> {out.shape[-2]}x{out.shape[-1]}")
    out = F.pad(img[None], (0, dw, 0, dh), mode="reflect")[0]
    return out, (f"size {h}x{w} is not divisible by {scale}: --fit pad mirror-padded {dh} row(s) and {dw} "
                 f"column(s) -> {out.shape[-2]}x{out.shape[-1]}")


def _refuse(args, names: Sequence[str], why: str) -> None:
    """Refuse flags that do not apply (given explicitly) with the reason."""
    given = [f"--{n.replace('_', '-')}" for n in names if getattr(args, n) is not None]
    if given:
        raise CommandError(f"{', '.join(given)} {'does' if len(given) == 1 else 'do'} not apply {why}")


# ------------------------------------------------------------------------------------------------
# rescale
# ------------------------------------------------------------------------------------------------


def _rescale(args) -> int:
    from course_lib import rescaling

    out = Path(args.output)
    _outputs(args, [out])
    if args.direction == "downscale":
        _refuse(args, ["temperature"], "to downscale (z is only drawn to upscale)")
    else:
        _refuse(args, ["fit"], "to upscale (any size can be upscaled)")
    temperature = rescaling.check_temperature(1.0 if args.temperature is None else args.temperature)
    device = _device(args)
    model = _load_rescaling(args).to(device)
    info = _read(args.input, rgb=True)
    start = time.perf_counter()
    with torch.no_grad():
        if args.direction == "downscale":
            hr, line = fit_to_scale(info.image, args.scale, args.fit or "crop")
            if line:
                _say(line)
            result = rescaling.downscale(model, hr.to(device))
            bits = 8
            if info.bit_depth > 8:
                _say("note: the LR image is written in 8 bits: the model quantises it (that is what it upscales)")
        else:
            _say(f"note: {model.tag} upscales well only an LR image made by its own downscale "
                 f"({PROG} rescale downscale ... --model {args.model} --scale {args.scale})")
            gen = torch.Generator().manual_seed(args.seed)
            result = rescaling.upscale(model, info.image.to(device), temperature, gen)
            bits = _bits(info)
    _say(f"{model.tag} {args.direction} x{args.scale} in {time.perf_counter() - start:.1f} s"
         + (f" (temperature {temperature:g}, seed {args.seed})" if args.direction == "upscale" else ""))
    _write_png(result.cpu(), out, bits)
    return 0


def _load_rescaling(args):
    if args.model == "irn":
        from course_lib.irn import load_irn

        return load_irn(args.checkpoint, scale=args.scale) if args.checkpoint else load_irn(args.scale)
    from course_lib.hcflow import load_hcflow

    return load_hcflow(args.checkpoint or "rescale", mode="rescale", scale=args.scale)


# ------------------------------------------------------------------------------------------------
# sr
# ------------------------------------------------------------------------------------------------


def _sr(args) -> int:
    out = Path(args.output)
    if args.method == "bicubic":
        _refuse(args, ["temperature", "samples", "checkpoint"], "to --method bicubic")
        if args.scale < 2:
            raise CommandError(f"--scale must be an int >= 2, got {args.scale}")
        _outputs(args, [out])
        return _sr_bicubic(args, out)
    samples = 1 if args.samples is None else args.samples
    if samples < 1:
        raise CommandError(f"--samples must be at least 1, got {samples}")
    paths = [out] if samples == 1 else [out.with_name(f"{out.stem}_{i}{out.suffix}") for i in range(1, samples + 1)]
    _outputs(args, paths)
    from course_lib import rescaling
    from course_lib.hcflow import load_hcflow

    temperature = rescaling.check_temperature(0.9 if args.temperature is None else args.temperature)
    model = load_hcflow(args.checkpoint or "sr", mode="sr", scale=args.scale).to(_device(args))
    info = _read(args.input, rgb=True)
    lr = info.image.to(_device(args))
    gen = torch.Generator().manual_seed(args.seed)
    from tqdm.auto import tqdm

    start = time.perf_counter()
    results = []
    with torch.no_grad():
        for _ in tqdm(range(samples), desc=f"HCFlow x{args.scale} samples", disable=args.no_progress or samples == 1,
                      file=sys.stderr):
            results.append(rescaling.upscale(model, lr, temperature, gen).cpu())
    _say(f"{model.tag}: {samples} sample(s) at temperature {temperature:g} (seed {args.seed}) in "
         f"{time.perf_counter() - start:.1f} s")
    for img, path in zip(results, paths):
        _write_png(img, path, _bits(info))
    return 0


def _sr_bicubic(args, out: Path) -> int:
    from course_lib.degradation import imresize

    info = _read(args.input, rgb=False)
    result = imresize(info.image, float(args.scale)).clamp(0, 1)
    _say(f"MATLAB bicubic x{args.scale}")
    _write_png(result, out, _bits(info))
    return 0


# ------------------------------------------------------------------------------------------------
# blind
# ------------------------------------------------------------------------------------------------


def _blind(args) -> int:
    from course_lib import zssr as Z
    from course_lib.kernelgan import KernelGANConfig, estimate_kernel
    from course_lib.kernelgan.config import PAPER_ITERATIONS

    out = Path(args.output)
    kernel_npy, kernel_png = (out.with_name(f"{out.stem}_kernel{suffix}") for suffix in (".npy", ".png"))
    if args.sr == "wiener":
        _refuse(args, ["zssr_steps"], "to --sr wiener")
    _outputs(args, [out, kernel_npy, kernel_png])
    iterations = PAPER_ITERATIONS if args.iterations is None else args.iterations
    if iterations < 1:
        raise CommandError(f"--iterations must be at least 1, got {iterations}")
    if args.zssr_steps is not None and args.zssr_steps < 1:
        raise CommandError(f"--zssr-steps must be at least 1, got {args.zssr_steps}")

    info = _read(args.input, rgb=False)
    lr = info.image
    h, w = lr.shape[-2:]
    if float(lr.max() - lr.min()) < 1.0 / 255.0:
        raise CommandError(f"{args.input} is flat (all pixels within one 8-bit level): it has no structure "
                           "that KernelGAN could estimate a kernel from")
    default = KernelGANConfig()
    smallest = default.kernel_size + 2 * (default.d_kernel_size - 1) + 2
    if min(h, w) < smallest:
        raise CommandError(f"the image ({h}x{w}) is too small for KernelGAN: it needs at least {smallest} pixels "
                           f"per side ({default.crop_size} for the paper's crops)")
    gan_config = default
    if min(h, w) < default.crop_size:
        gan_config = KernelGANConfig(crop_size=min(h, w))
        _say(f"note: the image is smaller than KernelGAN's {default.crop_size}-pixel crops: crops of "
             f"{min(h, w)} pixels")
    device = _device(args)
    progress = not args.no_progress

    start = time.perf_counter()
    kernel, _ = estimate_kernel(lr, args.scale, iterations, device=device, seed=args.seed, progress=progress,
                                config=gan_config)
    kernel = kernel.detach().to("cpu", torch.float32)
    _say(f"KernelGAN x{args.scale}: {iterations} iterations, a {kernel.shape[0]}x{kernel.shape[1]} kernel in "
         f"{time.perf_counter() - start:.1f} s")

    start = time.perf_counter()
    if args.sr == "wiener":
        sr = Z.wiener_sr(lr, kernel, args.scale)
        _say(f"Wiener SR x{args.scale} with the estimated kernel in {time.perf_counter() - start:.1f} s")
    else:
        zssr_config = Z.ZSSRConfig()
        side = min(h, w) - min(h, w) % args.scale
        if side < zssr_config.crop_size:
            zssr_config = Z.ZSSRConfig(crop_size=side)
            _say(f"note: the image is smaller than ZSSR's {Z.ZSSRConfig().crop_size}-pixel crops: crops of {side} "
                 "pixels")
        sr, _ = Z.zssr(lr, kernel, args.scale, config=zssr_config, steps=args.zssr_steps, device=device,
                       seed=args.seed, progress=progress)
        _say(f"ZSSR x{args.scale} ({args.zssr_steps or zssr_config.steps} steps) with the estimated kernel in "
             f"{time.perf_counter() - start:.1f} s")

    _write_png(sr, out, _bits(info))
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(kernel_npy, "wb") as f:
        np.save(f, kernel.numpy())
    _say(f"wrote {kernel_npy} (float32 {kernel.shape[0]}x{kernel.shape[1]}, sums to {float(kernel.sum()):.4f})")
    _write_png(kernel_picture(kernel), kernel_png, 8)
    return 0


def kernel_picture(kernel: torch.Tensor, size: int = KERNEL_PICTURE_SIZE) -> torch.Tensor:
    """A (1, H, W) picture of a 2D kernel: ``kernel / max`` (white = the largest weight), each weight a
    square block so that the picture is about ``size`` pixels wide."""
    if not isinstance(kernel, torch.Tensor) or kernel.dim() != 2:
        raise ValueError("kernel must be a 2D tensor")
    k = kernel.detach().to("cpu", torch.float64).clamp_min(0)
    k = k / k.max() if float(k.max()) > 0 else k
    block = max(1, size // max(k.shape))
    return k.repeat_interleave(block, 0).repeat_interleave(block, 1)[None].float()
