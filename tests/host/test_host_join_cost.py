"""A request of the host scope joins with one decision under the directory's lock.

The decision that finds the GPU busy queues the request and answers with its place in line
and the holder, which is all its ``waiting`` event says: no try first, no look afterwards.
Only decisions taken on the test's own thread count (the watcher thread takes its own).
"""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

from gpuguard import GpuGuard, GpuStatus
from gpuguard.guard.scopes.host import HostArbiter
from gpuguard.guard.scopes.host._lease_dir import LeaseDir
from gpuguard.guard.scopes.host._state import State

from ..guard._support import gpu_events


def count_decisions(guard: GpuGuard) -> list[str]:
    """Every decision the host arbiter of ``guard`` takes on this thread from now on."""
    arbiter = guard._arbiter  # the test looks inside the scope
    assert isinstance(arbiter, HostArbiter)
    decisions = arbiter._decisions
    decide = decisions.decide
    here = threading.get_ident()
    taken: list[str] = []

    def counted(lease_dir: LeaseDir, now: float) -> State:
        if threading.get_ident() == here:
            taken.append("decide")
        return decide(lease_dir, now)

    decisions.decide = counted  # type: ignore[method-assign]
    return taken


async def test_a_request_that_must_wait_joins_with_one_decision(tmp_path: Path) -> None:
    guard = GpuGuard.host(f"join-{uuid.uuid4().hex[:8]}", lock_dir=tmp_path / "locks")
    try:
        sub = guard.events.subscribe()
        holder = await guard.acquire("load")
        ahead = guard.hold("embed")
        assert await ahead.reserve()
        taken = count_decisions(guard)
        hold = guard.hold("chat")
        assert await hold.reserve()  # queued
        assert taken == ["decide"]
        waiting = [e for e in gpu_events(sub) if e.status is GpuStatus.WAITING]
        assert [(e.operation, e.position) for e in waiting] == [("embed", 1), ("chat", 2)]
        assert waiting[1].holder is not None
        assert "load" in waiting[1].holder
        await hold.aclose()
        await ahead.aclose()
        holder.release()
    finally:
        await guard.aclose()


async def test_a_request_granted_at_once_is_one_decision_and_never_waits(tmp_path: Path) -> None:
    guard = GpuGuard.host(f"join-{uuid.uuid4().hex[:8]}", lock_dir=tmp_path / "locks")
    try:
        sub = guard.events.subscribe()
        taken = count_decisions(guard)
        hold = guard.hold("chat")
        assert not await hold.reserve()  # granted at once
        assert taken == ["decide"]
        async with hold:
            pass
        assert [e.status for e in gpu_events(sub)] == [GpuStatus.STARTED, GpuStatus.COMPLETED]
        assert guard.snapshot().counters.waited == 0
    finally:
        await guard.aclose()
