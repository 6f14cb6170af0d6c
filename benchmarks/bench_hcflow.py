"""Benchmark of the shipped HCFlow checkpoints (and IRN's, when present) on the held-out photos.

Prints, for SR x4: NLL in bits/dim, Y-PSNR/SSIM at temperatures 0 and 0.9, LR-PSNR of the samples
(``lr_psnr``: consistency with the input), bicubic baseline; for rescaling x4: Y-PSNR/SSIM of HCFlow
next to IRN's on the same images, with their LR images against the bicubic LR (``lr_vs_bicubic_psnr``);
and CPU time per megapixel of HR output for each model's forward (downscale / likelihood) and
inverse (upscale / sampling) passes. Every figure comes from the one shared
``course_lib.evaluation.evaluate``.

    python benchmarks/bench_hcflow.py [--crop 256] [--draws 3] [--threads 1] [--images DIR]

``--images DIR`` evaluates every PNG/JPEG in DIR instead of the held-out photos (e.g. Set5).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from course_lib import config, data, hcflow, irn
from course_lib.evaluation import evaluate


def load_images(folder: str | None, crop: int | None, scale: int) -> list[tuple[str, torch.Tensor]]:
    if folder is None:
        return [(name, hcflow.center_crop(data.load_photo(name), crop, scale)) for name in data.EVAL_PHOTOS]
    paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp"))
    if not paths:
        raise SystemExit(f"no images in {folder}")
    return [(p.name, hcflow.center_crop(data.load_image(p), crop, scale)) for p in paths]


def seconds_per_megapixel(fn, pixels: int, repeats: int = 2) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats / (pixels / 1e6)


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--crop", type=int, default=None, help="centre crop (default: whole images)")
    parser.add_argument("--draws", type=int, default=3, help="samples per image and temperature")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--images", default=None, help="folder of HR images instead of the held-out photos")
    args = parser.parse_args()
    config.set_threads(args.threads)
    scale = 4
    images = load_images(args.images, args.crop, scale)
    print(f"images: {[n for n, _ in images]}, crop {args.crop}, {args.draws} draw(s), "
          f"{torch.get_num_threads()} thread(s)\n")

    if hcflow.pretrained_path("sr").is_file():
        model = hcflow.load_hcflow("sr")
        print(f"HCFlow SR x4: {hcflow.count_parameters(model):,} parameters")
        for t in (0.0, 0.9):
            res = evaluate(model, [im for _, im in images], temperature=t, draws=args.draws,
                           nll=hcflow.dequantized_nll_bits_per_dim if t == 0.0 else None)
            extra = f", NLL {res['nll_bpd']:.3f} bits/dim" if "nll_bpd" in res else ""
            print(f"  T = {t}: Y-PSNR {res['hr_psnr']:.2f} dB, SSIM {res['hr_ssim']:.4f}, "
                  f"LR-PSNR {res['lr_psnr']:.2f} dB{extra} (bicubic {res['bicubic_psnr']:.2f} / "
                  f"{res['bicubic_ssim']:.4f})")
        hr = images[0][1][None]
        lr = hcflow.reference_lr(hr, scale)
        up = seconds_per_megapixel(lambda: hcflow.upscale(model, lr, 0.9), hr[0, 0].numel())
        down = seconds_per_megapixel(lambda: hcflow.dequantized_nll_bits_per_dim(model, hr, lr), hr[0, 0].numel())
        print(f"  CPU: sampling {up:.2f} s/MP, likelihood {down:.2f} s/MP\n")
    else:
        print("no shipped HCFlow SR checkpoint\n")

    rescalers = {}
    if hcflow.pretrained_path("rescale").is_file():
        rescalers["HCFlow"] = (hcflow, hcflow.load_hcflow("rescale"))
    if irn.pretrained_path(scale).is_file():
        rescalers["IRN"] = (irn, irn.load_irn(scale))
    for name, (module, model) in rescalers.items():
        res = evaluate(model, [im for _, im in images], draws=args.draws)
        print(f"{name} rescaling x4: {sum(p.numel() for p in model.parameters()):,} parameters; "
              f"Y-PSNR {res['hr_psnr']:.2f} dB, SSIM {res['hr_ssim']:.4f}, LR vs bicubic LR "
              f"{res['lr_vs_bicubic_psnr']:.2f} dB (bicubic & bicubic {res['bicubic_psnr']:.2f} / "
              f"{res['bicubic_ssim']:.4f})")
        hr = images[0][1][None]
        small = module.downscale(model, hr)
        down = seconds_per_megapixel(lambda m=module, net=model, x=hr: m.downscale(net, x), hr[0, 0].numel())
        up = seconds_per_megapixel(lambda m=module, net=model, y=small: m.upscale(net, y, 1.0), hr[0, 0].numel())
        print(f"  CPU: downscale {down:.2f} s/MP, upscale {up:.2f} s/MP")
    if not rescalers:
        print("no shipped rescaling checkpoints")


if __name__ == "__main__":
    main()
