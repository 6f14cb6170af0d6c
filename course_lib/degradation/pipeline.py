"""The classical degradation model ``y = (x * k) downsampled by s + n``, optionally JPEG-compressed.

This is the observation model of non-blind and blind SR papers (e.g. Zhang et al. 2018, SRMD;
Bell-Kligler et al. 2019, KernelGAN) and, without noise and JPEG, the linear ``y = A x`` of the
inverse-problem chapters.
"""

from __future__ import annotations

import io
import math
from numbers import Real

import numpy as np
import torch
from PIL import Image

from ..checks import check_unit_range
from .bicubic import _check_image, _check_scale_int, bicubic_downscale, quantize_8bit
from .operators import BlurDownsample

__all__ = ["degrade", "jpeg_compress"]

# ``valid`` would shrink the image by the kernel size: degrade keeps H/s x W/s.
BOUNDARIES = ("periodic", "symmetric")


def jpeg_compress(img: torch.Tensor, quality: int) -> torch.Tensor:
    """Round-trip through Pillow's JPEG encoder at ``quality`` (1-100, Pillow defaults otherwise, e.g.
    4:2:0 chroma subsampling) on the 8-bit version of ``img`` (1 or 3 channels); returns floats in
    ``[0, 1]`` on the input's device and dtype. Not differentiable."""
    _check_image(img)
    if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)) or not 1 <= quality <= 100:
        raise ValueError(f"jpeg_quality must be an int in [1, 100], got {quality!r}")
    channels = img.shape[-3]
    if channels not in (1, 3):
        raise ValueError(f"JPEG needs 1 (grayscale) or 3 (RGB) channels, got {channels}")
    batch = img.reshape(-1, *img.shape[-3:])
    levels = torch.round(quantize_8bit(batch.detach()) * 255).to(torch.uint8).cpu().numpy()
    decoded = []
    for item in levels:
        array = item[0] if channels == 1 else item.transpose(1, 2, 0)
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="JPEG", quality=int(quality))
        buffer.seek(0)
        out = np.asarray(Image.open(buffer).convert("L" if channels == 1 else "RGB"))
        decoded.append(out[None] if channels == 1 else out.transpose(2, 0, 1))
    result = torch.from_numpy(np.stack(decoded)).to(device=img.device, dtype=img.dtype) / 255.0
    return result.reshape(img.shape)


def degrade(
    hr: torch.Tensor,
    scale: int,
    *,
    kernel: torch.Tensor | None = None,
    noise_sigma: float = 0.0,
    jpeg_quality: int | None = None,
    generator: torch.Generator | None = None,
    boundary: str = "periodic",
) -> torch.Tensor:
    """LR image ``y = (hr * kernel) downsampled by scale + n``, then optional JPEG.

    Args:
        hr: float image ``(C, H, W)`` or ``(N, C, H, W)`` in ``[0, 1]`` (a 0-255 image is refused), ``H`` and
            ``W`` divisible by ``scale``.
        scale: positive int.
        kernel: 2D blur kernel; ``None`` means MATLAB bicubic
            (:class:`~course_lib.degradation.operators.BicubicDownsample`, symmetric borders). Otherwise
            ``BlurDownsample(kernel, scale, boundary)`` (its alignment convention) is applied.
        noise_sigma: standard deviation of white Gaussian noise on the ``[0, 1]`` scale (e.g. ``5/255``).
        jpeg_quality: if given, the noisy LR is clamped, rounded to 8 bits and JPEG-compressed with
            Pillow at this quality (then returned as floats).
        generator: the noise comes from this CPU or CUDA generator (drawn on its device, then moved),
            so the result is reproducible given the generator.
        boundary: for an explicit kernel, ``'periodic'`` (default) or ``'symmetric'`` (mirrored borders,
            no wrap-around): without noise and JPEG, ``y = BlurDownsample(kernel, scale, boundary).A(hr)``.

    Returns:
        The LR image, same rank, dtype and device; not clamped unless JPEG is applied.
    """
    _check_image(hr, "hr")
    scale = _check_scale_int(scale)
    height, width = hr.shape[-2:]
    if height % scale or width % scale:
        raise ValueError(f"hr size {height}x{width} is not divisible by scale {scale}; crop it with mod_crop")
    if not torch.isfinite(hr).all():
        raise ValueError("hr contains non-finite values (NaN or inf)")
    check_unit_range(hr.detach(), "degrade: hr")
    if (isinstance(noise_sigma, bool) or not isinstance(noise_sigma, Real) or not math.isfinite(noise_sigma)
            or noise_sigma < 0):
        raise ValueError(f"noise_sigma must be a finite number >= 0, got {noise_sigma!r}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    if boundary not in BOUNDARIES:
        raise ValueError(f"boundary must be one of {BOUNDARIES}, got {boundary!r}")

    if kernel is None:
        lr = bicubic_downscale(hr, scale)
    else:
        lr = BlurDownsample(kernel, scale, boundary=boundary).A(hr)

    if noise_sigma > 0:
        device = generator.device if generator is not None else torch.device("cpu")
        noise = torch.randn(lr.shape, generator=generator, dtype=lr.dtype, device=device)
        lr = lr + noise_sigma * noise.to(lr.device)
    if jpeg_quality is not None:
        lr = jpeg_compress(lr, jpeg_quality)
    return lr
