"""Images in the 0-255 range (a common slip) are refused with a message that says so, not silently
measured or processed (issue: 'the library refuses what it cannot handle')."""

from __future__ import annotations

import pytest
import torch

from course_lib import zssr
from course_lib.checks import check_unit_range
from course_lib.metrics import lr_psnr, psnr, ssim


def _pair():
    g = torch.Generator().manual_seed(0)
    hr = torch.rand(3, 32, 32, generator=g)
    return (hr + 0.01 * torch.randn(3, 32, 32, generator=g)).clamp(0, 1), hr


def test_check_unit_range_accepts_overshoot_and_refuses_0_255():
    check_unit_range(torch.tensor([-0.2, 1.2]), "x")  # bicubic overshoot is fine
    with pytest.raises(ValueError, match="divide it by 255"):
        check_unit_range(torch.tensor([0.0, 254.0]), "img")
    with pytest.raises(ValueError, match=r"\[-3, 1\]"):
        check_unit_range(torch.tensor([-3.0, 1.0]), "img")
    check_unit_range(torch.tensor([0.0, 254.0]), "img", data_range=255)


def test_metrics_refuse_0_255_images_unless_told_the_range():
    sr, hr = _pair()
    good = psnr(sr, hr)
    for metric in (psnr, ssim):
        with pytest.raises(ValueError, match="sr has values in .* divide it by 255"):
            metric(sr * 255, hr * 255)
    assert psnr(sr * 255, hr * 255, data_range=255) == pytest.approx(good, abs=1e-4)  # float32 rounding
    with pytest.raises(ValueError, match="divide it by 255"):
        lr_psnr(hr * 255, torch.rand(3, 16, 16) * 255, 2)


def test_zssr_and_wiener_refuse_0_255_images():
    lr = torch.rand(3, 24, 24) * 255
    with pytest.raises(ValueError, match="lr has values .* divide it by 255"):
        zssr.wiener_sr(lr, None, 2)
    with pytest.raises(ValueError, match="divide it by 255"):
        zssr.zssr(lr, None, 2, steps=1, progress=False)
