"""The host-wide lease on disk: the lock directory and the state file's contents.

Kept apart from the decisions (:mod:`._arbiter`): where the files live, who may use them, and
how the state is written and read back.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...._events import Priority
from ...._exceptions import ConfigError
from ..._tickets import Owner, Ticket

__all__ = ["Entry", "State", "default_lock_dir", "prepare_lock_dir"]

_UNSAFE_BITS = stat.S_IWGRP | stat.S_IWOTH
_READ_CHUNK = 1 << 16


def default_lock_dir() -> Path:
    """``$XDG_RUNTIME_DIR/gpuguard``, else ``/dev/shm/gpuguard-<uid>``, else ``/tmp/...``.

    All are per-host; the first two are in memory (tmpfs), where creating and removing the
    request files costs a fraction of a disk file system's time.
    """
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "gpuguard"
    shared_memory = Path("/dev/shm")
    base = shared_memory if shared_memory.is_dir() else Path("/tmp")
    return base / f"gpuguard-{os.getuid()}"


def prepare_lock_dir(path: Path) -> Path:
    """Create ``path`` owner-only (0700) if needed; refuse one another user could tamper with."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.stat()
    if info.st_uid != os.getuid():
        raise ConfigError(f"GPU lock directory {path} belongs to another user (uid {info.st_uid})")
    if info.st_mode & _UNSAFE_BITS:
        raise ConfigError(
            f"GPU lock directory {path} is writable by group or others "
            f"(mode {stat.filemode(info.st_mode)}); another user could take or break the lease"
        )
    return path


@dataclass(frozen=True, slots=True)
class Entry:
    """A request (waiting or holding) as every process sees it."""

    seq: int
    ticket: Ticket
    enqueued_at: float


HolderRecord = tuple[int, float, float | None]
"""The holder: its entry's ``seq``, when it was granted, since when it hangs."""


@dataclass(slots=True)
class State:
    """The lease: the next ticket number, the holder, and every live request by ``seq``."""

    next_seq: int
    holder: HolderRecord | None
    requests: dict[int, Entry]
    size: int
    """Bytes the file held when read: a shorter write pads over the rest."""

    @staticmethod
    def read(fd: int) -> State:
        """Read the state file (empty or unreadable: a fresh lease)."""
        raw = b""
        while chunk := os.pread(fd, _READ_CHUNK, len(raw)):
            raw += chunk
            if len(chunk) < _READ_CHUNK:
                break
        try:
            data = json.loads(raw)
            holder = data["holder"]
            return State(
                int(data["next"]),
                None if holder is None else (int(holder[0]), float(holder[1]), holder[2]),
                {int(seq): _entry(int(seq), fields) for seq, fields in data["requests"].items()},
                len(raw),
            )
        except (ValueError, KeyError, TypeError, IndexError):
            return State(0, None, {}, len(raw))

    def write(self, fd: int) -> None:
        """Write it back in one ``pwrite`` (padded with spaces, which JSON ignores)."""
        requests = {str(seq): _fields(entry) for seq, entry in self.requests.items()}
        raw = json.dumps({"next": self.next_seq, "holder": self.holder, "requests": requests})
        data = raw.encode().ljust(self.size)
        os.pwrite(fd, data, 0)
        self.size = len(data)


def _fields(entry: Entry) -> list[object]:
    ticket, owner = entry.ticket, entry.ticket.owner
    return [
        ticket.lease_id,
        ticket.operation,
        ticket.model,
        int(ticket.priority),
        owner.pid,
        owner.host,
        owner.process,
        entry.enqueued_at,
    ]


def _entry(seq: int, fields: list[Any]) -> Entry:
    lease_id, operation, model, priority, pid, host, process, enqueued_at = fields
    ticket = Ticket(
        int(lease_id),
        str(operation),
        None if model is None else str(model),
        Priority(int(priority)),
        Owner(int(pid), str(host), str(process)),
    )
    return Entry(seq, ticket, float(enqueued_at))
