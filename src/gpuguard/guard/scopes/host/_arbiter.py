"""The host-wide arbiter: one GPU lease shared by every process on this machine.

Same rules as :class:`~gpuguard.guard.scopes.local.LocalArbiter` (one holder, no queue
jumping, :class:`~gpuguard.guard._queue.WaiterQueue` service order, nobody waits while nobody
holds), kept in a lock directory, one subdirectory per GPU name (:mod:`._files`):

* ``state``: every decision takes an exclusive ``flock`` on it for a few microseconds, so each
  grant is atomic across processes. It holds the host-wide ticket counter (FIFO across
  processes), every request (operation, model, priority, pid, host, process, since) and which
  one holds the GPU, since when, and since when it hangs.
* ``entries/<ticket>``: one empty file per request (waiting or holding), created and
  ``flock``-ed by its process for the request's whole life. The kernel drops that lock when the
  process dies (SIGKILL, OOM kill), so a dead request is recognisable at once (its lock can be
  taken) and whoever decides next removes it. A holder whose entry is dead holds nothing.

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
import os
import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ...._clock import Clock
from ..._arbiter import OnGrant, OnLost
from ..._queue import WaiterQueue
from ..._tickets import Grant, Queued, Ticket
from ...policies import EXCLUSIVE
from ._files import Entry, State, default_lock_dir, prepare_lock_dir

__all__ = ["HostArbiter"]


@dataclass(eq=False)
class _Request:
    """A request of this arbiter: its entry file stays locked while it waits or holds."""

    entry: Entry
    fd: int
    future: asyncio.Future[None] | None = None
    loop: asyncio.AbstractEventLoop | None = None
    delivered: bool = False
    scheduled: bool = False

    @property
    def seq(self) -> int:
        return self.entry.seq


class HostArbiter:
    """Grants across the processes of one host through files, ``flock`` and the kernel."""

    scope = "host"
    decides_locally = True  # local files under a lock: nothing worth awaiting
    issues_fences = False
    policy = EXCLUSIVE  # the state file records one holder

    def __init__(
        self, name: str, *, lock_dir: Path | str | None, aging_s: float | None, clock: Clock
    ) -> None:
        if not name or not all(c.isalnum() or c in "._-" for c in name) or name[0] == ".":
            raise ValueError(f"GPU name {name!r} must be letters, digits, '.', '_' or '-'")
        WaiterQueue[Entry](aging_s=aging_s)  # reject an impossible aging_s at once
        root = prepare_lock_dir(Path(lock_dir) if lock_dir is not None else default_lock_dir())
        self.directory = root / name
        self._entries = self.directory / "entries"
        self.directory.mkdir(mode=0o700, exist_ok=True)
        self._entries.mkdir(mode=0o700, exist_ok=True)
        self._aging_s = aging_s
        self._clock = clock
        self._state_fd = os.open(self.directory / "state", os.O_RDWR | os.O_CREAT, 0o600)
        self._peek: dict[int, int] = {}
        """Open (unlocked) descriptors of other processes' entries, to test their liveness."""
        weakref.finalize(self, _close_all, [self._state_fd], self._peek)
        self._lock = threading.Lock()
        self._mine: dict[int, _Request] = {}
        self._by_lease: dict[int, int] = {}
        self._changed = threading.Event()
        self._watching = False
        self._on_grant: OnGrant = _ignore_grant

    def bind(self, on_grant: OnGrant, on_lost: OnLost) -> None:
        """Set the grant callback (the kernel keeps a host-wide lease: it is never lost)."""
        self._on_grant = on_grant

    # --- the Arbiter protocol --------------------------------------------------------------

    async def try_acquire(self, ticket: Ticket, now: float) -> bool:
        """:meth:`try_acquire_now` (local files: no waiting on I/O worth a thread)."""
        return self.try_acquire_now(ticket, now)

    def try_acquire_now(self, ticket: Ticket, now: float) -> bool:
        """Grant at once if nobody on this host holds or waits."""
        with self._locked():
            state = self._decide(now)
            if state.holder is not None or len(state.requests) > 0:
                return False
            request = self._new_request(state, ticket, now)
            request.delivered = True
            state.holder = (request.seq, now, None)
            state.write(self._state_fd)
        return True

    async def enqueue(
        self, ticket: Ticket, now: float, *, limit: int
    ) -> asyncio.Future[None] | None:
        """Queue ``ticket`` host-wide if fewer than ``limit`` wait.

        The bound is checked and the ticket queued under one lock of the state file; the
        watcher thread learns of the grant.
        """
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self._locked():
            state = self._decide(now)
            if len(state.requests) - (state.holder is not None) >= limit:
                return None
            request = self._new_request(state, ticket, now)
            request.future, request.loop = future, loop
            if state.holder is None:  # the holder left since the caller looked
                self._schedule(self._grant_next(state, now))
            state.write(self._state_fd)
            start = not self._watching
            self._watching = True
        self._changed.set()
        if start:
            threading.Thread(target=self._watch, name="gpuguard-host-watch", daemon=True).start()
        return future

    def withdraw(self, ticket: Ticket) -> bool:
        """Leave the line; a grant this guard was not told of yet is handed on instead."""
        with self._locked():
            request = self._mine.get(self._by_lease.get(ticket.lease_id, -1))
            if request is None or request.delivered:
                return False
            state = self._decide(self._clock.monotonic())
            self._drop(request, state)
            if state.holder is not None and state.holder[0] == request.seq:
                state.holder = None
                self._schedule(self._grant_next(state, self._clock.monotonic()))
            state.write(self._state_fd)
        self._changed.set()
        return True

    def release(self, ticket: Ticket, now: float) -> None:
        """Free the GPU and grant the next live waiter on this host."""
        granted: _Request | None = None
        with self._locked():
            request = self._mine.get(self._by_lease.get(ticket.lease_id, -1))
            if request is None:
                return
            state = self._decide(now)
            self._drop(request, state)
            if state.holder is not None and state.holder[0] == request.seq:
                state.holder = None
                granted = self._grant_next(state, now)
                if granted is not None:
                    granted.delivered = True
            state.write(self._state_fd)
        self._changed.set()
        if granted is not None:
            self._on_grant(granted.entry.ticket, now - granted.entry.enqueued_at)
            _resolve(granted)

    def mark_hung(self, ticket: Ticket, now: float) -> None:
        """Record since when the holder hangs, for every process to see."""
        with self._locked():
            seq = self._by_lease.get(ticket.lease_id)
            state = self._read()
            if state.holder is not None and state.holder[0] == seq:
                state.holder = (seq, state.holder[1], now)
                state.write(self._state_fd)

    def holder(self) -> Grant | None:
        """The holder, in whichever process it is."""
        with self._locked():
            state = self._decide(self._clock.monotonic())
        if state.holder is None:
            return None
        seq, granted_at, hung_since = state.holder
        return Grant(state.requests[seq].ticket, granted_at, hung_since)

    def waiters(self, now: float) -> list[Queued]:
        """Every waiter on this host, in service order."""
        with self._locked():
            queue = self._queue(self._decide(now))
        return [
            Queued(e.item.ticket, e.enqueued_at, queue.effective_priority(e, now))
            for e in queue.order(now)
        ]

    async def aclose(self) -> None:
        """Nothing to close: the kernel frees the locks when the process ends."""

    def queue_length(self) -> int:
        """How many wait on this host."""
        with self._locked():
            state = self._decide(self._clock.monotonic())
        return len(state.requests) - (state.holder is not None)

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

    def _decide(self, now: float) -> State:
        """Read the lease; if nobody holds, grant the next waiter (its process is told)."""
        state = self._read()
        changed = self._prune(state)
        if state.holder is None and state.requests:
            self._schedule(self._grant_next(state, now))
            changed = True
        elif state.holder is not None and state.holder[0] in self._mine:
            self._schedule(self._mine[state.holder[0]])
        if changed:
            state.write(self._state_fd)
        return state

    def _read(self) -> State:
        state = State.read(self._state_fd)
        for seq in list(self._peek):
            if seq not in state.requests:
                os.close(self._peek.pop(seq))
        return state

    def _prune(self, state: State) -> bool:
        """Remove requests whose process is gone; True if any was."""
        dead = [seq for seq in state.requests if seq not in self._mine and not self._alive(seq)]
        for seq in dead:
            del state.requests[seq]
            (self._entries / f"{seq:020d}").unlink(missing_ok=True)
            os.close(self._peek.pop(seq))
        if state.holder is not None and state.holder[0] not in state.requests:
            state.holder = None
            return True
        return bool(dead)

    def _alive(self, seq: int) -> bool:
        """Whether another process still locks entry ``seq`` (the kernel drops it on death)."""
        fd = self._peek.get(seq)
        if fd is None:
            try:
                fd = os.open(self._entries / f"{seq:020d}", os.O_RDONLY)
            except FileNotFoundError:
                return False
            self._peek[seq] = fd
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        return False  # dead: the lock taken here goes when the descriptor is closed

    def _queue(self, state: State) -> WaiterQueue[Entry]:
        holder = None if state.holder is None else state.holder[0]
        queue: WaiterQueue[Entry] = WaiterQueue(aging_s=self._aging_s)
        for seq in sorted(state.requests):
            if seq != holder:
                entry = state.requests[seq]
                queue.push(seq, entry.ticket.priority, entry.enqueued_at, entry)
        return queue

    def _grant_next(self, state: State, now: float) -> _Request | None:
        """Make the next waiter the holder; return it if it is this arbiter's own."""
        if not state.requests:
            return None
        queue = self._queue(state)
        while len(queue):
            entry = queue.pop_next(now).item
            mine = self._mine.get(entry.seq)
            if mine is not None and mine.future is not None and mine.future.done():
                self._drop(mine, state)  # its task was cancelled and has not run yet
                continue
            state.holder = (entry.seq, now, None)
            return mine
        return None

    def _new_request(self, state: State, ticket: Ticket, now: float) -> _Request:
        seq = state.next_seq
        state.next_seq += 1
        path = self._entries / f"{seq:020d}"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # left by a process killed as it removed it
            path.unlink()
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        request = _Request(Entry(seq, ticket, now), fd)
        state.requests[seq] = request.entry
        self._mine[seq] = request
        self._by_lease[ticket.lease_id] = seq
        return request

    def _drop(self, request: _Request, state: State) -> None:
        """Remove this arbiter's request: unlink its entry, then let go of its lock."""
        state.requests.pop(request.seq, None)
        (self._entries / f"{request.seq:020d}").unlink(missing_ok=True)
        os.close(request.fd)  # wakes the watchers blocked on it
        self._mine.pop(request.seq, None)
        if self._by_lease.get(request.entry.ticket.lease_id) == request.seq:
            del self._by_lease[request.entry.ticket.lease_id]

    # --- telling this process's waiters ----------------------------------------------------

    def _schedule(self, request: _Request | None) -> None:
        """Tell a waiter of its grant from its event loop, outside whatever runs now."""
        if request is None or request.delivered or request.scheduled or request.loop is None:
            return
        request.scheduled = True
        with contextlib.suppress(RuntimeError):  # its loop has closed: nobody to tell
            request.loop.call_soon_threadsafe(self._deliver, request)

    def _deliver(self, request: _Request) -> None:
        if request.delivered or self._mine.get(request.seq) is not request:
            return  # withdrawn meanwhile (the grant was handed on), or told already
        if request.future is not None and request.future.done():
            return  # cancelled: its withdraw hands the grant on
        request.delivered = True
        self._on_grant(request.entry.ticket, self._clock.monotonic() - request.entry.enqueued_at)
        _resolve(request)

    def _watch(self) -> None:
        """While this arbiter has waiters: sleep in the kernel until the holder changes."""
        while True:
            self._changed.clear()
            with self._locked():
                if all(r.delivered for r in self._mine.values()):
                    self._watching = False
                    return
                holder = self._decide(self._clock.monotonic()).holder
            if holder is None or holder[0] in self._mine:
                self._changed.wait()  # a release or withdraw here sets it
                continue
            try:
                fd = os.open(self._entries / f"{holder[0]:020d}", os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_SH)  # returns when the holder releases or dies
            finally:
                os.close(fd)


def _resolve(request: _Request) -> None:
    if request.future is not None and not request.future.done():
        request.future.set_result(None)


def _close_all(fds: list[int], peek: dict[int, int]) -> None:
    for fd in [*fds, *peek.values()]:
        with contextlib.suppress(OSError):
            os.close(fd)


def _ignore_grant(ticket: Ticket, waited_s: float) -> None:
    """The default grant callback, before a guard binds its own."""
