"""The host-wide arbiter: one GPU lease shared by every process on this machine.

Same rules as :class:`~gpuguard._arbiter.LocalArbiter` (one holder, no queue jumping,
:class:`~gpuguard._queue.WaiterQueue` service order, nobody waits while nobody holds), kept in a
lock directory (one subdirectory per GPU name):

* ``state``: every decision takes an exclusive ``flock`` on it for a few microseconds, so each
  grant is atomic across processes. It stores the host-wide ticket counter (FIFO across
  processes) and which request holds the GPU, since when, and since when it hangs.
* ``entries/<ticket>``: one file per request (waiting or holding), created and ``flock``-ed by
  its process for the request's whole life. The kernel drops that lock when the process dies
  (SIGKILL, OOM kill), so a dead request is recognisable at once (its lock can be taken) and
  whoever looks next removes it. A holder whose entry is dead holds nothing.

Liveness therefore comes from the kernel, never from timers. Wake-ups are pushed: a process
with queued requests runs one watcher thread blocked in ``flock(LOCK_SH)`` on the holder's
entry; the kernel wakes it the moment the holder releases or dies, and it re-decides. A release
grants the next waiter in the same step; when that waiter belongs to the releasing guard it is
told synchronously, as in one process. ``time.monotonic()`` is system-wide on Linux, so waiting
times (aging) compare across processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import stat
import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._arbiter import Grant, OnGrant, Owner, Queued, Ticket
from ._clock import Clock
from ._events import Priority
from ._exceptions import ConfigError
from ._queue import WaiterQueue

__all__ = ["HostArbiter", "default_lock_dir", "prepare_lock_dir"]

_UNSAFE_BITS = stat.S_IWGRP | stat.S_IWOTH


def default_lock_dir() -> Path:
    """``$XDG_RUNTIME_DIR/gpuguard``, else ``/tmp/gpuguard-<uid>``."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "gpuguard"
    return Path(f"/tmp/gpuguard-{os.getuid()}")


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


@dataclass(eq=False)
class _Request:
    """A request of this arbiter: its entry file stays locked while it waits or holds."""

    seq: int
    ticket: Ticket
    enqueued_at: float
    fd: int
    future: asyncio.Future[None] | None = None
    loop: asyncio.AbstractEventLoop | None = None
    delivered: bool = False
    scheduled: bool = False


@dataclass(frozen=True, slots=True)
class _Entry:
    seq: int
    ticket: Ticket
    enqueued_at: float


@dataclass(slots=True)
class _View:
    """The lease as read under the state lock, dead entries already removed."""

    next_seq: int
    holder: Grant | None
    holder_seq: int | None
    waiting: WaiterQueue[_Entry]


