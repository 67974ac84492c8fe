"""What the kernel says about a process of this host (``/proc``): its state and its name."""

from __future__ import annotations

import socket
from functools import cache

__all__ = ["hostname", "process_name", "process_state"]


def process_state(pid: int, host: str | None = None) -> str | None:
    """The kernel's one-letter state of ``pid`` (``R``, ``S``, ``T``...), None if unknown.

    Only for processes of this ``host`` (default: this one); pids of another host or pid
    namespace mean nothing here.
    """
    if host is not None and host != hostname():
        return None
    raw = _stat(pid)
    # "pid (comm) S ...": comm may hold spaces and parentheses; the state follows the last ')'.
    fields = raw[raw.rfind(b")") + 1 :].split() if raw else []
    return fields[0].decode() if fields else None


def process_name(pid: int) -> str:
    """The kernel's short name of ``pid`` on this host (``comm``), ``?`` if unknown."""
    raw = _stat(pid)
    start, end = raw.find(b"("), raw.rfind(b")")
    if not raw or start < 0 or end < start:
        return "?"
    return raw[start + 1 : end].decode(errors="replace")


def _stat(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read()
    except OSError:
        return b""


@cache
def hostname() -> str:
    """The name of this host, as tickets record it."""
    return socket.gethostname()
