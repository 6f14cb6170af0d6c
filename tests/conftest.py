"""Shared test set-up: the `test` profile and one torch thread, so tests are fast and repeatable."""

import os

os.environ.setdefault("COURSE_PROFILE", "test")

import torch  # noqa: E402

torch.set_num_threads(1)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "distributed: launches several processes with torchrun (deselect with -m 'not distributed')")
