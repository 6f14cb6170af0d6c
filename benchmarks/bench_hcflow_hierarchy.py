"""HCFlow's hierarchy ablation (chapter 6): what conditioning the bands coarse to fine buys.

Both variants are the shipped SR model, frozen, except the conditional density of the finest band
a_1, trained afresh: conditioned on the coarser level (hierarchical) or on the LR image only (flat)
(``course_lib.hcflow.ablation``). They are trained identically for every seed and compared on the
held-out photos by the bits of the HR image given its LR image (``"hr given lr"`` of
``hcflow.nll_parts_bits_per_dim``), with the paired difference over seeds.

    python benchmarks/bench_hcflow_hierarchy.py --steps 1500 --seeds 0 1 2 --runs runs/hierarchy \
        --out course_lib/checkpoints/hcflow_hierarchy_ablation.pt

Each run keeps a resumable checkpoint in ``--runs``: run the command again after an interruption.
``--evaluate-only`` reads ``--out`` and prints the table.
"""

from __future__ import annotations

import argparse
import time

import torch

from course_lib import hcflow
from course_lib.hcflow import ablation


def report(models: dict, crop: int | None) -> None:
    seeds = sorted({seed for _, seed in models})
    for set_name, images in ablation.test_sets(crop).items():
        bits, effects = ablation.compare(models, images, ("level 1", "hr given lr"))
        print(f"{set_name} ({len(images)} images, photo crop {crop or 'none'}), bits per HR dimension")
        print(f"{'variant':<16}{'seed':>5}{'a_1':>9}{'a_2':>9}{'HR given LR':>13}")
        for (name, seed), b in sorted(bits.items()):
            print(f"{name:<16}{seed:>5}{b['level 1']:>9.3f}{b['level 2']:>9.3f}{b['hr given lr']:>13.3f}")
        for part, (mean, se) in effects.items():
            print(f"hierarchical - flat, {part:<12}: {mean:+.3f} +- {se:.3f} bits/dim "
                  f"(mean +- s.e. over {len(seeds)} seeds)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--patch", type=int, default=32)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--runs", default="runs/hierarchy")
    p.add_argument("--out", default=str(ablation.SHIPPED))
    p.add_argument("--crop", type=int, default=256, help="centre crop of the held-out photos (0: whole)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--evaluate-only", action="store_true")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.evaluate_only:
        models, cfg = ablation.load_variants(args.out)
        print(f"trained with {cfg}")
    else:
        base = hcflow.load_hcflow("sr")
        cfg = hcflow.train_config("sr", "cpu", steps=args.steps, patch=args.patch, batch=args.batch, lr=args.lr)
        start = time.time()
        models = ablation.train_variants(base, cfg, tuple(args.seeds), runs=args.runs)
        ablation.save_variants(args.out, models, hcflow.pretrained_path("sr").name, cfg)
        print(f"trained {len(models)} runs in {time.time() - start:.0f} s; wrote {args.out}")
    report(models, args.crop or None)


if __name__ == "__main__":
    main()
