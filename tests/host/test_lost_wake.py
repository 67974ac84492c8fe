"""A wake that never comes (a datagram dropped, an entry watch lost) strands no waiter: the
watcher looks again on its own within ``LOOK_AGAIN_S``. Real processes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gpuguard import GpuGuard
from gpuguard.guard.scopes.host import _requests, _wake

from .conftest import Processes, finish, line


async def test_a_waiter_whose_wake_is_lost_is_still_served(
    tmp_path: Path, processes: Processes, monkeypatch: pytest.MonkeyPatch
) -> None:
    holder = await processes.fault("hold", str(tmp_path), "train", "600")
    assert await line(holder) == "held"
    opened = _wake.Inbox.open

    def unreachable(inbox: _wake.Inbox) -> str:  # the name others post to leads nowhere
        return f"nobody-{opened(inbox)}"

    monkeypatch.setattr(_wake.Inbox, "open", unreachable)
    monkeypatch.setattr(_requests.Requests, "_watch_entry", lambda self, seq, fd: None)
    guard = GpuGuard.host(lock_dir=tmp_path, wait_timeout=None)
    waiting = guard.hold("next")
    assert await waiting.reserve()  # queued behind the holder, watching nothing
    assert await finish(holder) == 0
    async with asyncio.timeout(10 * _requests.LOOK_AGAIN_S):
        async with waiting as lease:
            assert lease.operation == "next"
