"""The library refuses what it cannot handle, with a message that says why (issue 17).

Each test here failed before its refusal was added.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from course_lib import irn, rescaling, training
from course_lib.degradation import degrade, gaussian_kernel
from course_lib.hcflow import HCFlow, load_hcflow, sample

REPO = Path(__file__).resolve().parent.parent
CHECKPOINTS = REPO / "course_lib" / "checkpoints"
ENV = {**os.environ, "COURSE_PROFILE": "test", "COURSE_THREADS": "1"}
TINY_HCFLOW = dict(flow_steps=2, cond_steps=1, hidden=4, cond_hidden=4, rrdb_blocks=(1, 0), nf=4, gc=4)


def _img(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------------
# float images in the 0-255 range
# ------------------------------------------------------------------------------------------------


def test_rescaling_refuses_0_255_images():
    model = irn.IRN(2, blocks=1, growth=4).eval()
    with torch.no_grad():
        lr = rescaling.downscale(model, _img(3, 8, 8))  # [0, 1] is fine
        with pytest.raises(ValueError, match=r"downscale: hr .*0-255 image: divide it by 255"):
            rescaling.downscale(model, _img(3, 8, 8) * 255)
        with pytest.raises(ValueError, match=r"downscale: hr"):
            irn.downscale(model, _img(1, 3, 8, 8) * 255)
        rescaling.upscale(model, lr)
        with pytest.raises(ValueError, match=r"upscale: lr .*0-255 image"):
            rescaling.upscale(model, lr * 255)
        rescaling.upscale(model, lr * 1.2 - 0.1)  # a little overshoot (bicubic, noise) passes


def test_hcflow_sampling_refuses_0_255_images():
    model = HCFlow(4, "sr", **TINY_HCFLOW).eval()
    assert sample(model, _img(3, 3, 3), 2).shape == (2, 3, 12, 12)
    with pytest.raises(ValueError, match=r"sample: lr .*0-255 image"):
        sample(model, _img(3, 3, 3) * 255, 2)
    from course_lib import hcflow

    with pytest.raises(ValueError, match=r"upscale: lr .*0-255"):
        hcflow.upscale(model, _img(3, 3, 3) * 255)


def test_degrade_refuses_0_255_images():
    hr = _img(3, 8, 8)
    degrade(hr, 2, kernel=gaussian_kernel(5, 1.0))
    with pytest.raises(ValueError, match=r"degrade: hr .*0-255 image"):
        degrade(hr * 255, 2)
    with pytest.raises(ValueError, match=r"degrade: hr"):
        degrade(hr - 2.0, 2, kernel=gaussian_kernel(5, 1.0))


def test_estimate_kernel_refuses_0_255_images():
    from course_lib.kernelgan import KernelGANConfig, estimate_kernel

    with pytest.raises(ValueError, match=r"0-255|\[0, 1\]"):
        estimate_kernel(_img(3, 32, 32) * 255, 2, 1, progress=False, config=KernelGANConfig(crop_size=32))


@pytest.mark.parametrize("value", [0.0, 0.5])
def test_estimate_kernel_refuses_or_warns_about_a_constant_image(value):
    from course_lib.kernelgan import KernelGANConfig, estimate_kernel

    image = torch.full((3, 32, 32), value)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            estimate_kernel(image, 2, 1, progress=False, config=KernelGANConfig(crop_size=32))
        except ValueError as err:
            assert "constant" in str(err) or "flat" in str(err) or "zero" in str(err), err
            return
    assert caught, "a constant image gave a kernel without a warning"


# ------------------------------------------------------------------------------------------------
# command lines that did nothing
# ------------------------------------------------------------------------------------------------


def test_irn_train_zero_steps_writes_the_checkpoint_it_names_or_refuses(tmp_path, capsys):
    out = tmp_path / "irn.pt"
    try:
        code = irn.main(["train", "--scale", "2", "--steps", "0", "--out", str(out), "--profile", "test",
                         "--no-progress"])
    except SystemExit as exit_:  # argparse refusing --steps 0 is fine too
        code = exit_.code
    assert code != 0 or out.is_file(), capsys.readouterr().out


def test_python_m_course_lib_zssr_says_where_the_command_line_is(tmp_path):
    done = subprocess.run([sys.executable, "-m", "course_lib.zssr", str(tmp_path / "img.png"), "--scale", "2"],
                          capture_output=True, text=True, env=ENV, cwd=REPO, timeout=300)
    assert done.returncode == 2
    assert "no command line here" in done.stderr and "python -m course_lib blind" in done.stderr
    assert "course_lib.zssr.zssr(" in done.stderr and "Traceback" not in done.stderr


# ------------------------------------------------------------------------------------------------
# loaders: wrong sources, tags that disagree with the weights
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("source, match", [
    (2.0, r"got 2\.0 \(float\); for the shipped x2 model pass the int 2; the shipped scales are 2, 4"),
    (True, r"got True \(bool\).*the shipped scales are 2, 4"),
    ("2", r"no checkpoint file at '2'; for the shipped x2 model pass the int 2, not the string; the shipped scales"),
    (3, r"no shipped IRN checkpoint for scale 3; the shipped scales are 2, 4"),
    (None, r"got None.*the shipped scales are 2, 4"),
])
def test_load_irn_names_the_scale_and_the_shipped_ones(source, match):
    with pytest.raises((TypeError, ValueError, FileNotFoundError), match=match):
        irn.load_irn(source)


@pytest.mark.parametrize("source, match", [
    ("SR", r"'SR' is neither a shipped name nor a checkpoint file; did you mean 'sr'\?.*'sr' and 'rescale'"),
    (4, r"got 4 \(int\); for the scale pass scale=4; the shipped HCFlow checkpoints are 'sr' and 'rescale'"),
    ("runs/nowhere.pt", r"'runs/nowhere.pt' is neither a shipped name nor a checkpoint file; the shipped"),
])
def test_load_hcflow_names_the_shipped_ones(source, match):
    with pytest.raises((TypeError, ValueError, FileNotFoundError), match=match):
        load_hcflow(source)
    with pytest.raises(FileNotFoundError, match=r"no shipped HCFlow checkpoint for sr x2.*'sr' and 'rescale'"):
        load_hcflow("sr", scale=2)


@pytest.mark.parametrize("shipped, tag, weights", [("irn_x4.pt", "irn-x2", "x4"), ("irn_x2.pt", "irn-x4", "x2")])
def test_irn_checkpoint_whose_tag_and_weights_disagree(tmp_path, shipped, tag, weights):
    state = training.load_checkpoint(CHECKPOINTS / shipped)
    state = {k: v for k, v in state.items() if k != "model_config"}  # a legacy file: tag and weights only
    torch.save({**state, "tag": tag}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=rf"bad\.pt: the tag '{tag}' .* and the weights disagree: .* an {weights} IRN"):
        irn.load_irn(tmp_path / "bad.pt")


def test_irn_checkpoint_whose_model_config_does_not_fit_its_weights(tmp_path):
    state = training.load_checkpoint(CHECKPOINTS / "irn_x2.pt")
    config = {**irn.model_config(state), "growth": 5}
    torch.save({**state, "model_config": config}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=r"its tag 'irn-x2' and model_config .*'growth': 5.* disagree with its "
                                         "weights"):
        irn.load_irn(tmp_path / "bad.pt")


@pytest.mark.parametrize("tag", ["hcflow-rescale-x4", "hcflow-sr-x2"])
def test_hcflow_checkpoint_whose_tag_and_weights_disagree(tmp_path, tag):
    state = training.load_checkpoint(CHECKPOINTS / "hcflow_sr_x4.pt")
    torch.save({**state, "tag": tag}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=rf"tagged '{tag}' but its model_config build 'hcflow-sr-x4': the tag and "
                                         "the weights disagree"):
        load_hcflow(tmp_path / "bad.pt")


# ------------------------------------------------------------------------------------------------
# the package: lazy subpackages
# ------------------------------------------------------------------------------------------------


def test_course_lib_exposes_its_subpackages_lazily():
    code = (
        "import sys, course_lib\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('course_lib.'))\n"
        "assert loaded == [], loaded\n"
        "assert 'course_lib.hcflow' not in sys.modules\n"
        "assert {'data', 'hcflow', 'irn', 'kernelgan'} <= set(dir(course_lib))\n"
        "assert callable(course_lib.data.load_image)\n"
        "assert 'course_lib.data' in sys.modules and 'course_lib.hcflow' not in sys.modules\n"
        "assert course_lib.hcflow.load_hcflow is not None and 'course_lib.hcflow' in sys.modules\n"
        "try:\n"
        "    course_lib.nope\n"
        "except AttributeError as err:\n"
        "    assert 'kernelgan' in str(err), err\n"
        "else:\n"
        "    raise AssertionError('no AttributeError')\n"
        "names = {}\n"
        "exec('from course_lib import *', names)\n"
        "assert set(course_lib.__all__) <= set(names), sorted(names)\n"
        "assert names['zssr'].zssr is not None\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, cwd=REPO,
                          timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_version_stays_a_plain_literal_line():
    lines = (REPO / "course_lib" / "__init__.py").read_text().splitlines()
    assert sum(line.startswith('__version__ = "') and line.endswith('"') for line in lines) == 1
