"""Blind SR on DIV2KRK-style images: kernel error and SR PSNR/SSIM for three kernels (bicubic
assumption, KernelGAN estimate, true kernel), and KernelGAN's run time.

    .venv/bin/python benchmarks/bench_kernelgan.py [--photos eval|train] [--kernels-per-image 2]
        [--iterations 3000] [--hr-size 0] [--mu 2e-3 5e-3 1e-2] [--no-zssr] [--zssr-steps 1000]
        [--zssr-crop 64] [--zssr-kernels bicubic KernelGAN true] [--shard K/N] [--threads N] [--device cpu|cuda]
        [--save-kernels FILE] [--load-kernels FILE] [--results FILE] [--without sparsity ...]
    .venv/bin/python benchmarks/bench_kernelgan.py --summarise FILE [FILE ...]

Every photo (``EVAL_PHOTOS`` by default, never used for training anywhere in the course) is taken
whole (``--hr-size 0``, as the paper's DIV2KRK uses whole images) or centre-cropped, blurred with
``--kernels-per-image`` random DIV2KRK kernels (``random_div2krk_kernel``, seed ``100 + i + 10 j``
for photo ``i``, kernel ``j``), subsampled by 2 and rounded to 8 bits. KernelGAN (official settings,
seed ``i + 10 j``) estimates each kernel from the LR image alone; the closed-form Wiener
reconstruction (one line per regulariser weight ``--mu``) and ZSSR (``course_lib.zssr``, seed ``i``)
then super-resolve the LR image with each candidate kernel: the bicubic assumption, the prior mean
(``mean_div2krk_kernel``: the average DIV2KRK kernel, which ignores the image), the KernelGAN
estimate and the true kernel. ZSSR runs with ``--zssr-kernels`` only (by default all but the prior
mean). PSNR/SSIM on Y with a 2-pixel shave.

ZSSR takes minutes per image on a CPU, so a run can be split: ``--shard K/N`` does every N-th case
starting at case K, ``--load-kernels`` reuses the LR images and KernelGAN estimates that an earlier
``--save-kernels`` run stored (no KernelGAN again), and ``--results`` appends one JSON line per
case, which ``--summarise`` later reads back, whichever process wrote it.

Besides the kernel error, each row gives the size of the estimated and true kernels (the trace of
``kernel_covariance``, in HR pixels^2) and their elongation (the ratio of the principal standard
deviations), and the summary their correlation across cases: what the estimates get wrong.
``--without`` switches regularizers off (``KernelGANConfig.without``) for an ablation.

KernelGAN and ZSSR learn from the test image only, so no photo is ever a training image for them;
``--photos train`` runs the same protocol on ``TRAIN_PHOTOS`` as a validation set, to choose the
Wiener weight ``mu`` without looking at the held-out photos. The chapter's goal: the KernelGAN
kernel gains at least +1 dB over the bicubic assumption on average; the prior mean is the baseline
that says whether that gain needs the image at all (for scale: KernelGAN + ZSSR
reaches 30.36 dB on DIV2KRK at x2 in the paper, Bell-Kligler et al. 2019, Table 1).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import time
from collections.abc import Iterator

import torch

from course_lib import config
from course_lib import kernelgan as kg
from course_lib import zssr as Z
from course_lib.data import EVAL_PHOTOS, TRAIN_PHOTOS, load_photo
from course_lib.degradation import (bicubic_kernel, degrade, kernel_covariance, mean_div2krk_kernel, mod_crop,
                                   quantize_8bit, random_div2krk_kernel)
from course_lib.metrics import psnr, ssim

KERNELS = ("bicubic", "prior mean", "KernelGAN", "true")


@functools.cache
def prior_mean_kernel() -> torch.Tensor:
    """The mean DIV2KRK kernel at x2 (``mean_div2krk_kernel``): the best guess that ignores the image."""
    return mean_div2krk_kernel(2, 21)


def kernel_shape(kernel: torch.Tensor) -> tuple[float, float]:
    """(size, elongation) of a blur kernel: the trace of its covariance (pixels^2) and the ratio of
    its principal standard deviations (1 = round)."""
    small, large = torch.linalg.eigvalsh(kernel_covariance(kernel)).clamp_min(1e-12).tolist()
    return small + large, math.sqrt(large / small)


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


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` -> ``(K, N)`` with ``0 <= K < N``."""
    try:
        k, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard must look like K/N, got {text!r}") from None
    if not 0 <= k < n:
        raise argparse.ArgumentTypeError(f"--shard K/N needs 0 <= K < N, got {text!r}")
    return k, n


