import pytest
import torch

from course_lib import config


def test_profile_from_environment(monkeypatch):
    for name in ("test", "cpu"):
        monkeypatch.setenv("COURSE_PROFILE", name)
        assert config.get_profile() == name
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("COURSE_PROFILE", " GPU ")
    assert config.get_profile() == "gpu"


def test_gpu_profile_without_cuda_warns(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("COURSE_PROFILE", "gpu")
    with pytest.warns(RuntimeWarning, match="no CUDA GPU is available"):
        assert config.get_profile() == "gpu"


def test_bad_thread_count_names_the_variable(monkeypatch):
    monkeypatch.setenv("COURSE_THREADS", "abc")
    with pytest.raises(ValueError, match="COURSE_THREADS='abc'"):
        config.set_threads()
    with pytest.raises(ValueError, match="at least 1"):
        config.set_threads(0)


def test_default_profile_follows_hardware(monkeypatch):
    monkeypatch.delenv("COURSE_PROFILE", raising=False)
    expected = "gpu" if torch.cuda.is_available() else "cpu"
    assert config.get_profile() == expected


def test_unknown_profile_is_named(monkeypatch):
    monkeypatch.setenv("COURSE_PROFILE", "fast")
    with pytest.raises(ValueError, match="'fast'"):
        config.get_profile()


def test_choose_picks_the_active_profile(monkeypatch):
    monkeypatch.setenv("COURSE_PROFILE", "cpu")
    assert config.choose(test=1, cpu=2, gpu=3) == 2
    assert config.choose(test=1, cpu=2, gpu=3, profile="gpu") == 3
    with pytest.raises(ValueError):
        config.choose(test=1, cpu=2, gpu=3, profile="tpu")


def test_test_profile_uses_cpu(monkeypatch):
    monkeypatch.setenv("COURSE_PROFILE", "test")
    assert config.get_device().type == "cpu"
    assert config.get_device("cpu").type == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_asking_for_missing_cuda_fails():
    with pytest.raises(ValueError, match="CUDA"):
        config.get_device("cuda")


def test_seed_everything_repeats_random_draws():
    import random

    import numpy as np

    g = config.seed_everything(123)
    a = (random.random(), np.random.rand(), torch.rand(3), torch.rand(2, generator=g))
    g = config.seed_everything(123)
    b = (random.random(), np.random.rand(), torch.rand(3), torch.rand(2, generator=g))
    assert a[0] == b[0] and a[1] == b[1]
    assert torch.equal(a[2], b[2]) and torch.equal(a[3], b[3])
    config.seed_everything(124)
    assert not torch.equal(torch.rand(3), b[2])
    with pytest.raises(TypeError):
        config.seed_everything(1.5)


def test_threads(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("COURSE_THREADS", raising=False)
        monkeypatch.setenv("COURSE_PROFILE", "test")
        assert config.set_threads() == 1 and torch.get_num_threads() == 1
        monkeypatch.setenv("COURSE_THREADS", "2")
        assert config.set_threads() == 2 and torch.get_num_threads() == 2
        with pytest.raises(ValueError):
            config.set_threads(0)
    finally:
        torch.set_num_threads(before)


def test_setup_prints_profile(monkeypatch, capsys):
    monkeypatch.setenv("COURSE_PROFILE", "test")
    profile, device = config.setup(seed=0)
    assert profile == "test" and device.type == "cpu"
    assert "profile: test" in capsys.readouterr().out
