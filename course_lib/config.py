"""Run profiles, device choice, seeding and thread count.

One switch, the environment variable ``COURSE_PROFILE``, sets the size of every experiment:

* ``test``: what CI and ``pytest --nbmake book/`` use; seconds per notebook on 2 CPU cores.
* ``cpu``: a reader on a laptop; a few minutes per chapter, results already meaningful.
* ``gpu``: Colab or a workstation; the real training runs.

Without the variable the profile follows the hardware: ``gpu`` when CUDA is available, else
``cpu``. Notebooks ask for sizes with :func:`choose`, e.g. ``steps = choose(test=20, cpu=500,
gpu=5000)``, so the same cell is right under every profile.
"""

from __future__ import annotations

import os
import random
import warnings
from typing import TypeVar

import numpy as np
import torch

__all__ = ["PROFILES", "ENV_VAR", "STATIC_BUILD_VAR", "get_profile", "is_static_build", "choose", "get_device",
           "seed_everything", "set_threads", "setup"]

PROFILES = ("test", "cpu", "gpu")
ENV_VAR = "COURSE_PROFILE"
STATIC_BUILD_VAR = "COURSE_STATIC_BUILD"

T = TypeVar("T")


def get_profile() -> str:
    """Return the active profile: ``$COURSE_PROFILE`` if set, else ``gpu`` with CUDA, else ``cpu``."""
    value = os.environ.get(ENV_VAR, "").strip().lower()
    if value:
        if value not in PROFILES:
            raise ValueError(f"{ENV_VAR}={value!r} is not a profile; choose one of {PROFILES}")
        if value == "gpu" and not torch.cuda.is_available():
            warnings.warn(f"{ENV_VAR}=gpu but no CUDA GPU is available: the gpu profile's paper-size models would "
                          "train on the CPU, hours per chapter. Use COURSE_PROFILE=cpu on a CPU.", RuntimeWarning,
                          stacklevel=2)
        return value
    return "gpu" if torch.cuda.is_available() else "cpu"


def is_static_build() -> bool:
    """True while the HTML book is being built (set by the book's Sphinx extension).

    A static page has no kernel: widgets and live progress bars cannot work there, so the
    library prints a one-line summary instead of a progress bar and skips ipywidgets explorers.
    """
    return os.environ.get(STATIC_BUILD_VAR, "") not in ("", "0")


def choose(*, test: T, cpu: T, gpu: T, profile: str | None = None) -> T:
    """Pick the value that belongs to the active (or given) profile."""
    profile = profile or get_profile()
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {PROFILES}")
    return {"test": test, "cpu": cpu, "gpu": gpu}[profile]


def get_device(prefer: str | None = None) -> torch.device:
    """Choose the compute device: ``prefer`` if given, else CUDA, then Apple MPS, then CPU.

    Under the ``test`` profile the CPU is always used so that tests give the same numbers
    everywhere.
    """
    if prefer is not None:
        device = torch.device(prefer)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("device 'cuda' was asked for but CUDA is not available")
        return device
    if get_profile() == "test":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python, NumPy and PyTorch (CPU and CUDA); return a CPU generator seeded the same way."""
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    return torch.Generator().manual_seed(seed)


def set_threads(n: int | None = None) -> int:
    """Set torch's intra-op thread count and return it.

    ``n`` defaults to ``$COURSE_THREADS``, else 1 under the ``test`` profile (several notebooks
    then run side by side without oversubscribing the cores), else all cores.
    """
    if n is None:
        env = os.environ.get("COURSE_THREADS", "").strip()
        if env:
            try:
                n = int(env)
            except ValueError:
                raise ValueError(f"COURSE_THREADS={env!r} is not a whole number of threads "
                                 "(e.g. COURSE_THREADS=2)") from None
        elif get_profile() == "test":
            n = 1
        else:
            n = os.cpu_count() or 1
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"thread count must be an int of at least 1, got {n!r}")
    torch.set_num_threads(n)
    return n


def setup(seed: int = 0, *, verbose: bool = True) -> tuple[str, torch.device]:
    """The notebooks' one-line start: set threads, seed everything, print profile and device."""
    profile = get_profile()
    threads = set_threads()
    seed_everything(seed)
    device = get_device()
    if verbose:
        print(f"profile: {profile} | device: {device} | torch threads: {threads} | seed: {seed}")
    return profile, device