def make_cases(args: argparse.Namespace, gan_config: kg.KernelGANConfig, device: torch.device) -> Iterator[dict]:
    """The test cases, one at a time: LR image, true kernel and KernelGAN estimate, made here or loaded."""
    if args.load_kernels:
        cases = torch.load(args.load_kernels, weights_only=False)
        photos = list(EVAL_PHOTOS if args.photos == "eval" else TRAIN_PHOTOS)
        for case in cases:
            if case["name"] not in photos:
                raise ValueError(f"{args.load_kernels} holds {case['name']!r}, not one of the {args.photos} photos")
            case.setdefault("photo_index", photos.index(case["name"]))
            case.setdefault("kernelgan_seconds", float("nan"))
            case.setdefault("kernelgan_cpu_seconds", float("nan"))
        yield from (c for n, c in enumerate(cases) if n % args.shard[1] == args.shard[0])
        return
    photos = (EVAL_PHOTOS if args.photos == "eval" else TRAIN_PHOTOS)[: args.images]
    cases = []
    for i, name in enumerate(photos):
        hr = centre_crop(load_photo(name), args.hr_size)
        for j in range(args.kernels_per_image):
            if (i * args.kernels_per_image + j) % args.shard[1] != args.shard[0]:
                continue
            true_kernel = random_div2krk_kernel(2, 21, generator=torch.Generator().manual_seed(100 + i + 10 * j))
            lr = quantize_8bit(degrade(hr, 2, kernel=true_kernel, boundary="symmetric"))
            start, cpu_start = time.perf_counter(), time.process_time()
            estimate, _ = kg.estimate_kernel(lr, 2, args.iterations, config=gan_config, device=device,
                                             seed=i + 10 * j, progress=False)
            cases.append({"name": name, "photo_index": i, "kernel_index": j, "lr": lr, "true": true_kernel,
                          "estimate": estimate, "kernelgan_seconds": time.perf_counter() - start,
                          "kernelgan_cpu_seconds": time.process_time() - cpu_start})
            if args.save_kernels:
                torch.save(cases, args.save_kernels)
            yield cases[-1]


