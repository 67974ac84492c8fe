"""Fixtures that make the contract suite scope-agnostic.

Every test builds its guard through ``make_guard``, parametrised over :data:`SCOPES`: each
scope adds a branch here and runs the same tests unchanged. Host-scope guards of one test meet
in that test's own lock directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gpuguard import FakeClock, GpuGuard

from ._support import MakeGuard

SCOPES = ["in-process", "host"]


@pytest.fixture(params=SCOPES)
def scope(request: pytest.FixtureRequest) -> str:
    scope: str = request.param
    return scope


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_guard(scope: str, clock: FakeClock, tmp_path: Path) -> MakeGuard:
    """Build a guard of the scope under test on a FakeClock (``clock`` unless given one)."""

    def make(*, clock: FakeClock = clock, **options: Any) -> GpuGuard:
        if scope == "in-process":
            return GpuGuard(clock=clock, **options)
        if scope == "host":
            return GpuGuard.host(lock_dir=tmp_path / "locks", clock=clock, **options)
        raise NotImplementedError(scope)  # pragma: no cover - future scopes plug in here

    return make
