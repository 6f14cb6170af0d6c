"""The KernelGAN benchmark script end to end, at toy sizes: its figures of record come from it."""

import json
import runpy
import sys
from pathlib import Path

import pytest
import torch

from course_lib.degradation import kernel_covariance, mean_div2krk_kernel
from course_lib.kernelgan import kernel_error

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_kernelgan.py"
TINY = ["--images", "1", "--kernels-per-image", "2", "--hr-size", "160", "--iterations", "4", "--g-channels", "8",
        "--zssr-steps", "2", "--zssr-channels", "8", "--zssr-layers", "2", "--zssr-crop", "32", "--mu", "2e-3", "--threads", "1",
        "--device", "cpu", "--fkp-iterations", "4"]


def run_bench(monkeypatch, capsys, *args: str) -> str:
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), *args])
    runpy.run_path(str(SCRIPT), run_name="__main__")
    return capsys.readouterr().out


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_benchmark_shards_reload_and_summarise(tmp_path, monkeypatch, capsys):
    kernels, whole = tmp_path / "kernels.pt", tmp_path / "whole.jsonl"
    out = run_bench(monkeypatch, capsys, *TINY, "--zssr-kernels", "bicubic", "--save-kernels", str(kernels),
                    "--results", str(whole))
    rows = read_rows(whole)
    assert [(r["photo"], r["kernel_index"]) for r in rows] == [("astronaut", 0), ("astronaut", 1)]
    assert rows[0]["lr_size"] == [80, 80] and rows[0]["kernel error true"] == 0.0
    assert "ZSSR PSNR bicubic" in rows[0] and "ZSSR PSNR KernelGAN" not in rows[0]
    assert "Wiener mu=0.002: KernelGAN kernel" in out
    # kernel size = trace of the covariance, elongation = ratio of the principal standard deviations
    saved = torch.load(kernels, weights_only=False)
    for row, case in zip(rows, saved):
        for label, kernel in (("true", case["true"]), ("KernelGAN", case["estimate"])):
            variances = torch.linalg.eigvalsh(kernel_covariance(kernel))
            assert row[f"kernel size {label}"] == pytest.approx(float(variances.sum()))
            assert row[f"kernel elongation {label}"] == pytest.approx(float((variances[1] / variances[0]).sqrt()))
    assert "kernel size bicubic" not in rows[0]
    # the prior-mean baseline: scored like the other kernels, its gain summarised
    prior = mean_div2krk_kernel(2, 21)
    assert rows[0]["kernel error prior mean"] == pytest.approx(kernel_error(prior, saved[0]["true"]))
    assert "Wiener mu=0.002 PSNR prior mean" in rows[0] and "ZSSR PSNR prior mean" not in rows[0]
    assert "Wiener mu=0.002: prior mean kernel" in out
    # the KernelGAN-FKP row: scored like the others, timed, and compared with the prior mean
    assert "Wiener mu=0.002 PSNR KernelGAN-FKP" in rows[0] and "fkp_cpu_seconds" in rows[0]
    assert rows[0]["kernel error KernelGAN-FKP"] == pytest.approx(kernel_error(saved[0]["fkp_estimate"], saved[0]["true"]))
    over_prior = [r["Wiener mu=0.002 PSNR KernelGAN-FKP"] - r["Wiener mu=0.002 PSNR prior mean"] for r in rows]
    assert f"Wiener mu=0.002: KernelGAN-FKP kernel {sum(over_prior) / 2:+.2f}" in out
    assert "of the true kernel's gain over bicubic" in out

    # the two shards of a rerun from the saved kernels give the same figures, without KernelGAN
    parts = [tmp_path / f"shard{k}.jsonl" for k in (0, 1)]
    for k, part in enumerate(parts):
        run_bench(monkeypatch, capsys, *TINY, "--zssr-kernels", "bicubic", "KernelGAN", "--load-kernels",
                  str(kernels), "--shard", f"{k}/2", "--results", str(part))
    reloaded = read_rows(parts[0]) + read_rows(parts[1])
    assert [r["kernel_index"] for r in reloaded] == [0, 1]
    for before, after in zip(rows, reloaded):
        for key in ("Wiener mu=0.002 PSNR KernelGAN", "kernel error KernelGAN", "ZSSR PSNR bicubic"):
            assert after[key] == pytest.approx(before[key], abs=1e-9)

    summary = run_bench(monkeypatch, capsys, "--summarise", *map(str, parts))
    gains = [r["ZSSR PSNR KernelGAN"] - r["ZSSR PSNR bicubic"] for r in reloaded]
    assert "mean over 2 case(s)" in summary
    assert f"ZSSR: KernelGAN kernel {sum(gains) / 2:+.2f}" in summary


def test_benchmark_rejects_a_bad_shard(monkeypatch, capsys):
    with pytest.raises(SystemExit):
        run_bench(monkeypatch, capsys, "--shard", "2/2")
    assert "0 <= K < N" in capsys.readouterr().err


def test_benchmark_ablation_switches_regularizers_off(tmp_path, monkeypatch, capsys):
    import course_lib.kernelgan as kg

    configs = []
    estimate = kg.estimate_kernel

    def spy(*args, **kwargs):
        configs.append(kwargs["config"])
        return estimate(*args, **kwargs)

    monkeypatch.setattr(kg, "estimate_kernel", spy)
    out = run_bench(monkeypatch, capsys, *TINY, "--kernels-per-image", "1", "--no-zssr", "--without", "sparsity",
                    "centre")
    assert "without ['sparsity', 'centre']" in out
    assert [c.regularizers for c in configs] == [("bicubic", "sum_to_one", "boundaries")]
    with pytest.raises(SystemExit):
        run_bench(monkeypatch, capsys, "--without", "smoothness")