def evaluate_case(case: dict, args: argparse.Namespace, zssr_config: Z.ZSSRConfig, device: torch.device) -> dict:
    """Kernel errors and SR scores of one case, as a flat JSON-ready dict."""
    hr = centre_crop(load_photo(case["name"]), args.hr_size)
    lr = case["lr"]
    if tuple(lr.shape[-2:]) != (hr.shape[-2] // 2, hr.shape[-1] // 2):
        raise ValueError(f"{case['name']}: LR {tuple(lr.shape[-2:])} does not match HR {tuple(hr.shape[-2:])} "
                         f"at x2; was it saved with another --hr-size?")
    row = {"photo": case["name"], "kernel_index": case["kernel_index"], "lr_size": list(lr.shape[-2:]),
           "kernelgan_seconds": case["kernelgan_seconds"], "kernelgan_cpu_seconds": case["kernelgan_cpu_seconds"]}
    candidates = dict(zip(KERNELS, (bicubic_kernel(2), prior_mean_kernel(), case["estimate"], case["true"])))
    for label, kernel in candidates.items():
        row[f"kernel error {label}"] = kg.kernel_error(kernel, case["true"]) if label != "true" else 0.0
        if label != "bicubic":  # the bicubic kernel's negative lobes leave it almost no second moment
            row[f"kernel size {label}"], row[f"kernel elongation {label}"] = kernel_shape(kernel)
        for mu in args.mu:
            row[f"Wiener mu={mu:g} PSNR {label}"] = psnr(Z.wiener_sr(lr, kernel, 2, mu=mu), hr, shave=2)
        if not args.no_zssr and label in args.zssr_kernels:
            start = time.perf_counter()
            sr, _ = Z.zssr(lr, kernel, 2, config=zssr_config, device=device, seed=case["photo_index"],
                           progress=False)
            row[f"ZSSR PSNR {label}"] = psnr(sr, hr, shave=2)
            row[f"ZSSR SSIM {label}"] = ssim(sr, hr, shave=2)
            row[f"ZSSR seconds {label}"] = time.perf_counter() - start
    return {key: float(value) if isinstance(value, torch.Tensor) else value for key, value in row.items()}


def summarise(rows: list[dict]) -> None:
    """Means of every figure, and the KernelGAN gain over the bicubic kernel per SR method. Rows of the
    same case (photo, kernel index), for example ZSSR with other kernels in a later run, are merged."""
    merged: dict[tuple[str, int], dict] = {}
    for row in rows:
        merged.setdefault((row["photo"], row["kernel_index"]), {}).update(row)
    rows = [merged[key] for key in sorted(merged)]
    keys = dict.fromkeys(k for row in rows for k, v in row.items() if isinstance(v, float) and "seconds" not in k)
    print(f"\nmean over {len(rows)} case(s)")
    for key in keys:
        values = [row[key] for row in rows if key in row]
        print(f"  {key:34s} {sum(values) / len(values):.4f}   (n = {len(values)})")
    sized = [row for row in rows if "kernel size KernelGAN" in row and "kernel size true" in row]
    if len(sized) >= 3:
        for what in ("size", "elongation"):
            pairs = torch.tensor([[r[f"kernel {what} true"], r[f"kernel {what} KernelGAN"]] for r in sized])
            print(f"  correlation of the true and estimated kernel {what} over {len(sized)} cases: "
                  f"{float(torch.corrcoef(pairs.T)[0, 1]):+.2f}")
    methods = dict.fromkeys(k.split(" PSNR ")[0] for row in rows for k in row if " PSNR " in k)
    for method in methods:
        for label in ("KernelGAN", "prior mean"):
            pairs = [row for row in rows if f"{method} PSNR {label}" in row and f"{method} PSNR bicubic" in row]
            if not pairs:
                continue
            gains = [r[f"{method} PSNR {label}"] - r[f"{method} PSNR bicubic"] for r in pairs]
            g, g_err = mean_and_error(gains)
            line = (f"{method}: {label} kernel {g:+.2f} +- {g_err:.2f} dB over the bicubic assumption "
                    f"(better on {sum(x > 0 for x in gains)}/{len(gains)}")
            headroom = [r[f"{method} PSNR true"] - r[f"{method} PSNR bicubic"] for r in pairs
                        if f"{method} PSNR true" in r]
            if headroom:
                line += f"; true kernel: {mean_and_error(headroom)[0]:+.2f} dB on {len(headroom)}"
            print(line + ")")


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
    parser.add_argument("--zssr-crop", type=int, default=64, help="HR-father crop size (official: 128)")
    parser.add_argument("--zssr-kernels", nargs="+", choices=KERNELS, default=["bicubic", "KernelGAN", "true"],
                        help="the kernels ZSSR runs with (each run takes minutes on a CPU)")
    parser.add_argument("--no-zssr", action="store_true", help="only the closed-form Wiener SR")
    parser.add_argument("--shard", type=parse_shard, default=(0, 1), help="K/N: every N-th case from case K")
    parser.add_argument("--save-kernels", default=None, help="save LR images and kernels to this file")
    parser.add_argument("--load-kernels", default=None, help="reuse a --save-kernels file (skips KernelGAN)")
    parser.add_argument("--results", default=None, help="append one JSON line per case to this file")
    parser.add_argument("--summarise", nargs="+", default=None, metavar="FILE",
                        help="only print the summary of --results files")
    parser.add_argument("--without", nargs="+", choices=kg.REGULARIZERS, default=[],
                        help="switch these KernelGAN regularizers off (ablation)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()

    if args.summarise:
        rows = [json.loads(line) for path in args.summarise for line in open(path) if line.strip()]
        if not rows:
            raise SystemExit(f"no results in {args.summarise}")
        summarise(rows)
        return

    threads = config.set_threads(args.threads)
    device = torch.device(args.device) if args.device else config.get_device()
    gan_config = kg.KernelGANConfig(g_channels=args.g_channels).without(*args.without)
    zssr_config = Z.ZSSRConfig(steps=args.zssr_steps, channels=args.zssr_channels, layers=args.zssr_layers,
                               crop_size=args.zssr_crop)
    print(f"device {device}, {threads} thread(s); {args.photos} photos, {args.kernels_per_image} kernel(s) each, "
          f"shard {args.shard[0]}/{args.shard[1]}; "
          + (f"kernels from {args.load_kernels}" if args.load_kernels else
             f"KernelGAN {args.iterations} iterations, G channels {args.g_channels}"
             + (f", without {args.without}" if args.without else ""))
          + f"; HR {'whole photos' if args.hr_size <= 0 else f'crops {args.hr_size}px'}; Wiener mu {args.mu}; "
          + ("no ZSSR" if args.no_zssr else f"ZSSR {args.zssr_steps} steps x {args.zssr_layers} layers x "
             f"{args.zssr_channels}, crop {args.zssr_crop}, with {args.zssr_kernels}"), flush=True)

    rows = []
    for case in make_cases(args, gan_config, device):
        row = evaluate_case(case, args, zssr_config, device)
        rows.append(row)
        print(f"\n{row['photo']}, kernel {row['kernel_index']} (LR {tuple(row['lr_size'])}, "
              f"KernelGAN {row['kernelgan_seconds']:.1f} s wall, {row['kernelgan_cpu_seconds']:.1f} s CPU)")
        for key, value in row.items():
            if isinstance(value, float) and "seconds" not in key:
                print(f"  {key:34s} {value:.4f}")
        if args.results:
            with open(args.results, "a") as f:
                f.write(json.dumps(row) + "\n")
    summarise(rows)


if __name__ == "__main__":
    main()
