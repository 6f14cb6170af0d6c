"""Command line of KernelGAN: estimate the SR kernel of one LR image file::

    python -m course_lib.kernelgan estimate photo_lr.png --scale 2 --out kernel.npy
    python -m course_lib.kernelgan estimate photo_lr.png --scale 4 --iterations 3000 --out kernel_x4.pt

The kernel is written as a NumPy array (``.npy``) or a torch tensor (``.pt``), float32, summing to 1,
in the correlation convention of :class:`~course_lib.degradation.operators.BlurDownsample` (13x13 at
x2, 27x27 at x4). ``--checkpoint FILE`` saves the training state and resumes from it.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from course_lib import config
from course_lib.data import load_image
from course_lib.degradation import kernel_centre_of_mass, kernel_covariance

from .config import PAPER_ITERATIONS, REGULARIZERS, KernelGANConfig
from .gan import estimate_kernel

__all__ = ["main", "save_kernel"]

SUFFIXES = (".npy", ".pt")


def save_kernel(kernel: torch.Tensor, path: str | Path) -> Path:
    """Write ``kernel`` to ``path``: ``.npy`` (``numpy.save``) or ``.pt`` (``torch.save``)."""
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise ValueError(f"the kernel file must end in {' or '.join(SUFFIXES)}, got {path.name!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    kernel = kernel.detach().to("cpu", torch.float32)
    if path.suffix == ".npy":
        np.save(path, kernel.numpy())
    else:
        torch.save(kernel, path)
    return path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m course_lib.kernelgan",
                                description="KernelGAN (Bell-Kligler et al. 2019): blind SR kernel estimation")
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("estimate", help="estimate the SR kernel of one LR image file")
    e.add_argument("image", help="the LR image (PNG, JPEG, TIFF, ...; gray or RGB)")
    e.add_argument("--scale", type=int, choices=(2, 4), default=2,
                   help="2: the 13x13 x2 kernel; 4: its analytic x4 kernel (KernelGAN always trains at x2)")
    e.add_argument("--out", required=True, help="where to write the kernel (.npy or .pt)")
    e.add_argument("--iterations", type=int, default=PAPER_ITERATIONS,
                   help=f"training steps (paper: {PAPER_ITERATIONS})")
    e.add_argument("--seed", type=int, default=0, help="seeds the weights, the crops and the noise")
    e.add_argument("--crop-size", type=int, default=None, help="G's input crop (paper: 64)")
    e.add_argument("--g-channels", type=int, default=None, help="width of G's layers (paper: 64)")
    e.add_argument("--without", nargs="+", default=[], choices=REGULARIZERS, metavar="TERM",
                   help=f"switch regularizers off (ablation): {', '.join(REGULARIZERS)}")
    e.add_argument("--raw", action="store_true", help="G's raw x2 kernel, without post-processing (--scale 2)")
    e.add_argument("--checkpoint", default=None, help="training state file; resumed from when it exists")
    e.add_argument("--device", default=None, help="cpu, cuda, ... (default: best available)")
    e.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    e.add_argument("--no-progress", action="store_true", help="no progress bar (log files)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 with a message for bad arguments or files)."""
    parser = _parser()
    args = parser.parse_args(argv)
    out = Path(args.out)
    if out.suffix not in SUFFIXES:
        parser.error(f"--out must end in {' or '.join(SUFFIXES)}, got {out.name!r}")
    if args.raw and args.scale != 2:
        parser.error("--raw exists only at --scale 2")
    if args.threads is not None:
        config.set_threads(args.threads)
    overrides = {k: v for k, v in (("crop_size", args.crop_size), ("g_channels", args.g_channels)) if v is not None}
    try:
        gan_config = KernelGANConfig(**overrides).without(*args.without)
        image = load_image(args.image, channels=None)
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    device = torch.device(args.device) if args.device else config.get_device()
    print(f"KernelGAN x{args.scale} on {args.image} {tuple(image.shape)} | {args.iterations} iterations | "
          f"device {device} | seed {args.seed}", flush=True)
    start = time.perf_counter()
    try:
        kernel, history = estimate_kernel(image, args.scale, args.iterations, device=device, seed=args.seed,
                                          progress=not args.no_progress, config=gan_config,
                                          checkpoint=args.checkpoint, postprocess=not args.raw)
    except (ValueError, TypeError) as err:
        parser.error(str(err))
    save_kernel(kernel, out)
    print(f"{_describe(kernel)} -> {out} ({time.perf_counter() - start:.1f} s)")
    return 0


def _describe(kernel: torch.Tensor) -> str:
    """Size, sum, centre of mass and principal standard deviations of a kernel, in one line."""
    text = f"kernel {tuple(kernel.shape)}, sum {float(kernel.sum()):.4f}"
    try:
        centre = kernel_centre_of_mass(kernel).tolist()
        spread = torch.linalg.eigvalsh(kernel_covariance(kernel)).clamp_min(0).sqrt().tolist()
    except ValueError:  # a raw kernel without mass has no centre
        return text
    return (f"{text}, centre of mass ({centre[0]:.2f}, {centre[1]:.2f}), "
            f"principal std {spread[0]:.2f} / {spread[1]:.2f} px")


if __name__ == "__main__":
    sys.exit(main())
