"""One held-out evaluation for the invertible rescaling and SR flows (IRN, chapter 5; HCFlow, chapter 6).

Every model here is a :class:`course_lib.rescaling.RescalingFlow` with a ``mode``:

* ``"rescale"`` (IRN, HCFlow rescaling): the model makes its own LR image
  (:func:`course_lib.rescaling.downscale`) and upscales it again with a fresh ``z``;
* ``"sr"`` (HCFlow SR): the model upscales the given 8-bit MATLAB-bicubic LR image.

:func:`evaluate` runs the same loop for both, as the papers' test scripts do: Y-channel PSNR and
SSIM with ``scale`` pixels shaved from each border, outputs rounded to 8 bits, the mean over
``draws`` samples of ``z``, next to bicubic-down + bicubic-up. The two LR figures are distinct
keys, because they measure different things:

* ``lr_vs_bicubic_psnr`` / ``lr_vs_bicubic_ssim`` (rescaling): the model's 8-bit LR image against
  the 8-bit bicubic LR image (Y, shave ``scale``): is the learned thumbnail still a good image?
* ``lr_psnr`` (SR): the LR consistency ``PSNR(imresize(sr, 1/s), lr)`` of the samples
  (RGB, :func:`course_lib.metrics.lr_psnr`, SRFlow's and HCFlow's LR-PSNR).

:func:`format_results` prints the table of both, :func:`training_logs` gives the figures the
training loops log (``eval_psnr`` and ``eval_lr_vs_bicubic_psnr`` or ``eval_lr_psnr``).

What to evaluate on: :func:`evaluation_set` turns a command line's ``--eval`` into images:
``photos`` (the packaged held-out photos, the default, offline), the papers' test sets ``set5``,
``set14``, ``b100``, ``urban100`` (:mod:`course_lib.data.datasets`, downloaded once) or a folder.
:func:`lpips_metric` gives LPIPS (Zhang et al. 2018) where the optional ``lpips`` or
``torchmetrics`` package and its weights are there (Colab), and ``None`` with the reason otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch

from course_lib import training
from course_lib.rescaling import MODES, RescalingFlow, downscale, evaluation_images, round_8bit, upscale

__all__ = ["EVAL_CHOICES", "SR_TEMPERATURE", "evaluate", "evaluation_set", "format_results", "lpips_metric",
           "lr_key", "training_logs"]

Tensor = torch.Tensor

# Default temperature of the SR samples: the "heat" 0.9 of the HCFlow and SRFlow test scripts.
# Rescaling models sample z at 1.0, as in training.
SR_TEMPERATURE = 0.9

NLLFn = Callable[..., Tensor]

# What ``--eval`` accepts besides a folder: the packaged held-out photos and the papers' test sets.
EVAL_CHOICES = ("photos", "set5", "set14", "b100", "urban100")


def evaluation_set(name: str | os.PathLike | None = "photos", *, download: bool = False,
                   max_images: int | None = None) -> tuple[str, dict[str, Tensor] | None]:
    """The images of ``--eval name`` and a line that says what they are.

    ``"photos"`` (or ``None``): ``(description, None)``, i.e. :func:`evaluate`'s default, the
    packaged held-out photos ``data.EVAL_PHOTOS``; ``"set5"``, ``"set14"``, ``"b100"``,
    ``"urban100"``: the HR images of that test set (:func:`course_lib.data.dataset_path`; from the
    cache, downloaded into it only with ``download=True``, else FileNotFoundError); any
    other value: a folder of images. The images come as ``{file stem: (3, H, W) tensor}`` (gray
    images made RGB), in natural file order; ``max_images`` keeps the first ones.
    """
    from course_lib import data

    if name is None or str(name) == "photos":
        return f"held-out packaged photos {', '.join(data.EVAL_PHOTOS)}", None
    key = str(name).strip().lower()
    if key in EVAL_CHOICES:
        folder = data.dataset_path(key, download=download)
        label = {"set5": "Set5", "set14": "Set14", "b100": "B100", "urban100": "Urban100"}[key]
    else:
        folder = Path(name).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"--eval {name}: not one of {', '.join(EVAL_CHOICES)} nor a folder")
        label = str(folder)
    files = data.list_images(folder)
    if not files:
        raise ValueError(f"no images in {folder}")
    files = files[:max_images] if max_images else files
    images = {path.stem: data.load_image(path, channels=3) for path in files}
    return f"{label} ({len(images)} images, {folder})", images


def lpips_metric(device: torch.device | str | None = None) -> tuple[Callable[[Tensor, Tensor], Tensor] | None, str]:
    """LPIPS (AlexNet features; lower is closer) as ``fn(x, y) -> (N,)`` on images in [0, 1], and a
    line that says where it comes from, or ``(None, why)`` when it cannot be had.

    It uses the ``lpips`` package (the authors') or else ``torchmetrics``; neither is a dependency of
    the course (``pip install lpips`` on Colab). Both fetch network weights on first use, so
    offline it is ``None`` with a message, and the tables leave the column out.
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    try:
        import lpips  # the authors' package

        net = lpips.LPIPS(net="alex", verbose=False).to(device).eval()

        def fn(x: Tensor, y: Tensor) -> Tensor:
            with torch.no_grad():
                return net(x.to(device), y.to(device), normalize=True).flatten()

        return fn, f"LPIPS (AlexNet) from the lpips package {getattr(lpips, '__version__', '')}".rstrip()
    except ImportError:
        pass
    except Exception as err:  # noqa: BLE001 - weights missing offline, and the like
        return None, f"LPIPS skipped: the lpips package could not load its weights ({type(err).__name__}: {err})"
    try:
        from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

        metric = LearnedPerceptualImagePatchSimilarity(net_type="alex", normalize=True, reduction="none").to(device)

        def fn(x: Tensor, y: Tensor) -> Tensor:
            with torch.no_grad():
                return torch.stack([metric(a[None].to(device), b[None].to(device)).reshape(())
                                    for a, b in zip(x, y)])

        return fn, "LPIPS (AlexNet) from torchmetrics"
    except ImportError:
        return None, "LPIPS skipped: neither the lpips nor the torchmetrics package is installed (pip install lpips)"
    except Exception as err:  # noqa: BLE001
        return None, f"LPIPS skipped: torchmetrics could not load its weights ({type(err).__name__}: {err})"


def lr_key(model: RescalingFlow) -> str:
    """The key of the LR figure of ``model``'s results: ``"lr_psnr"`` (SR: consistency of the
    samples with their input) or ``"lr_vs_bicubic_psnr"`` (rescaling: the model's LR image against
    the bicubic LR image)."""
    return "lr_psnr" if _mode(model) == "sr" else "lr_vs_bicubic_psnr"


def _mode(model: RescalingFlow) -> str:
    mode = getattr(model, "mode", None)
    if mode not in MODES:
        raise ValueError(f"{type(model).__name__}.mode must be one of {MODES}, got {mode!r}")
    return mode


@torch.no_grad()
def evaluate(model: RescalingFlow, photos: Sequence[str] | Sequence[Tensor] | Mapping[str, Tensor] | None = None,
             *, crop: int | None = None, temperature: float | None = None, draws: int = 1, seed: int = 0,
             device: torch.device | str | None = None, nll: NLLFn | None = None,
             lpips: Callable[[Tensor, Tensor], Tensor] | None = None) -> dict:
    """Held-out figures of a rescaling or SR flow (module docstring): one loop for IRN and HCFlow.

    Args:
        model: an IRN or HCFlow (any :class:`course_lib.rescaling.RescalingFlow` with a ``mode``).
        photos: names of packaged photos (default ``data.EVAL_PHOTOS``), image tensors (rows named
            ``image0``, ``image1``, ...) or ``{name: tensor}`` (:func:`evaluation_set`). Each is
            mod-cropped to the scale.
        crop: centre crop to at most ``crop x crop`` first (quick previews).
        temperature: std of the sampled ``z``; default 1.0 (rescaling, as in training) or
            ``SR_TEMPERATURE`` (SR).
        draws: samples of ``z`` per image; the HR figures are their mean.
        seed: seeds the one generator all samples are drawn from (a rerun gives the same figures).
        device: where to run (default: the model's device).
        nll: SR only: a function ``nll(model, hr, lr, generator=...) -> bits/dim per image``, e.g.
            :func:`course_lib.hcflow.losses.dequantized_nll_bits_per_dim`; adds ``nll_bpd``.
        lpips: ``fn(sr, hr) -> (N,)`` (:func:`lpips_metric`); adds ``lpips``, the mean over draws.

    Returns the means of ``hr_psnr``, ``hr_ssim``, ``bicubic_psnr``, ``bicubic_ssim`` and either
    ``lr_vs_bicubic_psnr`` and ``lr_vs_bicubic_ssim`` (rescaling) or ``lr_psnr`` (SR), with
    ``nll_bpd`` when asked; ``model`` (the class name), ``mode``, ``temperature``, ``draws`` and the
    per-image ``rows``.

    Paper: Xiao et al. 2020, sec. 4 (ECCV version; Y-PSNR/SSIM, shave = scale) and Liang et al. 2021 (ICCV), sec. 4
    (LR-PSNR) · Book: chapter 5, section "The shipped checkpoints on held-out photos"; chapter 6, section "Image
    rescaling: HCFlow versus IRN" · Official code: pkuxmq/Invertible-Image-Rescaling, codes/test.py;
    JingyunLiang/HCFlow, codes/test_HCFlow.py
    """
    from course_lib import metrics
    from course_lib.degradation import bicubic_downscale, imresize

    mode = _mode(model)
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise ValueError(f"draws must be a positive int, got {draws!r}")
    if nll is not None and (isinstance(nll, bool) or not callable(nll)):
        raise TypeError("nll must be a function nll(model, hr, lr, generator=...) -> bits/dim, e.g. "
                        f"course_lib.hcflow.dequantized_nll_bits_per_dim; got {nll!r}")
    if nll is not None and mode != "sr":
        raise ValueError("nll is the likelihood of the HR image given the bicubic LR: SR models only")
    if temperature is None:
        temperature = SR_TEMPERATURE if mode == "sr" else 1.0
    s = model.scale
    with training.evaluation_mode(model):
        gen = torch.Generator().manual_seed(seed)
        rows = []
        for name, hr in evaluation_images(model, photos, crop, device):
            lr_bic = bicubic_downscale(hr, s, quantize=True)  # the 8-bit MATLAB-bicubic LR
            lr = lr_bic if mode == "sr" else downscale(model, hr)
            psnrs, ssims, consistency, perceptual = [], [], [], []
            for _ in range(draws):
                sr = round_8bit(upscale(model, lr, temperature, generator=gen))  # as saved 8-bit images
                psnrs.append(float(metrics.psnr(sr, hr, shave=s)))
                ssims.append(float(metrics.ssim(sr, hr, shave=s)))
                if lpips is not None:
                    perceptual.append(float(lpips(sr, hr).mean()))
                if mode == "sr":
                    consistency.append(float(metrics.lr_psnr(sr, lr_bic, s)))
            up = round_8bit(imresize(lr_bic, s))
            row = {"image": name, "hr_psnr": sum(psnrs) / draws, "hr_ssim": sum(ssims) / draws}
            if mode == "sr":
                row["lr_psnr"] = sum(consistency) / draws
            else:
                row["lr_vs_bicubic_psnr"] = float(metrics.psnr(lr, lr_bic, shave=s))
                row["lr_vs_bicubic_ssim"] = float(metrics.ssim(lr, lr_bic, shave=s))
            row["bicubic_psnr"] = float(metrics.psnr(up, hr, shave=s))
            row["bicubic_ssim"] = float(metrics.ssim(up, hr, shave=s))
            if nll is not None:
                row["nll_bpd"] = float(nll(model, hr, lr_bic, generator=gen).mean())
            if lpips is not None:
                row["lpips"] = sum(perceptual) / draws
            rows.append(row)
    if not rows:
        raise ValueError("no images to evaluate")
    keys = [k for k in rows[0] if k != "image"]
    means = {k: sum(r[k] for r in rows) / len(rows) for k in keys}
    return {**means, "model": type(model).__name__, "mode": mode, "temperature": float(temperature),
            "draws": draws, "rows": rows}


def format_results(results: dict, name: str | None = None) -> str:
    """A plain-text table of :func:`evaluate`'s output; ``name`` heads the model's PSNR column
    (default: the model's class name). Rescaling: the LR columns compare the model's LR image with
    the bicubic LR (``lr_vs_bicubic_*``); SR: the LR column is the consistency ``lr_psnr``."""
    name = name or results.get("model", "model")
    rescaling = "lr_vs_bicubic_psnr" in results
    perceptual = "lpips" in results
    lr_head = f"{'LR vs bic':>11}{'SSIM':>8}" if rescaling else f"{'LR consist':>11}{'':>8}"
    lines = [f"{'image':<14}{name + ' PSNR':>12}{'SSIM':>8}{lr_head}{'bicubic':>10}{'SSIM':>8}"
             + (f"{'LPIPS':>8}" if perceptual else "")]
    for r in results["rows"] + [{"image": "mean", **results}]:
        if rescaling:
            lr = f"{r['lr_vs_bicubic_psnr']:>11.2f}{r['lr_vs_bicubic_ssim']:>8.4f}"
        else:
            lr = f"{r['lr_psnr']:>11.2f}{'':>8}"
        lines.append(f"{r['image'][:13]:<14}{r['hr_psnr']:>12.2f}{r['hr_ssim']:>8.4f}{lr}"
                     f"{r['bicubic_psnr']:>10.2f}{r['bicubic_ssim']:>8.4f}"
                     + (f"{r['lpips']:>8.4f}" if perceptual else ""))
    return "\n".join(lines)


def training_logs(model: RescalingFlow, *, crop: int | None = 128,
                  device: torch.device | str | None = None) -> dict[str, float]:
    """What the training loops log every ``eval_every`` steps: :func:`evaluate` on centre crops of
    the held-out photos, as ``eval_psnr`` and ``eval_`` + :func:`lr_key` (``eval_lr_vs_bicubic_psnr``
    for rescaling, ``eval_lr_psnr`` for SR)."""
    results = evaluate(model, crop=crop, device=device)
    key = lr_key(model)
    return {"eval_psnr": results["hr_psnr"], f"eval_{key}": results[key]}
