"""Command line of HCFlow (the shipped checkpoints were made with it)::

    python -m course_lib.hcflow train --mode sr --scale 4 --profile gpu --out runs/hcflow_sr_x4.pt [--steps N]
    python -m course_lib.hcflow train --mode rescale --scale 4 --profile gpu --out runs/hcflow_rescale_x4.pt
    python -m course_lib.hcflow evaluate --mode sr                   # the shipped checkpoint
    python -m course_lib.hcflow evaluate --checkpoint runs/hcflow_sr_x4.pt --draws 3

An existing ``--out`` is resumed (training is exact on resume); ``--weights`` also writes a
weights-only copy at the end (what ships in ``course_lib/checkpoints``).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from course_lib import config, rescaling

from .model import check_scale
from .train import count_parameters, format_results, load_hcflow, train, train_config


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m course_lib.hcflow",
                                description="HCFlow (Liang et al. 2021): train or evaluate")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train an HCFlow (checkpoints, resume, progress bar, seeded)")
    t.add_argument("--mode", choices=("sr", "rescale"), required=True)
    t.add_argument("--scale", type=int, default=4, help="2, 4, 8, ... (default 4)")
    t.add_argument("--profile", choices=("test", "cpu", "gpu"), default=None,
                   help="sizes of the run (default: $COURSE_PROFILE or the hardware); gpu = the paper's model")
    t.add_argument("--out", required=True, help="checkpoint file; resumed from when it exists")
    t.add_argument("--steps", type=int, default=None, help="total training steps (overrides the profile)")
    for name, kind, text in (
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
    ):
        t.add_argument(f"--{name}", type=kind, default=None, help=text)
    t.add_argument("--variant", choices=("hcflow", "plus", "plusplus"), default=None,
                   help="SR loss: NLL (hcflow), 2e-3 NLL + L1 (plus), + perceptual + GAN (plusplus); "
                        "fine-tune plus/plusplus from an NLL model with --init")
    t.add_argument("--features", default=None,
                   help="VGG-19 weights file for HCFlow++'s perceptual loss (default: the Gabor stand-in)")
    t.add_argument("--flat", action="store_true", help="non-hierarchical conditioning (ablation)")
    t.add_argument("--init", default=None, help="start from the weights of this checkpoint (fine-tuning)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default=None, help="cpu, cuda, ... (default: best available)")
    t.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    t.add_argument("--eval-every", type=int, default=0, help="held-out figures on crops every N steps")
    t.add_argument("--no-progress", action="store_true", help="no progress bar (log files)")
    t.add_argument("--weights", default=None, help="also write a weights-only copy here at the end")
    e = sub.add_parser("evaluate", help="held-out Y-PSNR/SSIM, LR-PSNR (and NLL) of a checkpoint")
    src = e.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="checkpoint file")
    src.add_argument("--mode", choices=("sr", "rescale"), help="evaluate the shipped x4 checkpoint")
    e.add_argument("--crop", type=int, default=None, help="centre crop size (default: whole photos)")
    e.add_argument("--draws", type=int, default=1, help="samples per image")
    e.add_argument("--temperature", type=float, default=None, help="default 0.9 (SR) / 1.0 (rescaling)")
    e.add_argument("--nll", action="store_true", help="also report the NLL in bits/dim (SR)")
    e.add_argument("--threads", type=int, default=None)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from .train import evaluate

    args = _parser().parse_args(argv)
    if args.threads is not None:
        config.set_threads(args.threads)
    if args.command == "train":
        scale = check_scale(args.scale)
        profile = args.profile or config.get_profile()
        cfg = train_config(args.mode, profile, steps=args.steps, flow_steps=args.flow_steps,
                           cond_steps=args.cond_steps, hidden=args.hidden, cond_hidden=args.cond_hidden,
                           rrdb0=args.rrdb0, rrdb1=args.rrdb1, nf=args.nf, gc=args.gc, patch=args.patch,
                           batch=args.batch, lr=args.lr, variant=args.variant,
                           hierarchical=False if args.flat else None)
        device = torch.device(args.device) if args.device else config.get_device()
        out = Path(args.out)
        model = None
        if args.init and not out.exists():
            model = load_hcflow(args.init, mode=args.mode, scale=scale).train()
        print(f"HCFlow {args.mode} x{scale} | profile {profile} | device {device} | "
              f"threads {torch.get_num_threads()} | {cfg}", flush=True)
        start = time.perf_counter()
        model, history = train(args.mode, scale, cfg, checkpoint=out, seed=args.seed, device=device,
                               eval_every=args.eval_every, progress=not args.no_progress, model=model,
                               features=args.features)
        rescaling.report_training(model, history, time.perf_counter() - start, out, args.weights,
                                  last_logs=True)
        return 0
    model = load_hcflow(args.mode if args.mode else args.checkpoint)
    results = evaluate(model, crop=args.crop, draws=args.draws, temperature=args.temperature, nll=args.nll)
    print(f"{model.tag} ({count_parameters(model)} parameters), held-out photos, Y channel, shave "
          f"{model.scale}, temperature {results['temperature']}, {args.draws} draw(s)")
    print(format_results(results))
    if "nll_bpd" in results:
        print(f"NLL: {results['nll_bpd']:.3f} bits/dim")
    return 0


if __name__ == "__main__":
    sys.exit(main())
