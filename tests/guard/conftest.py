"""Fixtures that make the contract suite scope-agnostic.

Every test builds its guard through ``make_guard``, parametrised over :data:`SCOPES`. Today
only the in-process guard exists; the host-wide and Redis scopes add a branch here and run
the same tests unchanged.
"""

from __future__ import annotations

from typing import Any

import pytest

from gpuguard import FakeClock, GpuGuard

from ._support import MakeGuard

SCOPES = ["in-process"]


@pytest.fixture(params=SCOPES)
def scope(request: pytest.FixtureRequest) -> str:
    scope: str = request.param
    return scope


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_guard(scope: str, clock: FakeClock) -> MakeGuard:
    """Build a guard of the scope under test on a FakeClock (``clock`` unless given one)."""

    def make(*, clock: FakeClock = clock, **options: Any) -> GpuGuard:
        if scope == "in-process":
            return GpuGuard(clock=clock, **options)
        raise NotImplementedError(scope)  # pragma: no cover - future scopes plug in here

    return make
