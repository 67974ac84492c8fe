"""Fixtures for the whole suite."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def private_gpu_lock_dir(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Host-scope guards built from settings (the default) meet in a directory of their own test.

    Without it every server a test starts would share the lease of this user's real GPU, and
    of any other test run on the machine. Subprocesses inherit it through the environment.
    """
    path = tmp_path_factory.mktemp("gpu-locks")
    monkeypatch.setenv("GPUGUARD_GUARD__LOCK_DIR", str(path))
    return path
