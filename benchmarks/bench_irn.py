"""Quality and speed of the shipped IRN checkpoints (course_lib/checkpoints/irn_x{2,4}.pt).

For each checkpoint, prints:

* Y-PSNR / SSIM (shave = scale, mean over ``--draws`` samples of z at temperature 1) on the
  held-out photos (``course_lib.data.EVAL_PHOTOS``), and on every image in the folders given as
  arguments (e.g. Set5's HR images: ``python benchmarks/bench_irn.py ~/data/Set5``), against
  bicubic-down + bicubic-up (MATLAB-compatible, 8-bit LR);
* LR Y-PSNR of the learned LR image against the bicubic LR image;
* parameters, and CPU seconds per megapixel (of HR) for downscale and upscale;
* training steps per second of the ``cpu`` profile on this machine (``--skip-train`` skips it).

Goal of the course issue: x2 >= 40 dB and x4 >= 33 dB on the held-out photos (the paper: 43.99 and
36.19 dB on Set5, with far larger models trained for 500k steps on DIV2K).

    .venv/bin/python benchmarks/bench_irn.py [FOLDER ...] [--scales 2 4] [--draws 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from course_lib import config, data, irn
from course_lib.degradation import mod_crop

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


def folder_images(folder: Path) -> list[tuple[str, torch.Tensor]]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SystemExit(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {folder}")
    return [(p.name, data.load_image(p)) for p in files]


def seconds_per_megapixel(model: irn.IRN, size: int = 256, repeats: int = 3) -> tuple[float, float]:
    hr = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        irn.downscale(model, hr)  # warm-up
        start = time.process_time()
        for _ in range(repeats):
            lr = irn.downscale(model, hr)
        down = (time.process_time() - start) / repeats
        start = time.process_time()
        for _ in range(repeats):
            irn.upscale(model, lr)
        up = (time.process_time() - start) / repeats
    mp = size * size / 1e6
    return down / mp, up / mp


def train_steps_per_second(scale: int, steps: int = 5) -> float:
    cfg = irn.train_config("cpu", steps=steps)
    model = irn.IRN(scale, cfg.blocks, cfg.growth)
    batch_fn = irn.make_batch_fn(cfg.patch, cfg.batch, scale=scale)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    batches = [batch_fn(i) for i in range(steps + 1)]
    start = None
    for i, batch in enumerate(batches):
        if i == 1:
            start = time.process_time()  # the first step is a warm-up
        opt.zero_grad()
        loss, _ = irn.irn_loss(model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
    return steps / (time.process_time() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="*", type=Path, help="folders of HR test images (e.g. Set5)")
    parser.add_argument("--scales", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-train", action="store_true")
    args = parser.parse_args()
    config.set_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); times are CPU (process) seconds")
    for scale in args.scales:
        model = irn.load_irn(scale, scale=scale)
        n_params = sum(p.numel() for p in model.parameters())
        print(f"\n=== IRN x{scale}: {n_params:,} parameters, blocks {model.blocks}, growth {model.growth} ===")
        sets = [("held-out photos", list(data.EVAL_PHOTOS))]
        for folder in args.folders:
            sets.append((str(folder), [mod_crop(img, scale) for _, img in folder_images(folder)]))
        for label, images in sets:
            res = irn.evaluate(model, images, draws=args.draws, seed=0)
            if not isinstance(images[0], str):  # name the rows after the files
                for row, (name, _) in zip(res["rows"], folder_images(Path(label))):
                    row["image"] = name[:13]
            print(f"-- {label} (Y channel, shave {scale}, {args.draws} draw(s) of z)")
            print(irn.format_results(res))
        down, up = seconds_per_megapixel(model)
        print(f"CPU time per HR megapixel: downscale {down:.2f} s, upscale {up:.2f} s")
        if not args.skip_train:
            print(f"training ('cpu' profile sizes): {train_steps_per_second(scale):.2f} steps/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
