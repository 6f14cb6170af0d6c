"""benchmarks/gpu_budget.py: the notebooks' gpu values are parsed, the estimate adds up, and every
chapter is listed, within 14 GB, and (except where noted) within 20 minutes on a T4."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_budget():
    spec = importlib.util.spec_from_file_location("gpu_budget", ROOT / "benchmarks" / "gpu_budget.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_budget"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


gb = load_budget()

# Chapters whose gpu sizes belong to other chapters' owners and were over (or at) the limit when
# this test was written; the script prints the figures (see the report in benchmarks/RESULTS.md).
KNOWN_OVER: dict[str, str] = {}  # chapters whose estimate is over the budget, with the reason (none now)


def test_notebook_values_follow_the_choose_calls(tmp_path):
    ch5, ch6, ch3, ch7 = (gb.book_values(c) for c in ("ch5", "ch6", "ch3", "ch7"))
    assert ch5["0ffab803"]["gpu_minutes"] == 8 and ch5["e5f4a727"]["steps"] == 600
    assert ch6["73297604"]["gpu_steps"] == 20000 and ch6["73297604"]["gpu_minutes"] == 8
    assert ch6["8ff25db4"]["mse_steps"] == 3000
    assert ch3["ch3-24"]["sizes"]["batch_size"] == 32 and ch3["ch3-33"]["steps"] == 3000
    assert ch7["668152e9"]["S"]["zssr"]["__call__"] == "Z.ZSSRConfig"
    cell = {"cell_type": "code", "id": "x", "metadata": {}, "outputs": [], "source": [
        "SCALE, side = 4, config.choose(test=1, cpu=2, gpu=3)\n",
        "cfg = f(steps=config.choose(test=1, cpu=2, gpu=[5, 6]), other=x)\n",
        "opts = {'a': dict(k=1)}\n", "y = some_call(2)\n"]}
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps({"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    values = gb.notebook_values(path)["x"]
    assert values == {"SCALE": 4, "side": 3, "steps": [5, 6], "opts": {"a": {"k": 1}}}


def test_the_estimate_adds_up():
    gpu = gb.GPU()
    m = gb.Measured(flops=1e9, ops=100, activation_bytes=1e6, params=1000)
    cell = gb.Cell("chX", "id", "a loop", steps=10, measured=m, scale=100.0, runs=2, data_s=0.01)
    e = gb.estimate(cell, gpu)
    compute = max(1e11 / (gpu.fp32_flops * gpu.fp32_util), gpu.traffic * 1e8 / gpu.bandwidth, 100 * gpu.launch_s)
    assert e["step_s"] == pytest.approx(compute + 0.01) and e["seconds"] == pytest.approx(20 * (compute + 0.01))
    assert e["memory_gb"] == pytest.approx((1000 * 16 + 1e8 * gpu.overhead) / 1e9)
    capped = gb.estimate(gb.Cell("chX", "id", "capped", steps=10**6, measured=m, scale=100.0, amp=True,
                                 data_s=1.0, prefetched=True, max_seconds=60.0), gpu)
    assert capped["seconds"] == 60.0 and capped["step_s"] == 1.0 and capped["steps"] == 60
    assert capped["activations_gb"] == pytest.approx(0.1 * gpu.amp_activations)


@pytest.fixture(scope="module")
def budget(tmp_path_factory):
    out = tmp_path_factory.mktemp("budget") / "budget.json"
    status = gb.main(["--json", str(out)])
    return status, json.loads(out.read_text())


def test_every_chapter_is_listed_and_fits_14_gb(budget, capsys):
    _, result = budget
    assert sorted(result) == sorted(gb.CHAPTERS)
    for chapter, r in result.items():
        assert r["cells"], chapter
        assert r["memory_gb"] <= 14.0, (chapter, r["memory_gb"])


@pytest.mark.parametrize("chapter", [
    pytest.param(c, marks=pytest.mark.xfail(reason=KNOWN_OVER[c], strict=False)) if c in KNOWN_OVER else c
    for c in gb.CHAPTERS])
def test_chapter_runs_within_20_minutes_on_a_t4(budget, chapter):
    _, result = budget
    assert result[chapter]["seconds"] <= 20 * 60, (chapter, result[chapter]["seconds"] / 60)
    assert result[chapter]["pass"]


def test_smoke_script_dry_run_on_one_chapter():
    import subprocess

    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_smoke.sh"), "--dry-run", "--chapters", "ch2",
                           "--max-steps", "5"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "capped at 5 steps" in proc.stdout and "ch2_ill_posedness" in proc.stdout and " ok" in proc.stdout
    bad = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_smoke.sh"), "--max-steps", "x"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "positive integer" in bad.stderr
