"""The host-wide arbiter: one GPU lease shared by every process on this machine.

Same rules as :class:`~gpuguard.guard.scopes.local.LocalArbiter` (one holder under the
exclusive policy, several while a sharing policy admits the head of the line beside them, no
queue jumping, :class:`~gpuguard.guard._queue.WaiterQueue` service order, nobody waits while
nobody holds), kept in one directory per GPU (:mod:`._lease_dir`) of the machine's lock
directory (:mod:`._files`):

* every decision takes an exclusive ``flock`` on the GPU's directory for a few microseconds,
  reads the state, decides and replaces the state whole, so each grant is atomic across
  processes. The state holds the host-wide ticket counter (FIFO across processes), every
  request (operation, model, priority, hold timeout, pid, host, process, since, the bytes its
  policy counts, its process's inbox) and which ones hold the GPU, since when, and since when
  they hang (:mod:`._decisions` decides).
* ``entries/<ticket>``: one file per request, created and ``flock``-ed by its process for
  the request's whole life. The kernel drops that lock when the process dies (SIGKILL, OOM
  kill), so a dead request is recognisable at once (its lock can be taken) and whoever
  decides next removes it. A holder whose entry is dead holds nothing.

Liveness comes from the kernel, never from timers. Wake-ups are pushed, and only to whom a
change concerns: a process with queued requests runs one watcher thread that sleeps until
the kernel wakes it, when the request it watches ends (a ``flock(LOCK_SH)`` on its entry:
the head's process watches the holders, every other the request just ahead of its first
waiter, :meth:`.Decisions.watch`) or when another process granted one of its requests (a
datagram to its inbox, :mod:`._wake`), and it re-decides. So a hand-off wakes the next
process, not every waiting one. A release grants the next waiters in the same step; a waiter
of the releasing guard is told synchronously, as in one process.

Every descriptor is this process's own: a child made by ``fork()`` closes the ones it
inherited (without unlocking them: the locks are its parent's) and opens its own, so a guard
made before the fork keeps processes apart, and a holder that forks does not leave its lock
in the child. A state that cannot be read or written is an error for the request
(:class:`~gpuguard.GuardUnavailable`), never a grant; releasing and leaving never fail (the
request's entry is closed whatever happens, and the next decision repairs the state). A holder
that died is still on the GPU until its context is torn down: where the driver lists the GPU's
processes (``gpu_pids``), nobody is granted before it is gone, for at most ``teardown_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import weakref
from collections.abc import Collection, Iterator
from pathlib import Path

from ...._clock import Clock
from ...._exceptions import ConfigError
from ..._arbiter import Joined, OnGrant, OnLost
from ..._queue import WaiterQueue
from ..._tickets import Grant, Queued, Ticket
from ...policies import EXCLUSIVE, Policy
from .._mark import GpuMarker
from ._decisions import Decisions
from ._files import SYSTEM_LOCK_DIR, default_lock_dir
from ._lease_dir import LeaseDir
from ._probe import overdue_since, owner_gone
from ._repair import sweep
from ._requests import Request, Requests, refusing
from ._state import Entry, HolderRecord, State, StateError
from ._teardown import GpuPids, TeardownWait

__all__ = ["HostArbiter"]

logger = logging.getLogger("gpuguard.guard")

_LIVE: weakref.WeakSet[HostArbiter] = weakref.WeakSet()


class HostArbiter:
    """Grants across the processes of one host through files, ``flock`` and the kernel."""

    scope = "host"
    decides_locally = False  # the state is shared: each request is one decision (enqueue)
    issues_fences = False

    def __init__(
        self,
        name: str,
        *,
        lock_dir: Path | str | None,
        aging_s: float | None,
        clock: Clock,
        lock_group: str | None = None,
        gpu_pids: GpuPids | None = None,
        teardown_s: float = 5.0,
        policy: Policy = EXCLUSIVE,
    ) -> None:
        if not name or not all(c.isalnum() or c in "._-" for c in name) or name[0] == ".":
            raise ValueError(f"GPU name {name!r} must be letters, digits, '.', '_' or '-'")
        WaiterQueue[Entry](aging_s=aging_s)  # reject an impossible aging_s at once
        root = Path(lock_dir) if lock_dir is not None else default_lock_dir()
        if lock_dir is None and root != SYSTEM_LOCK_DIR:
            logger.warning(
                "GPU lease in the per-user %s: %s does not exist and this process may not "
                "create it, so processes of other users (a system service) do not share this "
                "lease; have the operator create it (2770 root:<group>, see docs/design.md)",
                root,
                SYSTEM_LOCK_DIR,
            )
        self._name, self._root, self._group = name, root, lock_group
        self._dir: LeaseDir | None = LeaseDir.open(root, name, group=lock_group)
        self.directory = self._dir.path
        self.policy = policy
        self._aging_s = aging_s
        self._clock = clock
        self._requests = Requests(clock, GpuMarker(name, f"the lock directory {self.directory}"))
        self._decisions = Decisions(
            self._requests, policy, aging_s=aging_s, teardown=TeardownWait(gpu_pids, teardown_s)
        )
        self._pid = os.getpid()
        self._lock = threading.Lock()
        _LIVE.add(self)
        with contextlib.suppress(StateError), self._locked() as lease_dir:
            sweep(
                lease_dir, self._decisions.read(lease_dir)
            )  # damage is refused request by request

    def bind(self, on_grant: OnGrant, on_lost: OnLost) -> None:
        """Set the grant callback (the kernel keeps a host-wide lease: it is never lost)."""
        self._requests.on_grant = on_grant

    # --- the Arbiter protocol --------------------------------------------------------------

    async def try_acquire(self, ticket: Ticket, now: float) -> bool:
        """:meth:`try_acquire_now` (local files: no waiting on I/O worth a thread)."""
        return self.try_acquire_now(ticket, now)

    def try_acquire_now(self, ticket: Ticket, now: float) -> bool:
        """Grant at once if nobody on this host waits and the policy admits ``ticket``."""
        with refusing(ticket), self._locked() as lease_dir:
            return self._take(lease_dir, self._decide(lease_dir, now), ticket, now)

    async def enqueue(self, ticket: Ticket, now: float, *, limit: int) -> Joined | None:
        """Take the GPU at once, or queue ``ticket`` host-wide if fewer than ``limit`` wait.

        One decision: the grant, or the bound checked and the ticket queued, with its place
        and the holder, under one lock of the state; the watcher thread learns of the grant.
        """
        loop = asyncio.get_running_loop()
        with refusing(ticket), self._locked() as lease_dir:
            state = self._decide(lease_dir, now)
            if self._take(lease_dir, state, ticket, now):
                return Joined(None)
            if state.waiting() >= limit:
                return None
            request = self._new_request(lease_dir, state, ticket, now)
            request.future, request.loop = loop.create_future(), loop
            granted = []
            if state.teardown is None:
                granted = self._decisions.grant_heads(lease_dir, state, now)
            self._commit(lease_dir, state, request)
            for mine in granted:
                self._requests.schedule(mine)
            start = self._requests.want_watcher()
            self._requests.look_again()
            place = self._decisions.place(state, request.seq, now)
            holder = _grant(state, state.holders[0], now) if state.holders else None
        if start:
            self._requests.start_watcher(self._watch_once)
        return Joined(request.future, place, holder)

    def withdraw(self, ticket: Ticket) -> bool:
        """Leave the line; a grant this guard was not told of yet is handed on instead."""
        with self._locked() as lease_dir:
            request = self._requests.of(ticket)
            if request is None or request.delivered:
                return False
            for granted in self._leave(lease_dir, request, self._clock.monotonic()):
                self._requests.schedule(granted)
            self._requests.look_again()
        return True

    def release(self, ticket: Ticket, now: float) -> None:
        """Free the GPU and grant the next live waiters on this host (this never fails)."""
        with self._locked() as lease_dir:
            request = self._requests.of(ticket)
            if request is None:
                return
            self._requests.let_go_of_mark(request)
            granted = self._leave(lease_dir, request, now)
            for mine in granted:
                self._requests.granted(mine)
            self._requests.look_again()
        for mine in granted:
            self._requests.on_grant(mine.entry.ticket, now - mine.entry.enqueued_at)
            mine.resolve()

    def mark_hung(self, ticket: Ticket, now: float) -> None:
        """Record since when the holder hangs, for every process to see."""
        with contextlib.suppress(StateError), self._locked() as lease_dir:
            request = self._requests.of(ticket)
            state = self._decide(lease_dir, now)
            record = None if request is None else state.holding(request.seq)
            if record is not None:
                seq, granted_at, _ = record
                state.holders[state.holders.index(record)] = (seq, granted_at, now)
                lease_dir.write(state)

    def lease_fd(self, ticket: Ticket) -> int | None:
        """:meth:`.Requests.share` (``ticket``'s entry lock, for a program tree to keep)."""
        with self._lock:
            return self._requests.share(ticket)

    def holder(self) -> Grant | None:
        """The oldest holder, in whichever process it is (None if the state cannot be read)."""
        return next(iter(self.holders()), None)

    def holders(self) -> tuple[Grant, ...]:
        """Every holder, oldest first, in whichever process (none if the state is unreadable).

        A holder in another process past its deadline (stopped, or too busy to notice) is
        shown hung since then: its own timer could not say so.
        """
        now = self._clock.monotonic()
        state = self._peek(now)
        if state is None:
            return ()
        return tuple(_grant(state, record, now) for record in state.holders)

    def waiters(self, now: float) -> list[Queued]:
        """Every waiter on this host, in service order."""
        state = self._peek(now)
        if state is None:
            return []
        queue = self._decisions.queue(state)
        return [
            Queued(e.item.ticket, e.enqueued_at, queue.effective_priority(e, now))
            for e in queue.order(now)
        ]

    async def aclose(self) -> None:
        """Nothing to close: the kernel frees the locks when the process ends."""

    def queue_length(self) -> int:
        """How many wait on this host."""
        state = self._peek(self._clock.monotonic())
        return 0 if state is None else state.waiting()

    def __repr__(self) -> str:
        return f"<HostArbiter {str(self.directory)!r} requests here={len(self._requests)}>"

    # --- decisions (under the lock) --------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[LeaseDir]:
        # The thread lock keeps this process's threads apart (flock does not tell apart the
        # threads of one open file description); flock keeps processes apart.
        if self._pid != os.getpid():  # forked without the at-fork hook (a C-level fork)
            self._forget_parent()
        with self._lock:
            lease_dir = self._dir
            if lease_dir is None:  # after a fork, or after the directory was replaced
                lease_dir = self._dir = LeaseDir.open(self._root, self._name, group=self._group)
            lease_dir.lock()
            try:
                yield lease_dir
            except StateError:
                if not len(self._requests) and not lease_dir.in_place():
                    self._dir = None  # refused once; the next request opens the new one
                raise
            finally:
                self._requests.tell()  # before the lock goes: see Requests.tell
                lease_dir.unlock()
                if self._dir is not lease_dir:
                    lease_dir.close()

    def _peek(self, now: float) -> State | None:
        """The decided state for a read-only question; None if it cannot be read."""
        try:
            with self._locked() as lease_dir:
                return self._decide(lease_dir, now)
        except StateError:
            return None

    def _decide(self, lease_dir: LeaseDir, now: float) -> State:
        return self._decisions.decide(lease_dir, now)

    def _take(self, lease_dir: LeaseDir, state: State, ticket: Ticket, now: float) -> bool:
        """Grant ``ticket`` in decided ``state`` if nobody waits and the policy admits it."""
        if state.waiting() or state.teardown is not None:
            return False
        entry = self._decisions.entry(ticket, state.next_seq, now, "")
        if not self._decisions.admits(state, entry):
            return False
        request = self._new_request(lease_dir, state, ticket, now)
        state.holders.append((request.seq, now, None))
        self._commit(lease_dir, state, request)
        self._requests.granted(request)
        return True

    def _new_request(
        self, lease_dir: LeaseDir, state: State, ticket: Ticket, now: float
    ) -> Request:
        seq = state.next_seq
        state.next_seq += 1
        entry = self._decisions.entry(ticket, seq, now, self._requests.inbox.open())
        fd = lease_dir.create_entry(seq, ticket.owner.pid)
        request = self._requests.add(entry, fd)
        state.requests[seq] = request.entry
        return request

    def _commit(self, lease_dir: LeaseDir, state: State, request: Request) -> None:
        """Write ``state`` with the new ``request``; if it cannot be, the request never was."""
        try:
            lease_dir.write(state)
        except StateError:
            self._requests.close(request, lease_dir)
            raise

    def _leave(self, lease_dir: LeaseDir, request: Request, now: float) -> list[Request]:
        """Take this arbiter's ``request`` out; the waiters of ours granted in its place.

        The entry is closed whatever happens, so other processes see the request gone even
        when the state cannot be written (they repair it then).
        """
        granted: list[Request] = []
        try:
            state = self._decide(lease_dir, now)
            state.requests.pop(request.seq, None)
            record = state.holding(request.seq)
            if record is not None:
                state.holders.remove(record)
            if state.teardown is None and state.waiting():
                granted = self._decisions.grant_heads(lease_dir, state, now)
            lease_dir.write(state)
        except StateError:
            granted = []
        finally:
            self._requests.close(request, lease_dir)
        return granted

    # --- the watcher thread ----------------------------------------------------------------

    def _watch_once(self, watched: Collection[int]) -> tuple[dict[int, int], float | None]:
        """One look: entries to watch too (:meth:`.Decisions.watch`), when to look unasked.

        Raises :class:`LookupError` when this arbiter has no waiter left (the watcher ends).
        """
        try:
            with self._locked() as lease_dir:
                if self._requests.idle():
                    raise LookupError("no waiter left")
                self._requests.inbox.drain()  # under the lock: see Inbox.drain
                now = self._clock.monotonic()
                state = self._decide(lease_dir, now)
                watch = self._decisions.watch(state, now)
                entries: dict[int, int] = {}
                for seq in watch.entries:
                    fd = None if seq in watched else lease_dir.open_entry(seq)
                    if fd is not None:
                        entries[seq] = fd
                polls = [s for s in (watch.rise_s, self._requests.poll_s) if s is not None]
                return entries, min(polls, default=None)
        except (StateError, OSError, ConfigError) as exc:  # refused: fail, never strand them
            with self._lock:
                self._requests.fail_waiting(str(exc), self._dir)
            return {}, None

    # --- fork ------------------------------------------------------------------------------

    def _forget_parent(self) -> None:
        """In a child made by ``fork()``: drop every descriptor and request of the parent."""
        self._pid = os.getpid()
        self._lock = threading.Lock()  # another thread may have held it at the fork
        self._requests.forget_parent()
        if self._dir is not None:
            self._dir.close()
            self._dir = None


def _grant(state: State, record: HolderRecord, now: float) -> Grant:
    seq, granted_at, hung_since = record
    entry = state.requests[seq]
    if hung_since is None:
        hung_since = overdue_since(entry, granted_at, now)
    return Grant(entry.ticket, granted_at, hung_since, owner_gone=owner_gone(entry))


def _after_fork_in_child() -> None:
    for arbiter in list(_LIVE):
        arbiter._forget_parent()


os.register_at_fork(after_in_child=_after_fork_in_child)