class HostArbiter:
    """Grants across the processes of one host through files, ``flock`` and the kernel."""

    scope = "host"

    def __init__(
        self, name: str, *, lock_dir: Path | str | None, aging_s: float | None, clock: Clock
    ) -> None:
        if not name or not all(c.isalnum() or c in "._-" for c in name) or name[0] == ".":
            raise ValueError(f"GPU name {name!r} must be letters, digits, '.', '_' or '-'")
        root = prepare_lock_dir(Path(lock_dir) if lock_dir is not None else default_lock_dir())
        self.directory = root / name
        self._entries = self.directory / "entries"
        self.directory.mkdir(mode=0o700, exist_ok=True)
        self._entries.mkdir(mode=0o700, exist_ok=True)
        self._aging_s = aging_s
        WaiterQueue[_Entry](aging_s=aging_s)  # reject an impossible aging_s at once
        self._clock = clock
        self._state_fd = os.open(self.directory / "state", os.O_RDWR | os.O_CREAT, 0o600)
        weakref.finalize(self, os.close, self._state_fd)
        self._lock = threading.Lock()
        self._mine: dict[int, _Request] = {}
        self._by_lease: dict[int, int] = {}
        self._changed = threading.Event()
        self._watching = False
        self._on_grant: OnGrant = _ignore_grant

    def bind(self, on_grant: OnGrant) -> None:
        """Set the grant callback."""
        self._on_grant = on_grant

    # --- the Arbiter protocol --------------------------------------------------------------

    def try_acquire(self, ticket: Ticket, now: float) -> bool:
        """Grant at once if nobody on this host holds or waits."""
        with self._locked():
            view = self._decide(now)
            if view.holder is not None or len(view.waiting):
                return False
            request = self._new_request(view, ticket, now)
            request.delivered = True
            self._write_state(view.next_seq, (request.seq, now, None))
        return True

    def enqueue(self, ticket: Ticket, now: float) -> asyncio.Future[None]:
        """Queue ``ticket`` host-wide; the watcher thread learns of its grant."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self._locked():
            view = self._read()
            request = self._new_request(view, ticket, now)
            request.future, request.loop = future, loop
            self._write_state(view.next_seq, self._holder_tuple(view))
            self._decide(now)  # the holder may have gone since the caller looked
            start = not self._watching
            self._watching = True
        self._changed.set()
        if start:
            threading.Thread(target=self._watch, name="gpuguard-host-watch", daemon=True).start()
        return future

    def withdraw(self, ticket: Ticket) -> bool:
        """Leave the line; a grant this guard was not told of yet is handed on instead."""
        granted: _Request | None = None
        with self._locked():
            request = self._mine.get(self._by_lease.get(ticket.lease_id, -1))
            if request is None or request.delivered:
                return False
            holder_seq = self._read().holder_seq
            self._drop(request)
            if holder_seq == request.seq:
                granted = self._grant_next(self._read(), self._clock.monotonic())
                if granted is not None:
                    self._schedule(granted)
        self._changed.set()
        return True

    def release(self, ticket: Ticket, now: float) -> None:
        """Free the GPU and grant the next live waiter on this host."""
        granted: _Request | None = None
        with self._locked():
            request = self._mine.get(self._by_lease.get(ticket.lease_id, -1))
            if request is None:
                return
            holder_seq = self._read().holder_seq
            self._drop(request)
            if holder_seq == request.seq:
                granted = self._grant_next(self._read(), now)
                if granted is not None:
                    granted.delivered = True
        self._changed.set()
        if granted is not None:
            self._deliver_now(granted, now)

    def mark_hung(self, ticket: Ticket, now: float) -> None:
        """Record since when the holder hangs, for every process to see."""
        with self._locked():
            seq = self._by_lease.get(ticket.lease_id)
            view = self._read()
            if seq is not None and view.holder is not None and view.holder_seq == seq:
                self._write_state(view.next_seq, (seq, view.holder.granted_at, now))

    def holder(self) -> Grant | None:
        """The holder, in whichever process it is."""
        with self._locked():
            return self._decide(self._clock.monotonic()).holder

    def waiters(self, now: float) -> list[Queued]:
        """Every waiter on this host, in service order."""
        with self._locked():
            queue = self._decide(now).waiting
        return [
            Queued(e.item.ticket, e.enqueued_at, queue.effective_priority(e, now))
            for e in queue.order(now)
        ]

    def queue_length(self) -> int:
        """How many wait on this host."""
        with self._locked():
            return len(self._decide(self._clock.monotonic()).waiting)

    def __repr__(self) -> str:
        return f"<HostArbiter {str(self.directory)!r} requests here={len(self._mine)}>"

    # --- decisions (under the state lock) --------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # The thread lock keeps this process's threads apart (they share the state file's
        # open file description, which flock does not tell apart); flock keeps processes apart.
        with self._lock:
            fcntl.flock(self._state_fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._state_fd, fcntl.LOCK_UN)

    def _decide(self, now: float) -> _View:
        """Read the lease; if nobody holds, grant the next waiter (its process is told)."""
        view = self._read()
        if view.holder is None and len(view.waiting):
            granted = self._grant_next(view, now)
            if granted is not None:
                self._schedule(granted)
            view = self._read()
        elif view.holder_seq in self._mine:
            self._schedule(self._mine[view.holder_seq])
        return view

    def _grant_next(self, view: _View, now: float) -> _Request | None:
        """Make the next waiter the holder; return it if it is this arbiter's own."""
        while len(view.waiting):
            entry = view.waiting.pop_next(now).item
            mine = self._mine.get(entry.seq)
            if mine is not None and mine.future is not None and mine.future.done():
                self._drop(mine)  # its task was cancelled and has not run yet; it cleans up
                continue
            self._write_state(view.next_seq, (entry.seq, now, None))
            return mine
        return None

    def _read(self) -> _View:
        next_seq, holder = self._read_state()
        queue: WaiterQueue[_Entry] = WaiterQueue(aging_s=self._aging_s)
        grant: Grant | None = None
        holder_seq: int | None = None
        for name in sorted(os.listdir(self._entries), key=_seq_of):
            entry = self._live_entry(name)
            if entry is None:
                continue
            next_seq = max(next_seq, entry.seq + 1)
            if holder is not None and entry.seq == holder[0]:
                grant = Grant(entry.ticket, holder[1], holder[2])
                holder_seq = entry.seq
            else:
                queue.push(entry.seq, entry.ticket.priority, entry.enqueued_at, entry)
        return _View(next_seq, grant, holder_seq, queue)

    def _live_entry(self, name: str) -> _Entry | None:
        """The entry named ``name`` if its process still locks it; remove it if not."""
        seq = _seq_of(name)
        mine = self._mine.get(seq)
        if mine is not None:
            return _Entry(seq, mine.ticket, mine.enqueued_at)
        path = self._entries / name
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return _parse_entry(seq, os.read(fd, 65536))
            path.unlink(missing_ok=True)  # its process is gone: the kernel dropped its lock
            return None
        finally:
            os.close(fd)

    def _new_request(self, view: _View, ticket: Ticket, now: float) -> _Request:
        seq = view.next_seq
        view.next_seq += 1
        fd = os.open(self._entries / f"{seq:020d}", os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, _dump_entry(ticket, now))
        request = _Request(seq, ticket, now, fd)
        self._mine[seq] = request
        self._by_lease[ticket.lease_id] = seq
        return request

    def _drop(self, request: _Request) -> None:
        """Remove this arbiter's request: unlink its entry, then let go of its lock."""
        (self._entries / f"{request.seq:020d}").unlink(missing_ok=True)
        os.close(request.fd)
        self._mine.pop(request.seq, None)
        if self._by_lease.get(request.ticket.lease_id) == request.seq:
            del self._by_lease[request.ticket.lease_id]

    def _read_state(self) -> tuple[int, tuple[int, float, float | None] | None]:
        raw = os.pread(self._state_fd, 4096, 0)
        try:
            data = json.loads(raw)
            holder = data["holder"]
            return int(data["next"]), None if holder is None else (
                int(holder[0]),
                float(holder[1]),
                None if holder[2] is None else float(holder[2]),
            )
        except (ValueError, KeyError, TypeError, IndexError):
            return 0, None  # new, or torn by a power cut: entries on disk say the rest

    def _write_state(self, next_seq: int, holder: tuple[int, float, float | None] | None) -> None:
        raw = json.dumps({"next": next_seq, "holder": holder}).encode()
        os.pwrite(self._state_fd, raw, 0)
        os.ftruncate(self._state_fd, len(raw))

    @staticmethod
    def _holder_tuple(view: _View) -> tuple[int, float, float | None] | None:
        if view.holder is None or view.holder_seq is None:
            return None
        return (view.holder_seq, view.holder.granted_at, view.holder.hung_since)

    # --- telling this process's waiters ----------------------------------------------------

    def _schedule(self, request: _Request) -> None:
        """Tell a waiter of its grant from its event loop, outside whatever runs now."""
        if request.delivered or request.scheduled or request.loop is None:
            return
        request.scheduled = True
        with contextlib.suppress(RuntimeError):  # its loop has closed: nobody to tell
            request.loop.call_soon_threadsafe(self._deliver_later, request)

    def _deliver_later(self, request: _Request) -> None:
        if request.delivered or self._mine.get(request.seq) is not request:
            return  # withdrawn meanwhile (the grant was handed on), or told already
        if request.future is not None and request.future.done():
            return  # cancelled: its withdraw hands the grant on
        request.delivered = True
        self._deliver_now(request, self._clock.monotonic())

    def _deliver_now(self, request: _Request, now: float) -> None:
        self._on_grant(request.ticket, now - request.enqueued_at)
        if request.future is not None and not request.future.done():
            request.future.set_result(None)

    def _watch(self) -> None:
        """While this arbiter has waiters: sleep in the kernel until the holder changes."""
        while True:
            self._changed.clear()
            with self._locked():
                if not any(not r.delivered for r in self._mine.values()):
                    self._watching = False
                    return
                view = self._decide(self._clock.monotonic())
            if view.holder_seq is None or view.holder_seq in self._mine:
                self._changed.wait()  # a release or withdraw here sets it
                continue
            try:
                fd = os.open(self._entries / f"{view.holder_seq:020d}", os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_SH)  # returns when the holder releases or dies
            finally:
                os.close(fd)


def _seq_of(name: str) -> int:
    return int(name) if name.isdigit() else -1


def _dump_entry(ticket: Ticket, enqueued_at: float) -> bytes:
    owner = ticket.owner
    return json.dumps(
        {
            "lease_id": ticket.lease_id,
            "operation": ticket.operation,
            "model": ticket.model,
            "priority": int(ticket.priority),
            "pid": owner.pid,
            "host": owner.host,
            "process": owner.process,
            "enqueued_at": enqueued_at,
        }
    ).encode()


def _parse_entry(seq: int, raw: bytes) -> _Entry | None:
    try:
        data: dict[str, Any] = json.loads(raw)
        owner = Owner(int(data["pid"]), str(data["host"]), str(data["process"]))
        ticket = Ticket(
            int(data["lease_id"]),
            str(data["operation"]),
            None if data["model"] is None else str(data["model"]),
            Priority(int(data["priority"])),
            owner,
        )
        return _Entry(seq, ticket, float(data["enqueued_at"]))
    except (ValueError, KeyError, TypeError):
        return None  # still being written by its process (it holds the state lock then)


def _ignore_grant(ticket: Ticket, waited_s: float) -> None:
    """The default grant callback, before a guard binds its own."""
