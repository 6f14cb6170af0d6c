"""Blind SR on DIV2KRK-style images: kernel error and SR PSNR/SSIM for three kernels (bicubic
assumption, KernelGAN estimate, true kernel), and KernelGAN's run time.

    .venv/bin/python benchmarks/bench_kernelgan.py [--photos eval|train] [--kernels-per-image 2]
        [--iterations 3000] [--hr-size 0] [--mu 2e-3 5e-3 1e-2] [--no-zssr] [--zssr-steps 1000]
        [--threads N] [--device cpu|cuda] [--save-kernels FILE]

Every photo (``EVAL_PHOTOS`` by default, never used for training anywhere in the course) is taken
whole (``--hr-size 0``, as the paper's DIV2KRK uses whole images) or centre-cropped, blurred with
``--kernels-per-image`` random DIV2KRK kernels (``random_div2krk_kernel``, seed ``100 + i + 10 j``
for photo ``i``, kernel ``j``), subsampled by 2 and rounded to 8 bits. KernelGAN (official settings)
estimates each kernel from the LR image alone; the closed-form Wiener reconstruction (one line per
regulariser weight ``--mu``) and ZSSR (``course_lib.zssr``) then super-resolve the LR image with each
of the three kernels. PSNR/SSIM on Y with a 2-pixel shave.

KernelGAN and ZSSR learn from the test image only, so no photo is ever a training image for them;
``--photos train`` runs the same protocol on ``TRAIN_PHOTOS`` as a validation set, to choose the
Wiener weight ``mu`` without looking at the held-out photos. The chapter's goal: the KernelGAN
kernel gains at least +1 dB over the bicubic assumption on average (the paper's DIV2KRK table:
ZSSR 29.10 dB with the bicubic kernel, 30.36 dB with KernelGAN's, x2).
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from course_lib import config
from course_lib import kernelgan as kg
from course_lib import zssr as Z
from course_lib.data import EVAL_PHOTOS, TRAIN_PHOTOS, load_photo
from course_lib.degradation import bicubic_kernel, degrade, mod_crop, quantize_8bit, random_div2krk_kernel
from course_lib.metrics import psnr, ssim

KERNELS = ("bicubic", "KernelGAN", "true")


def centre_crop(img: torch.Tensor, size: int) -> torch.Tensor:
    """A centred ``size x size`` crop (``size = 0``: the whole image), sides multiples of 4."""
    if size <= 0:
        return mod_crop(img, 4)
    h, w = img.shape[-2:]
    size = min(size, h, w) // 4 * 4
    top, left = (h - size) // 2, (w - size) // 2
    return img[:, top:top + size, left:left + size]


def mean_and_error(values: list[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (0 for one value)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", choices=("eval", "train"), default="eval")
    parser.add_argument("--images", type=int, default=None, help="only the first N photos")
    parser.add_argument("--kernels-per-image", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=kg.PAPER_ITERATIONS)
    parser.add_argument("--hr-size", type=int, default=0, help="centre crop size; 0 = whole photos")
    parser.add_argument("--g-channels", type=int, default=64)
    parser.add_argument("--mu", type=float, nargs="+", default=[2e-3, 5e-3, 1e-2],
                        help="Wiener regulariser weights (the first is the library default)")
    parser.add_argument("--zssr-steps", type=int, default=1000)
    parser.add_argument("--zssr-channels", type=int, default=64)
    parser.add_argument("--zssr-layers", type=int, default=8)
    parser.add_argument("--no-zssr", action="store_true", help="only the closed-form Wiener SR")
    parser.add_argument("--save-kernels", default=None, help="save LR images and kernels to this file")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()

    threads = config.set_threads(args.threads)
    device = torch.device(args.device) if args.device else config.get_device()
    gan_config = kg.KernelGANConfig(g_channels=args.g_channels)
    zssr_config = Z.ZSSRConfig(steps=args.zssr_steps, channels=args.zssr_channels, layers=args.zssr_layers)
    photos = (EVAL_PHOTOS if args.photos == "eval" else TRAIN_PHOTOS)[: args.images]
    print(f"device {device}, {threads} thread(s); {args.photos} photos {photos}, {args.kernels_per_image} "
          f"kernel(s) each; KernelGAN {args.iterations} iterations, G channels {args.g_channels}; HR "
          f"{'whole photos' if args.hr_size <= 0 else f'crops {args.hr_size}px'}; Wiener mu {args.mu}; "
          + ("no ZSSR" if args.no_zssr else f"ZSSR {args.zssr_steps} steps x {args.zssr_layers} layers x {args.zssr_channels}"))

    totals: dict[str, list[float]] = {}
    saved = []
    for i, name in enumerate(photos):
        hr = centre_crop(load_photo(name), args.hr_size)
        for j in range(args.kernels_per_image):
            true_kernel = random_div2krk_kernel(2, 21, generator=torch.Generator().manual_seed(100 + i + 10 * j))
            lr = quantize_8bit(degrade(hr, 2, kernel=true_kernel, boundary="symmetric"))
            start, cpu_start = time.perf_counter(), time.process_time()
            estimate, _ = kg.estimate_kernel(lr, 2, args.iterations, config=gan_config, device=device,
                                             seed=i + 10 * j, progress=False)
            seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
            saved.append({"name": name, "kernel_index": j, "lr": lr, "true": true_kernel, "estimate": estimate})
            candidates = dict(zip(KERNELS, (bicubic_kernel(2), estimate, true_kernel)))
            row = {"seconds": seconds, "cpu seconds": cpu_seconds}
            for label, kernel in candidates.items():
                row[f"kernel error {label}"] = kg.kernel_error(kernel, true_kernel) if label != "true" else 0.0
                for mu in args.mu:
                    row[f"Wiener mu={mu:g} PSNR {label}"] = psnr(Z.wiener_sr(lr, kernel, 2, mu=mu), hr, shave=2)
                if not args.no_zssr:
                    sr, _ = Z.zssr(lr, kernel, 2, config=zssr_config, device=device, seed=i, progress=False)
                    row[f"ZSSR PSNR {label}"] = psnr(sr, hr, shave=2)
                    row[f"ZSSR SSIM {label}"] = ssim(sr, hr, shave=2)
            print(f"\n{name}, kernel {j} (LR {tuple(lr.shape[-2:])}, KernelGAN {seconds:.1f} s wall, "
                  f"{cpu_seconds:.1f} s CPU)")
            for key, value in row.items():
                if "seconds" not in key:
                    print(f"  {key:34s} {value:.4f}")
                totals.setdefault(key, []).append(float(value))
            if args.save_kernels:
                torch.save(saved, args.save_kernels)

    n = len(totals["seconds"])
    print(f"\nmean over {n} image(s)")
    for key, values in totals.items():
        print(f"  {key:34s} {sum(values) / n:.4f}")
    methods = [f"Wiener mu={mu:g}" for mu in args.mu] + ([] if args.no_zssr else ["ZSSR"])
    for method in methods:
        gains = [e - b for e, b in zip(totals[f"{method} PSNR KernelGAN"], totals[f"{method} PSNR bicubic"])]
        headroom = [t - b for t, b in zip(totals[f"{method} PSNR true"], totals[f"{method} PSNR bicubic"])]
        (g, g_err), (h, _) = mean_and_error(gains), mean_and_error(headroom)
        print(f"{method}: KernelGAN kernel {g:+.2f} +- {g_err:.2f} dB over the bicubic assumption "
              f"(better on {sum(x > 0 for x in gains)}/{n}; true kernel: {h:+.2f} dB)")


if __name__ == "__main__":
    main()
