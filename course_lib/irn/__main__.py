"""Command line of IRN (the shipped checkpoints were made with it)::

    python -m course_lib.irn train --scale 4 --profile gpu --out runs/irn_x4.pt [--steps N]
    python -m course_lib.irn train --scale 4 --variant plus --init runs/irn_x4.pt --out runs/irn+_x4.pt
    python -m course_lib.irn evaluate --checkpoint runs/irn_x4.pt      # or --scale 4: shipped model

The paper's data: ``--data div2k`` trains on the 800 DIV2K training images (downloaded once, 3.5
GB; batches built ahead by ``--workers`` DataLoader processes), ``--eval set5`` (``set14``,
``b100``, ``urban100``) evaluates on a test set; both also take a folder of images. The default,
``photos``, is the packaged photos, offline. ``--max-seconds`` stops a session at a wall-clock
limit (run again to continue); ``--amp`` / ``--no-amp`` (default: on for CUDA)::

    python -m course_lib.irn train --scale 4 --profile gpu --data div2k --out runs/irn_x4.pt --max-seconds 3600
    python -m course_lib.irn evaluate --checkpoint runs/irn_x4.pt --eval set5

An existing ``--out`` is resumed (training is exact on resume); ``--weights`` also writes a
weights-only copy at the end (what ships in ``course_lib/checkpoints``). The flags shared with
``python -m course_lib.hcflow`` and the ``evaluate`` command come from
:func:`course_lib.rescaling.command_parser` and :func:`course_lib.rescaling.run_command`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import asdict

import torch

from course_lib import config, rescaling, training

from .model import check_scale
from .train import load_irn, train, train_config, train_plus

__all__ = ["main", "parser"]


def parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m course_lib.irn``."""
    p, t, _ = rescaling.command_parser(
        "python -m course_lib.irn", "Invertible Image Rescaling (Xiao et al. 2020): train or evaluate",
        shipped=("--scale", {"type": int, "help": "evaluate the shipped checkpoint of this scale"}))
    t.add_argument("--scale", type=int, required=True, help="2, 4, 8, ...")
    t.add_argument("--resume", action="store_true",
                   help="accepted for older commands: an existing --out is always resumed")
    t.add_argument("--blocks", type=int, default=None, help="couplings per x2 stage (paper: 8)")
    t.add_argument("--growth", type=int, default=None, help="dense-block width (paper: 32)")
    t.add_argument("--patch", type=int, default=None, help="HR patch size (paper: 144)")
    t.add_argument("--batch", type=int, default=None, help="batch size (paper: 16)")
    t.add_argument("--lr", type=float, default=None, help="Adam learning rate (paper: 2e-4)")
    t.add_argument("--variant", choices=("irn", "plus"), default="irn",
                   help="irn: the three losses; plus: IRN+ adversarial fine-tuning of --init")
    t.add_argument("--d-init-steps", type=int, default=0,
                   help="IRN+: steps that train only the discriminator first (official: 5000)")
    return p


def _train(args: argparse.Namespace):
    scale = check_scale(args.scale)
    cfg = train_config(args.profile, scale=scale, steps=args.steps, blocks=args.blocks, growth=args.growth,
                       patch=args.patch, batch=args.batch, lr=args.lr)
    device = torch.device(args.device) if args.device else config.get_device()
    if training.is_main_process():  # one header under torchrun
        print(f"IRN x{scale} | profile {args.profile or config.get_profile()} | device {device} | "
              f"threads {torch.get_num_threads()} | {cfg}", flush=True)
    init = None
    if args.init:
        init = load_irn(args.init, scale=scale)
        cfg = train_config(args.profile, **{**asdict(cfg), "blocks": init.blocks[0], "growth": init.growth})
        if training.is_main_process():
            print(f"initialised from {args.init} ({init.extra_repr()})", flush=True)
    if args.variant == "plus":
        if init is None:
            raise SystemExit("IRN+ fine-tunes a trained IRN: pass --init <IRN checkpoint> "
                             "(also when resuming, for the architecture)")
        return train_plus(init, cfg, checkpoint=args.out, seed=args.seed, device=device,
                          d_init_steps=args.d_init_steps, features=args.features, progress=not args.no_progress,
                          data=args.data, max_seconds=args.max_seconds, download=True)
    return train(scale, cfg, checkpoint=args.out, seed=args.seed, device=device, amp=args.amp,
                 eval_every=args.eval_every, model=init, progress=not args.no_progress, data=args.data,
                 workers=args.workers, max_seconds=args.max_seconds, download=True)  # --data names what to fetch


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m course_lib.irn`` (module docstring); returns the exit status."""
    args = parser().parse_args(argv)
    return rescaling.run_command(
        args, train=_train, load=lambda a: load_irn(a.scale if a.scale is not None else a.checkpoint))


if __name__ == "__main__":
    sys.exit(main())
