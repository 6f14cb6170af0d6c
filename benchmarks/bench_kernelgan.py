"""Blind SR on DIV2KRK-style images made from the held-out photos: kernel error and SR PSNR/SSIM for
three kernels (bicubic assumption, KernelGAN estimate, true kernel), and KernelGAN's run time.

    .venv/bin/python benchmarks/bench_kernelgan.py [--images 4] [--iterations 3000] [--hr-size 512]
        [--zssr-steps 1000] [--zssr-channels 64] [--threads N] [--device cpu|cuda]

Every photo of ``EVAL_PHOTOS`` (never used for training in the course) is centre-cropped to
``--hr-size``, blurred with its own random DIV2KRK kernel (``random_div2krk_kernel``, seed 100 + i),
subsampled by 2 and rounded to 8 bits. KernelGAN (official settings unless changed) estimates the
kernel; ZSSR (``course_lib.zssr``) and the closed-form Wiener reconstruction then super-resolve the
LR image with each kernel. PSNR/SSIM on Y with a 2-pixel shave. The goal stated for the chapter: the
KernelGAN kernel gains at least +1 dB over the bicubic assumption on average.
"""

from __future__ import annotations

import argparse
import time

import torch

from course_lib import config
from course_lib import kernelgan as kg
from course_lib import zssr as Z
from course_lib.data import EVAL_PHOTOS, load_photo
from course_lib.degradation import bicubic_kernel, degrade, quantize_8bit, random_div2krk_kernel
from course_lib.metrics import psnr, ssim


def centre_crop(img: torch.Tensor, size: int) -> torch.Tensor:
    h, w = img.shape[-2:]
    size = min(size, h, w) // 4 * 4
    top, left = (h - size) // 2, (w - size) // 2
    return img[:, top:top + size, left:left + size]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=len(EVAL_PHOTOS))
    parser.add_argument("--iterations", type=int, default=kg.PAPER_ITERATIONS)
    parser.add_argument("--hr-size", type=int, default=512)
    parser.add_argument("--g-channels", type=int, default=64)
    parser.add_argument("--zssr-steps", type=int, default=1000)
    parser.add_argument("--zssr-channels", type=int, default=64)
    parser.add_argument("--zssr-layers", type=int, default=8)
    parser.add_argument("--no-zssr", action="store_true", help="only the closed-form Wiener SR")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()

    threads = config.set_threads(args.threads)
    device = torch.device(args.device) if args.device else config.get_device()
    gan_config = kg.KernelGANConfig(g_channels=args.g_channels)
    zssr_config = Z.ZSSRConfig(steps=args.zssr_steps, channels=args.zssr_channels, layers=args.zssr_layers)
    print(f"device {device}, {threads} thread(s); KernelGAN {args.iterations} iterations, G channels "
          f"{args.g_channels}; HR crops {args.hr_size}px; "
          + ("no ZSSR" if args.no_zssr else f"ZSSR {args.zssr_steps} steps x {args.zssr_layers} layers x {args.zssr_channels}"))

    kernels = ("bicubic", "KernelGAN", "true")
    totals: dict[str, list[float]] = {}
    for i, name in enumerate(EVAL_PHOTOS[: args.images]):
        hr = centre_crop(load_photo(name), args.hr_size)
        true_kernel = random_div2krk_kernel(2, 21, generator=torch.Generator().manual_seed(100 + i))
        lr = quantize_8bit(degrade(hr, 2, kernel=true_kernel, boundary="symmetric"))
        start, cpu_start = time.perf_counter(), time.process_time()
        estimate, _ = kg.estimate_kernel(lr, 2, args.iterations, config=gan_config, device=device, seed=i,
                                         progress=False)
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        candidates = dict(zip(kernels, (bicubic_kernel(2), estimate, true_kernel)))
        row = {"seconds": seconds, "cpu seconds": cpu_seconds}
        for label, kernel in candidates.items():
            row[f"kernel error {label}"] = kg.kernel_error(kernel, true_kernel) if label != "true" else 0.0
            sr = Z.wiener_sr(lr, kernel, 2)
            row[f"Wiener PSNR {label}"] = psnr(sr, hr, shave=2)
            if not args.no_zssr:
                sr, _ = Z.zssr(lr, kernel, 2, config=zssr_config, device=device, seed=i, progress=False)
                row[f"ZSSR PSNR {label}"] = psnr(sr, hr, shave=2)
                row[f"ZSSR SSIM {label}"] = ssim(sr, hr, shave=2)
        print(f"\n{name} (LR {tuple(lr.shape[-2:])}, KernelGAN {seconds:.1f} s wall, {cpu_seconds:.1f} s CPU)")
        for key, value in row.items():
            if "seconds" not in key:
                print(f"  {key:28s} {value:.4f}")
            totals.setdefault(key, []).append(value)

    print("\nmean over", len(totals["seconds"]), "image(s)")
    for key, values in totals.items():
        print(f"  {key:28s} {sum(values) / len(values):.4f}")
    for method in ("Wiener", "ZSSR"):
        if f"{method} PSNR KernelGAN" in totals:
            mean = {k: sum(totals[f"{method} PSNR {k}"]) / len(totals["seconds"]) for k in kernels}
            print(f"{method}: KernelGAN kernel {mean['KernelGAN'] - mean['bicubic']:+.2f} dB over the bicubic "
                  f"assumption (true kernel: {mean['true'] - mean['bicubic']:+.2f} dB)")


if __name__ == "__main__":
    main()
