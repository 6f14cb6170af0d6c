"""Blind SR on DIV2KRK-style images: kernel error and SR PSNR/SSIM for five kernels (bicubic
assumption, prior mean, KernelGAN estimate, KernelGAN-FKP estimate, true kernel), and the
estimators' run times.

    .venv/bin/python benchmarks/bench_kernelgan.py [--photos eval|train] [--kernels-per-image 2]
        [--iterations 3000] [--hr-size 0] [--mu 2e-3 5e-3 1e-2] [--no-zssr] [--zssr-steps 1000]
        [--zssr-crop 64] [--zssr-kernels bicubic KernelGAN true] [--shard K/N] [--threads N] [--device cpu|cuda]
        [--save-kernels FILE] [--load-kernels FILE] [--results FILE] [--without sparsity ...]
        [--fkp-iterations 600] [--fkp-lr 1e-3] [--fkp-radius 10] [--fkp-critic wgan-gp] [--fkp-crops 8] [--fkp-latent 0]
        [--no-fkp] [--no-kernelgan]
    .venv/bin/python benchmarks/bench_kernelgan.py --summarise FILE [FILE ...]
    .venv/bin/python benchmarks/bench_kernelgan.py --health [--seeds 0 1 2] [--iterations 3000]

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

KernelGAN-FKP (``kernelgan.fkp``, the shipped flow ``fkp_x2.pt``; ``--fkp-iterations`` steps,
seed as KernelGAN's) is the fifth candidate. The summary gives each estimate's gain over the
prior mean with its standard error, the share of the true kernel's gain over bicubic that it
recovers (ratio of the means), and the correlations of the estimated and true size and
elongation. ``--health`` runs full KernelGAN trainings on one case (astronaut, kernel 0) for
several seeds and prints the raw kernel's sum at iterations 500/1000/2000/3000 and its error: the
check that the generator does not collapse (issue 21).

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
from course_lib.degradation import (
    bicubic_kernel,
    degrade,
    kernel_covariance,
    mean_div2krk_kernel,
    mod_crop,
    quantize_8bit,
    random_div2krk_kernel,
)
from course_lib.kernelgan.fkp import estimate_kernel_fkp, load_kernel_flow
from course_lib.metrics import psnr, ssim

KERNELS = ("bicubic", "prior mean", "KernelGAN", "KernelGAN-FKP", "true")
ESTIMATES = ("KernelGAN", "KernelGAN-FKP")


@functools.cache
def kernel_flow():
    """FKP's trained kernel flow (the shipped checkpoint), loaded once."""
    return load_kernel_flow()


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
            if "fkp_estimate" not in case and not args.no_fkp:  # kernels saved before FKP existed
                start, cpu_start = time.perf_counter(), time.process_time()
                case["fkp_estimate"], _ = estimate_kernel_fkp(
                    case["lr"], args.fkp_iterations, flow=kernel_flow(), lr_latent=args.fkp_lr,
                    lambda_latent=args.fkp_latent, latent_radius=args.fkp_radius or None, critic=args.fkp_critic,
                    crops_per_step=args.fkp_crops, device=device, seed=case["photo_index"] + 10 * case["kernel_index"],
                    progress=False)
                case["fkp_seconds"] = time.perf_counter() - start
                case["fkp_cpu_seconds"] = time.process_time() - cpu_start
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
            case = {"name": name, "photo_index": i, "kernel_index": j, "lr": lr, "true": true_kernel}
            if not args.no_kernelgan:
                start, cpu_start = time.perf_counter(), time.process_time()
                case["estimate"], _ = kg.estimate_kernel(lr, 2, args.iterations, config=gan_config, device=device,
                                                         seed=i + 10 * j, progress=False)
                case["kernelgan_seconds"] = time.perf_counter() - start
                case["kernelgan_cpu_seconds"] = time.process_time() - cpu_start
            if not args.no_fkp:
                start, cpu_start = time.perf_counter(), time.process_time()
                case["fkp_estimate"], _ = estimate_kernel_fkp(lr, args.fkp_iterations, flow=kernel_flow(),
                                                              lr_latent=args.fkp_lr, lambda_latent=args.fkp_latent,
                                                              latent_radius=args.fkp_radius or None, critic=args.fkp_critic,
                                                              crops_per_step=args.fkp_crops,
                                                              device=device, seed=i + 10 * j, progress=False)
                case["fkp_seconds"] = time.perf_counter() - start
                case["fkp_cpu_seconds"] = time.process_time() - cpu_start
            cases.append(case)
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
    row = {"photo": case["name"], "kernel_index": case["kernel_index"], "lr_size": list(lr.shape[-2:])}
    for key in ("kernelgan_seconds", "kernelgan_cpu_seconds", "fkp_seconds", "fkp_cpu_seconds"):
        if key in case:
            row[key] = case[key]
    candidates = dict(zip(KERNELS, (bicubic_kernel(2), prior_mean_kernel(), case.get("estimate"),
                                    case.get("fkp_estimate"), case["true"])))
    for label, kernel in candidates.items():
        if kernel is None:
            continue
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
    for label in ESTIMATES:
        sized = [row for row in rows if f"kernel size {label}" in row and "kernel size true" in row]
        if len(sized) >= 3:
            for what in ("size", "elongation"):
                pairs = torch.tensor([[r[f"kernel {what} true"], r[f"kernel {what} {label}"]] for r in sized])
                print(f"  {label}: correlation of the true and estimated kernel {what} over {len(sized)} cases: "
                      f"{float(torch.corrcoef(pairs.T)[0, 1]):+.2f}")
        seconds = [row[f"{'kernelgan' if label == 'KernelGAN' else 'fkp'}_cpu_seconds"] for row in rows
                   if f"{'kernelgan' if label == 'KernelGAN' else 'fkp'}_cpu_seconds" in row]
        seconds = [x for x in seconds if x == x]
        if seconds:
            print(f"  {label}: {sum(seconds) / len(seconds):.1f} s CPU per image (mean of {len(seconds)})")
    methods = dict.fromkeys(k.split(" PSNR ")[0] for row in rows for k in row if " PSNR " in k)
    for method in methods:
        for label in ESTIMATES:
            pairs = [row for row in rows if f"{method} PSNR {label}" in row and f"{method} PSNR prior mean" in row]
            if not pairs:
                continue
            over_prior = [r[f"{method} PSNR {label}"] - r[f"{method} PSNR prior mean"] for r in pairs]
            g, g_err = mean_and_error(over_prior)
            line = (f"{method}: {label} kernel {g:+.2f} +- {g_err:.2f} dB over the prior mean "
                    f"(better on {sum(x > 0 for x in over_prior)}/{len(over_prior)})")
            full = [r for r in pairs if f"{method} PSNR true" in r and f"{method} PSNR bicubic" in r]
            if full:
                got = mean_and_error([r[f"{method} PSNR {label}"] - r[f"{method} PSNR bicubic"] for r in full])[0]
                room = mean_and_error([r[f"{method} PSNR true"] - r[f"{method} PSNR bicubic"] for r in full])[0]
                line += f"; recovers {got / room:.0%} of the true kernel's gain over bicubic ({got:+.2f} of {room:+.2f} dB)"
            print(line)
        for label in (*ESTIMATES, "prior mean"):
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


