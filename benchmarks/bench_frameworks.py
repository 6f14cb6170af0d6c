"""Train the four SR frameworks of chapter 1 with one budget and print one table: parameters, time
per training step, and Y-PSNR / SSIM (shave = scale) on the held-out photos, next to bicubic.

    .venv/bin/python benchmarks/bench_frameworks.py [--profile cpu] [--steps N] [--threads T] [--device cuda]

Sizes follow the profile exactly as in ``book/ch1_fundamentals.ipynb`` (``--steps`` overrides the
number of steps). Time per step is wall-clock time including data preparation, which is the same
for all four models; it also prints process CPU seconds per step, a figure that is less sensitive
to other programs running on the same machine.
"""

from __future__ import annotations

import argparse
import os
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=("test", "cpu", "gpu"), default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    if args.profile:
        os.environ["COURSE_PROFILE"] = args.profile

    from course_lib import config, losses
    from course_lib.data import EVAL_PHOTOS, TRAIN_PHOTOS, PatchSampler, load_photo
    from course_lib.degradation import bicubic_downscale, imresize, mod_crop, quantize_8bit
    from course_lib.metrics import psnr, ssim
    from course_lib.models import FRAMEWORKS, build_framework, count_parameters
    from course_lib.training import fit

    profile = config.get_profile()
    threads = config.set_threads(args.threads)
    config.seed_everything(0)
    device = config.get_device(args.device)
    scale = 4
    options = {  # the widths of chapter 1
        "pre-upsampling": dict(features=32, mid_features=16),
        "post-upsampling": dict(features=64, mid_features=32),
        "progressive": dict(features=32, depth=2),
        "iterative": dict(features=12, stages=2),
    }
    patch = config.choose(test=32, cpu=48, gpu=96)
    batch = config.choose(test=4, cpu=16, gpu=16)
    steps = args.steps or config.choose(test=6, cpu=500, gpu=5000)
    photos = config.choose(test=TRAIN_PHOTOS[:2], cpu=TRAIN_PHOTOS, gpu=TRAIN_PHOTOS)
    crop = config.choose(test=64, cpu=None, gpu=None)
    print(f"profile {profile} | device {device} | threads {threads} | {steps} steps of {batch} patches "
          f"{patch}x{patch}, scale x{scale}")

    sampler = PatchSampler(list(photos), patch, batch, seed=0, scale=scale)

    def pairs(step):
        hr = sampler(step)
        return bicubic_downscale(hr, scale, quantize=True), hr

    def centre(img):
        if crop is None:
            return img
        top, left = (img.shape[-2] - crop) // 2, (img.shape[-1] - crop) // 2
        return img[..., top:top + crop, left:left + crop]

    hrs = [centre(mod_crop(load_photo(name), scale)) for name in EVAL_PHOTOS]
    lrs = [bicubic_downscale(hr, scale, quantize=True) for hr in hrs]

    def score(upscale):
        p, s = [], []
        with torch.no_grad():
            for lr, hr in zip(lrs, hrs):
                sr = quantize_8bit(upscale(lr[None].to(device))[0].cpu())
                p.append(psnr(sr, hr, shave=scale))
                s.append(ssim(sr, hr, shave=scale))
        return sum(p) / len(p), sum(s) / len(s)

    # warm-up: one-time library initialisation should not count against the first model
    fit(build_framework("post-upsampling", scale), lambda m, pair: losses.l1_loss(m(pair[0]), pair[1]), pairs, 1,
        device=device, progress=False)
    rows = [("bicubic", 0, float("nan"), float("nan"), *score(lambda x: imresize(x, float(scale))))]
    for name in FRAMEWORKS:
        model = build_framework(name, scale, **options[name])
        cpu_start = time.process_time()
        history = fit(model, lambda m, pair: losses.l1_loss(m(pair[0]), pair[1]), pairs, steps, lr=1e-3,
                      device=device, seed=0, progress=False)
        cpu_seconds = time.process_time() - cpu_start
        model.eval()
        rows.append((name, count_parameters(model), 1000 * history.seconds / steps, 1000 * cpu_seconds / steps,
                     *score(model)))
    print(f"{'framework':16s} {'params':>8s} {'ms/step':>8s} {'cpu ms/step':>11s} {'PSNR(Y)':>8s} {'SSIM':>7s}")
    for name, params, wall, cpu, p, s in rows:
        print(f"{name:16s} {params:8,d} {wall:8.1f} {cpu:11.1f} {p:8.2f} {s:7.4f}")


if __name__ == "__main__":
    main()
