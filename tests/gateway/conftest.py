"""Fixtures of the gateway tests."""

from __future__ import annotations

import pytest

from gpuguard.devices import FakeDevices


@pytest.fixture
def devices() -> FakeDevices:
    """One fake 24 GiB GPU."""
    return FakeDevices.with_gpus(24 * 1024)