def health(args: argparse.Namespace, device: torch.device) -> None:
    """Full KernelGAN runs on one case over several seeds: does the raw kernel keep its sum?"""
    hr = centre_crop(load_photo("astronaut"), args.hr_size)
    truth = random_div2krk_kernel(2, 21, generator=torch.Generator().manual_seed(100))
    lr = quantize_8bit(degrade(hr, 2, kernel=truth, boundary="symmetric"))
    marks = [m for m in (500, 1000, 2000, 3000) if m <= args.iterations] or [args.iterations]
    print(f"astronaut, kernel 0, LR {tuple(lr.shape[-2:])}; KernelGAN {args.iterations} iterations, seeds {args.seeds}")
    for seed in args.seeds:
        start = time.process_time()
        gan = kg.KernelGAN(lr, kg.KernelGANConfig(iterations=args.iterations, g_channels=args.g_channels)
                           .without(*args.without), device=device, seed=seed)
        history = gan.fit(progress=False)
        sums = [history.logs["kernel_sum"][m - 1] for m in marks]
        tail = slice(-100, None)
        print(f"  seed {seed}: raw kernel sum at {marks}: " + " / ".join(f"{x:.3f}" for x in sums)
              + f"; last 100 steps: d_loss {sum(history.logs['d_loss'][tail]) / 100:.2f}, "
              f"g_adv {sum(history.logs['g_adv'][tail]) / 100:.2f}; kernel error raw "
              f"{kg.kernel_error(gan.kernel(), truth):.3f}, post-processed {kg.kernel_error(gan.final_kernel(), truth):.3f}"
              f" ({time.process_time() - start:.0f} s CPU)", flush=True)


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
    parser.add_argument("--no-kernelgan", action="store_true", help="skip KernelGAN (e.g. an FKP-only run)")
    parser.add_argument("--no-fkp", action="store_true", help="skip KernelGAN-FKP")
    parser.add_argument("--fkp-iterations", type=int, default=600)
    parser.add_argument("--fkp-lr", type=float, default=1e-3, help="Adam learning rate on FKP's latent")
    parser.add_argument("--fkp-latent", type=float, default=0.0, help="weight of FKP's latent penalty")
    parser.add_argument("--fkp-critic", choices=("kernelgan", "wgan-gp"), default="wgan-gp",
                        help="KernelGAN-FKP's critic: KernelGAN's D and L1 loss, or the official WGAN-GP critic")
    parser.add_argument("--fkp-crops", type=int, default=8, help="crops per KernelGAN-FKP iteration")
    parser.add_argument("--fkp-radius", type=float, default=10.0,
                        help="keep FKP's latent on the sphere of this radius (official: kernel size - 1 = 10; "
                             "0: start at the mode and leave the norm free)")
    parser.add_argument("--health", action="store_true",
                        help="full KernelGAN runs on astronaut (kernel 0) for --seeds: kernel sums and errors")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
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
    if args.health:
        health(args, device)
        return
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
        times = ", ".join(f"{name} {row[key + '_seconds']:.1f} s wall, {row[key + '_cpu_seconds']:.1f} s CPU"
                          for name, key in (("KernelGAN", "kernelgan"), ("KernelGAN-FKP", "fkp"))
                          if key + "_seconds" in row)
        print(f"\n{row['photo']}, kernel {row['kernel_index']} (LR {tuple(row['lr_size'])}; {times})")
        for key, value in row.items():
            if isinstance(value, float) and "seconds" not in key:
                print(f"  {key:34s} {value:.4f}")
        if args.results:
            with open(args.results, "a") as f:
                f.write(json.dumps(row) + "\n")
    summarise(rows)


if __name__ == "__main__":
    main()
