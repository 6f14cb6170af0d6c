"""Command line of HCFlow (the shipped checkpoints were made with it)::

    python -m course_lib.hcflow train --mode sr --scale 4 --profile gpu --out runs/hcflow_sr_x4.pt [--steps N]
    python -m course_lib.hcflow train --mode rescale --scale 4 --profile gpu --out runs/hcflow_rescale_x4.pt
    python -m course_lib.hcflow evaluate --mode sr                   # the shipped checkpoint
    python -m course_lib.hcflow evaluate --checkpoint runs/hcflow_sr_x4.pt --draws 3

The paper's data: ``--data div2k`` trains on the 800 DIV2K training images (downloaded once, 3.5
GB; batches built ahead by ``--workers`` DataLoader processes), ``--eval set5`` (``set14``,
``b100``, ``urban100``) evaluates on a test set; both also take a folder of images. The default,
``photos``, is the packaged photos, offline. ``--max-seconds`` stops a session at a wall-clock
limit (run again to continue); ``--amp`` / ``--no-amp`` (default: on for CUDA). The paper's batch
of 16 160-px patches needs about 20 GB in float32 and about 15 GB with mixed precision: on a 16 GB
GPU (Colab's T4) take ``--batch 8`` (``benchmarks/gpu_budget.py`` prints the estimates)::

    python -m course_lib.hcflow train --mode sr --profile gpu --batch 8 --data div2k --out runs/sr.pt --max-seconds 3600
    python -m course_lib.hcflow evaluate --checkpoint runs/sr.pt --eval set5

An existing ``--out`` is resumed (training is exact on resume); ``--weights`` also writes a
weights-only copy at the end (what ships in ``course_lib/checkpoints``). The flags shared with
``python -m course_lib.irn`` and the ``evaluate`` command come from
:func:`course_lib.rescaling.command_parser` and :func:`course_lib.rescaling.run_command`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from course_lib import config, rescaling, training

from .losses import dequantized_nll_bits_per_dim
from .model import check_scale
from .train import load_hcflow, train, train_config

__all__ = ["main", "parser"]

SIZE_FLAGS = (
    ("flow-steps", int, "unconditional flow steps per level (paper: 13 SR, 8 rescaling)"),
    ("cond-steps", int, "conditional flow steps per level (paper: 13 SR, 6 rescaling)"),
    ("hidden", int, "main coupling subnet width (paper: 64 SR, 32 rescaling)"),
    ("cond-hidden", int, "conditional coupling subnet width (paper: 64)"),
    ("rrdb0", int, "RRDBs in trunk 0 of each feature extractor (paper: 7 SR, 2 rescaling)"),
    ("rrdb1", int, "RRDBs in trunk 1 (paper: 7 SR, 1 rescaling)"),
    ("nf", int, "feature width (paper: 64)"),
    ("gc", int, "RRDB growth channels (paper: 32 SR, 16 rescaling)"),
    ("patch", int, "HR patch size (paper: 160)"),
    ("batch", int, "batch size (paper: 16)"),
    ("lr", float, "Adam learning rate (paper: 2.5e-4)"),
)


def parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m course_lib.hcflow``."""
    p, t, e = rescaling.command_parser(
        "python -m course_lib.hcflow", "HCFlow (Liang et al. 2021): train or evaluate",
        shipped=("--mode", {"choices": ("sr", "rescale"), "help": "evaluate the shipped x4 checkpoint"}))
    t.add_argument("--mode", choices=("sr", "rescale"), required=True)
    t.add_argument("--scale", type=int, default=4, help="2, 4, 8, ... (default 4)")
    for name, kind, text in SIZE_FLAGS:
        t.add_argument(f"--{name}", type=kind, default=None, help=text)
    t.add_argument("--variant", choices=("hcflow", "plus", "plusplus"), default=None,
                   help="SR loss: NLL (hcflow), 2e-3 NLL + L1 (plus), + perceptual + GAN (plusplus); "
                        "fine-tune plus/plusplus from an NLL model with --init")
    t.add_argument("--flat", action="store_true", help="non-hierarchical conditioning (ablation)")
    e.add_argument("--nll", action="store_true", help="also report the NLL in bits/dim (SR)")
    return p


def _train(args: argparse.Namespace):
    scale = check_scale(args.scale)
    profile = args.profile or config.get_profile()
    cfg = train_config(args.mode, profile, steps=args.steps, flow_steps=args.flow_steps,
                       cond_steps=args.cond_steps, hidden=args.hidden, cond_hidden=args.cond_hidden,
                       rrdb0=args.rrdb0, rrdb1=args.rrdb1, nf=args.nf, gc=args.gc, patch=args.patch,
                       batch=args.batch, lr=args.lr, variant=args.variant,
                       hierarchical=False if args.flat else None)
    device = torch.device(args.device) if args.device else config.get_device()
    model = None
    if args.init and not Path(args.out).exists():
        model = load_hcflow(args.init, mode=args.mode, scale=scale).train()
    if training.is_main_process():  # one header under torchrun
        print(f"HCFlow {args.mode} x{scale} | profile {profile} | device {device} | "
              f"threads {torch.get_num_threads()} | {cfg}", flush=True)
    return train(args.mode, scale, cfg, checkpoint=args.out, seed=args.seed, device=device,
                 eval_every=args.eval_every, progress=not args.no_progress, model=model, features=args.features,
                 data=args.data, workers=args.workers, amp=args.amp, max_seconds=args.max_seconds,
                 download=True)  # --data names what to fetch


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m course_lib.hcflow`` (module docstring); returns the exit status."""
    args = parser().parse_args(argv)
    return rescaling.run_command(
        args, train=_train, load=lambda a: load_hcflow(a.mode if a.mode else a.checkpoint),
        nll=dequantized_nll_bits_per_dim)


if __name__ == "__main__":
    sys.exit(main())
