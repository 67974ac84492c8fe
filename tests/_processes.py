"""Looking at other processes from outside: alive or not, stopped or not, whose child."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

POLL_LIMIT_S = 30.0
"""Bound on waiting for another process's state (it has no event to wait on): fail, never hang."""


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    return text.rsplit(")", 1)[1].split()


def gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie counts: it runs nothing)."""
    stat = _stat(pid)
    return stat is None or stat[0] == "Z"


def state_of(pid: int) -> str | None:
    """``/proc``'s one-letter state of ``pid`` (``T``: stopped); None once it is gone."""
    stat = _stat(pid)
    return None if stat is None else stat[0]


def parent_of(pid: int) -> int | None:
    """The parent of a living ``pid``; None once it is gone."""
    stat = _stat(pid)
    return None if stat is None or stat[0] == "Z" else int(stat[1])


def wait_for(condition_met: Callable[[], bool], what: str) -> None:
    """A bounded readiness poll of another process (run it in a thread from async tests)."""
    deadline = time.monotonic() + POLL_LIMIT_S
    while not condition_met():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)
