"""Tests of ``python -m course_lib`` (course_lib.cli): every sub-command on tiny generated images, the
image-reading rules (EXIF, 16-bit, RGBA, grayscale), --fit crop|pad, refusals with exit status 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from course_lib import cli
from course_lib.data.photos import load_image, save_png
from course_lib.degradation import imresize

REPO = Path(__file__).resolve().parent.parent


def _rgb(path: Path, h: int, w: int, seed: int = 0) -> Path:
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def _gray(path: Path, h: int, w: int, seed: int = 0) -> Path:
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w), dtype=np.uint8)).save(path)
    return path


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _refused(capsys, *argv, match: str) -> None:
    code, _, err = _run(capsys, *argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("python -m course_lib: error: ") and match in lines[0], lines[0]


def test_help_says_what_fit_does(capsys):
    assert cli.main(["--help"]) == 0
    assert "rescale" in capsys.readouterr().out
    assert cli.main(["rescale", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "crop = drop the last rows and columns" in text and "pad = mirror-pad" in text


@pytest.mark.parametrize("model", ["irn", "hcflow"])
def test_rescale_downscale_crop_or_pad_then_upscale(tmp_path, capsys, model):
    hr = _rgb(tmp_path / "hr.png", 18, 23)
    code, out, _ = _run(capsys, "rescale", "downscale", hr, tmp_path / "lr.png", "--model", model, "--scale", 4)
    assert code == 0
    assert "--fit crop dropped the last 2 row(s) and 3 column(s) -> 16x20" in out
    assert load_image(tmp_path / "lr.png").shape == (3, 4, 5)
    code, out, _ = _run(capsys, "rescale", "downscale", hr, tmp_path / "lr_pad.png", "--model", model, "--scale", 4,
                        "--fit", "pad")
    assert code == 0 and "--fit pad mirror-padded 2 row(s) and 1 column(s) -> 20x24" in out
    assert load_image(tmp_path / "lr_pad.png").shape == (3, 5, 6)

    args = ["rescale", "upscale", tmp_path / "lr.png", tmp_path / "a.png", "--model", model, "--scale", 4, "--seed", 3]
    code, out, _ = _run(capsys, *args)
    assert code == 0 and "upscales well only an LR image made by its own downscale" in out
    a = load_image(tmp_path / "a.png")
    assert a.shape == (3, 16, 20)
    assert _run(capsys, *args[:3], tmp_path / "b.png", *args[4:])[0] == 0
    assert torch.equal(load_image(tmp_path / "b.png"), a)  # the same seed, the same z


def test_sr_hcflow_samples_and_bicubic(tmp_path, capsys):
    lr = _rgb(tmp_path / "lr.png", 6, 7)
    code, out, err = _run(capsys, "sr", lr, tmp_path / "s.png", "--method", "hcflow", "--scale", 4, "--samples", 3,
                          "--temperature", 0.8)
    assert code == 0 and "3 sample(s) at temperature 0.8" in out
    assert "HCFlow x4 samples" in err  # the progress bar
    samples = [load_image(tmp_path / f"s_{i}.png") for i in (1, 2, 3)]
    assert all(s.shape == (3, 24, 28) for s in samples) and not torch.equal(samples[0], samples[1])
    assert not (tmp_path / "s.png").exists()

    code, out, _ = _run(capsys, "sr", lr, tmp_path / "b.png", "--method", "bicubic", "--scale", 3)
    assert code == 0
    expected = torch.round(imresize(load_image(lr), 3.0).clamp(0, 1) * 255) / 255
    torch.testing.assert_close(load_image(tmp_path / "b.png"), expected, atol=1e-6, rtol=0)


def test_blind_wiener_writes_the_sr_image_and_the_kernel(tmp_path, capsys):
    lr = _gray(tmp_path / "lr.png", 32, 35)
    code, out, _ = _run(capsys, "blind", lr, tmp_path / "sr.png", "--scale", 2, "--iterations", 1, "--sr", "wiener")
    assert code == 0 and "crops of 32 pixels" in out
    assert load_image(tmp_path / "sr.png", channels=None).shape == (1, 64, 70)  # gray stays gray
    kernel = np.load(tmp_path / "sr_kernel.npy")
    assert kernel.shape == (13, 13) and kernel.dtype == np.float32 and abs(kernel.sum() - 1) < 1e-4
    picture = load_image(tmp_path / "sr_kernel.png", channels=None)
    assert picture.shape[0] == 1 and picture.shape[1] >= 13 * 10 and float(picture.max()) == 1.0


def test_blind_zssr_x4(tmp_path, capsys):
    lr = _rgb(tmp_path / "lr.png", 32, 33)
    code, out, err = _run(capsys, "blind", lr, tmp_path / "sr.png", "--scale", 4, "--iterations", 1,
                          "--zssr-steps", 1)
    assert code == 0 and "ZSSR x4 (1 steps)" in out
    assert "KernelGAN x4" in err and "ZSSR x4" in err  # progress bars
    assert load_image(tmp_path / "sr.png").shape == (3, 128, 132)
    assert np.load(tmp_path / "sr_kernel.npy").shape == (27, 27)


def test_exif_rotation_is_applied(tmp_path, capsys):
    rgb = np.random.default_rng(1).integers(0, 256, (8, 12, 3), dtype=np.uint8)
    img = Image.fromarray(rgb)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to view"
    img.save(tmp_path / "photo.jpg", exif=exif, quality=95)
    code, out, _ = _run(capsys, "sr", tmp_path / "photo.jpg", tmp_path / "out.png", "--method", "bicubic",
                        "--scale", 2)
    assert code == 0 and "EXIF orientation 6 applied" in out and "read" in out and "12x8" in out
    assert load_image(tmp_path / "out.png").shape == (3, 24, 16)


def test_16bit_in_16bit_out_and_8bit_lr(tmp_path, capsys):
    levels = np.random.default_rng(2).integers(0, 65536, (10, 12), dtype=np.uint16)
    Image.fromarray(levels).save(tmp_path / "g16.png")
    code, out, _ = _run(capsys, "sr", tmp_path / "g16.png", tmp_path / "out.png", "--method", "bicubic",
                        "--scale", 2)
    assert code == 0 and "16-bit" in out
    with Image.open(tmp_path / "out.png") as written:
        assert written.mode.startswith("I")  # a 16-bit gray PNG
    expected = torch.round(imresize(load_image(tmp_path / "g16.png", channels=None), 2.0).clamp(0, 1) * 65535)
    torch.testing.assert_close(load_image(tmp_path / "out.png", channels=None) * 65535, expected, atol=1e-2, rtol=0)

    save_png(torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0)), tmp_path / "c16.png", bits=16)
    code, out, _ = _run(capsys, "rescale", "downscale", tmp_path / "c16.png", tmp_path / "lr.png", "--model", "irn",
                        "--scale", 2)
    assert code == 0 and "written in 8 bits" in out
    with Image.open(tmp_path / "lr.png") as written:
        assert written.mode == "RGB"


def test_rgba_is_composited_on_white(tmp_path, capsys):
    rgba = np.random.default_rng(3).integers(0, 256, (8, 8, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    rgba[:4, :, 3] = 0  # the top half is transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    code, out, _ = _run(capsys, "sr", tmp_path / "a.png", tmp_path / "out.png", "--method", "bicubic", "--scale", 2)
    assert code == 0 and "alpha channel composited on white" in out
    result = load_image(tmp_path / "out.png")
    assert result.shape == (3, 16, 16) and float(result[:, :4].min()) == 1.0


def test_grayscale_is_three_channels_for_the_models_that_need_rgb(tmp_path, capsys):
    lr = _gray(tmp_path / "g.png", 5, 6)
    code, out, _ = _run(capsys, "sr", lr, tmp_path / "out.png", "--method", "hcflow", "--scale", 4)
    assert code == 0 and "grayscale image processed as 3 identical channels" in out
    with Image.open(tmp_path / "out.png") as written:
        assert written.mode == "RGB" and written.size == (24, 20)


def test_existing_outputs_are_kept_unless_overwrite(tmp_path, capsys):
    lr = _rgb(tmp_path / "lr.png", 6, 6)
    out = tmp_path / "out.png"
    out.write_bytes(b"keep me")
    _refused(capsys, "sr", lr, out, "--method", "bicubic", "--scale", 2, match="exists; pass --overwrite")
    assert out.read_bytes() == b"keep me"
    (tmp_path / "sr_kernel.npy").write_bytes(b"keep me too")  # blind refuses before KernelGAN runs
    _refused(capsys, "blind", _gray(tmp_path / "big.png", 40, 40), tmp_path / "sr.png", "--scale", 2,
             match="sr_kernel.npy exists")
    _refused(capsys, "sr", lr, lr, "--method", "bicubic", "--scale", 2, match="exists")
    assert _run(capsys, "sr", lr, out, "--method", "bicubic", "--scale", 2, "--overwrite")[0] == 0
    assert load_image(out).shape == (3, 12, 12)


def test_bad_input_is_refused_in_one_line(tmp_path, capsys):
    lr = _rgb(tmp_path / "lr.png", 6, 6)
    out = tmp_path / "out.png"
    (tmp_path / "notes.png").write_text("not an image")
    _refused(capsys, match="required")
    _refused(capsys, "sr", tmp_path / "missing.png", out, "--method", "bicubic", "--scale", 2, match="not found")
    _refused(capsys, "sr", tmp_path / "notes.png", out, "--method", "bicubic", "--scale", 2, match="cannot read")
    _refused(capsys, "sr", lr, tmp_path / "out.jpg", "--method", "bicubic", "--scale", 2, match=".png")
    _refused(capsys, "sr", lr, out, "--method", "bicubic", "--scale", 2, "--temperature", 1, match="--temperature")
    _refused(capsys, "sr", lr, out, "--method", "hcflow", "--scale", 4, "--samples", 0, match="--samples")
    _refused(capsys, "sr", lr, out, "--method", "hcflow", "--scale", 2, match="'sr' and 'rescale'")
    _refused(capsys, "sr", lr, out, "--method", "hcflow", "--scale", 4, "--temperature", -1, match="temperature")
    _refused(capsys, "sr", lr, out, "--method", "nearest", "--scale", 2, match="invalid choice")
    _refused(capsys, "rescale", "upscale", lr, out, "--model", "irn", "--scale", 2, "--fit", "pad", match="--fit")
    _refused(capsys, "rescale", "downscale", lr, out, "--model", "irn", "--scale", 2, "--temperature", 1,
             match="--temperature")
    shipped = REPO / "course_lib" / "checkpoints" / "irn_x4.pt"
    _refused(capsys, "rescale", "upscale", lr, out, "--model", "hcflow", "--scale", 4, "--checkpoint", shipped,
             match="irn-x4")
    _refused(capsys, "rescale", "downscale", _rgb(tmp_path / "tiny.png", 1, 5), out, "--model", "irn", "--scale", 2,
             match="smaller than the scale")
    Image.fromarray(np.full((40, 40), 7, np.uint8)).save(tmp_path / "flat.png")
    _refused(capsys, "blind", tmp_path / "flat.png", out, "--scale", 2, match="flat")
    _refused(capsys, "blind", _gray(tmp_path / "small.png", 20, 40), out, "--scale", 2, match="too small")
    _refused(capsys, "blind", lr, out, "--scale", 2, "--sr", "wiener", "--zssr-steps", 3, match="--zssr-steps")
    assert not out.exists()


def test_python_dash_m_course_lib(tmp_path):
    lr = _rgb(tmp_path / "lr.png", 5, 7)
    env = {**os.environ, "COURSE_PROFILE": "test", "COURSE_THREADS": "1"}
    command = [sys.executable, "-m", "course_lib", "sr", str(lr), str(tmp_path / "out.png"), "--method", "bicubic",
               "--scale", "2"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "wrote" in done.stdout and load_image(tmp_path / "out.png").shape == (3, 10, 14)
    again = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert again.returncode == 2 and again.stderr.strip().count("\n") == 0 and "--overwrite" in again.stderr
