"""The requests one process made of the host-wide lease, and telling their waiters.

The arbiter (:mod:`._arbiter`) decides under the lock; :class:`Requests` keeps what this
process has asked for (each request's locked entry descriptor, its future and its event
loop), tells a waiter of its grant on its own loop, fails it when the lease cannot be
trusted, and runs the one watcher thread that sleeps in the kernel until something changes:
a datagram in this process's inbox (:mod:`._wake`: another process granted one of ours, or
this process released) or a watched entry let go (the chain, :meth:`.Decisions.watch`: one
short thread per watched entry blocks in ``flock`` on it, and the kernel wakes it when that
request's process releases, leaves or dies).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import threading
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass

from ...._clock import Clock
from ...._exceptions import GuardUnavailable
from ..._arbiter import OnGrant
from ..._tickets import Ticket
from .._mark import GpuMarker
from ._lease_dir import LeaseDir
from ._state import Entry, StateError
from ._wake import Inbox, post

__all__ = ["Request", "Requests", "refusing"]

Look = Callable[[Collection[int]], tuple[dict[int, int], float | None]]
"""One look of the watcher, given the entries watched already: descriptors of the entries
to watch as well, by ``seq``, and the seconds after which to look again unasked (None:
only when asked); raises :class:`LookupError` when nothing is left to watch."""


@dataclass(eq=False)
class Request:
    """A request of this process: its entry file stays locked while it waits or holds."""

    entry: Entry
    fd: int
    future: asyncio.Future[None] | None = None
    loop: asyncio.AbstractEventLoop | None = None
    delivered: bool = False
    scheduled: bool = False

    @property
    def seq(self) -> int:
        """Its host-wide ticket number."""
        return self.entry.seq

    def resolve(self) -> None:
        """Wake its waiter: granted."""
        if self.future is not None and not self.future.done():
            self.future.set_result(None)

    def refuse(self, error: BaseException) -> None:
        """Wake its waiter with ``error``."""
        if self.future is not None and not self.future.done():
            self.future.set_exception(error)


LOOK_AGAIN_S = 0.5
"""The longest a watcher sleeps without looking. Every change it must see wakes it (an entry
it watches let go, a datagram to its inbox); this bounds what a wake that never came costs
(a datagram dropped, a watch lost): a waiter is served within half a second, never stranded,
and the watcher of a process with no waiter left ends within half a second."""


class Requests:
    """The requests of one process by ticket number and by lease, and their delivery."""

    def __init__(self, clock: Clock, marker: GpuMarker) -> None:
        self._clock = clock
        self.marker = marker
        self.on_grant: OnGrant = _ignore_grant
        self._by_seq: dict[int, Request] = {}
        self._by_lease: dict[int, int] = {}
        self.inbox = Inbox()
        self._entry_watches: dict[int, int] = {}
        """The entries of other processes a thread waits on now, by ``seq`` (their
        descriptors). One watched before the last look stays until it is let go: a stale
        watch costs a wake, never a missed one."""
        self._watching = False
        self.to_tell: list[str] = []
        """The inboxes to wake after this decision (told as it ends, before the lock goes)."""
        self.peers: frozenset[int] = frozenset()
        """The other processes of this host that hold beside this one (they share the mark)."""
        self.poll_s: float | None = None
        """How often the watcher looks again unasked (a dead holder's GPU teardown)."""

    def __len__(self) -> int:
        return len(self._by_seq)

    def __contains__(self, seq: object) -> bool:
        return seq in self._by_seq

    def values(self) -> list[Request]:
        """Every request (a copy: callers close some as they go)."""
        return list(self._by_seq.values())

    def get(self, seq: int) -> Request | None:
        """Request ``seq`` if it is this process's."""
        return self._by_seq.get(seq)

    def of(self, ticket: Ticket) -> Request | None:
        """The request of ``ticket``'s lease, if it is still open."""
        return self._by_seq.get(self._by_lease.get(ticket.lease_id, -1))

    def add(self, entry: Entry, fd: int) -> Request:
        """Keep a new request whose entry ``fd`` is locked."""
        request = Request(entry, fd)
        self._by_seq[entry.seq] = request
        self._by_lease[entry.ticket.lease_id] = entry.seq
        return request

    def close(self, request: Request, lease_dir: LeaseDir | None) -> None:
        """Forget ``request``, remove its entry and close it (which wakes its watchers)."""
        if self._by_seq.pop(request.seq, None) is None:
            return
        if self._by_lease.get(request.entry.ticket.lease_id) == request.seq:
            del self._by_lease[request.entry.ticket.lease_id]
        if lease_dir is not None:
            lease_dir.remove_entry(request.seq)
        os.close(request.fd)

    def share(self, ticket: Ticket) -> int | None:
        """A new descriptor of the locked entry of ``ticket``'s held request (None if none).

        It shares the entry's open file description, hence its ``flock``: handed to a child
        (:mod:`gpuguard.cli._tree`), the request stays alive, and the GPU held, while any
        process keeps it open, even after this one has ended. The caller closes its copy.
        The at-fork hook does not know it, so a child made by ``fork()`` keeps it.
        """
        request = self.of(ticket)
        return None if request is None or not request.delivered else os.dup(request.fd)

    # --- grants ----------------------------------------------------------------------------

    def granted(self, request: Request) -> None:
        """``request`` holds from now on: this process bears the GPU's machine-wide mark."""
        request.delivered = True
        self.marker.take(self.peers)

    def let_go_of_mark(self, request: Request) -> None:
        """``request`` releases: drop the mark unless another request here still holds."""
        if not any(r.delivered and r is not request for r in self._by_seq.values()):
            self.marker.drop()

    def tell(self) -> None:
        """Wake the processes the last decision concerns, once each.

        Called as the decision ends, before the directory's lock is let go: a woken watcher
        reads its inbox under that lock (:meth:`.Inbox.drain`), so it looks once for every
        datagram about a decision it sees, not once more after it.
        """
        told, self.to_tell = self.to_tell, []
        for name in dict.fromkeys(told):
            post(name)

    def schedule(self, request: Request | None) -> None:
        """Tell a waiter of its grant from its event loop, outside whatever runs now."""
        if request is None or request.delivered or request.scheduled or request.loop is None:
            return
        request.scheduled = True
        with contextlib.suppress(RuntimeError):  # its loop has closed: nobody to tell
            request.loop.call_soon_threadsafe(self._deliver, request)

    def _deliver(self, request: Request) -> None:
        if request.delivered or self._by_seq.get(request.seq) is not request:
            return  # withdrawn meanwhile (the grant was handed on), or told already
        if request.future is not None and request.future.done():
            return  # cancelled: its withdraw hands the grant on
        self.granted(request)
        self.on_grant(request.entry.ticket, self._clock.monotonic() - request.entry.enqueued_at)
        request.resolve()

    def fail(self, request: Request, reason: str, lease_dir: LeaseDir | None) -> None:
        """Close ``request`` and tell its waiter the lease cannot be trusted."""
        self.close(request, lease_dir)
        if request.delivered or request.loop is None:
            return
        ticket = request.entry.ticket
        error = GuardUnavailable(
            operation=ticket.operation, model=ticket.model, scope="host", reason=reason
        )
        with contextlib.suppress(RuntimeError):
            request.loop.call_soon_threadsafe(request.refuse, error)

    def fail_waiting(self, reason: str, lease_dir: LeaseDir | None) -> None:
        """Fail every request still waiting (the watcher found the lease untrustworthy)."""
        for request in self.values():
            if not request.delivered:
                self.fail(request, reason, lease_dir)

    # --- the watcher thread ----------------------------------------------------------------

    def want_watcher(self) -> bool:
        """Called under the lock after queueing: True if a watcher thread must be started."""
        start = not self._watching
        self._watching = True
        return start

    def idle(self) -> bool:
        """Called under the lock by the watcher: True (and it stops) if nobody here waits."""
        if all(request.delivered for request in self._by_seq.values()):
            self._watching = False
            return True
        return False

    def look_again(self) -> None:
        """After a release, a withdraw or a request here: the watcher looks again.

        Called under the lock: its first waiter, hence what it watches, may have changed.
        """
        if self._watching and self.inbox.name is not None:
            self.to_tell.append(self.inbox.name)

    def start_watcher(self, look: Look) -> None:
        """Run the watcher thread (a daemon: it sleeps in the kernel, never in Python)."""
        threading.Thread(
            target=self._watch, args=(look,), name="gpuguard-host-watch", daemon=True
        ).start()

    def _watch(self, look: Look) -> None:
        """While this process has waiters: sleep in the kernel until something changes."""
        inbox = self.inbox
        while True:
            try:
                entries, recheck_s = look(set(self._entry_watches))
            except LookupError:
                return
            for seq, fd in entries.items():
                self._watch_entry(seq, fd)
            inbox.wait(LOOK_AGAIN_S if recheck_s is None else min(recheck_s, LOOK_AGAIN_S))

    def _watch_entry(self, seq: int, fd: int) -> None:
        """Wake the watcher once entry ``seq`` (a request elsewhere) is let go."""
        self._entry_watches[seq] = fd
        threading.Thread(
            target=self._wait_entry, args=(seq, fd), name="gpuguard-host-entry", daemon=True
        ).start()

    def _wait_entry(self, seq: int, fd: int) -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)  # returns when the holder releases or dies
        except OSError:
            pass  # closed under it (a fork's child): nothing to wait for
        finally:
            if self._entry_watches.get(seq) == fd:
                del self._entry_watches[seq]
                with contextlib.suppress(OSError):
                    os.close(fd)
            self.inbox.wake()

    # --- fork ------------------------------------------------------------------------------

    def forget_parent(self) -> None:
        """In a forked child: close the parent's entries (never unlock them) and forget them."""
        for request in self._by_seq.values():
            with contextlib.suppress(OSError):
                os.close(request.fd)
        self._by_seq.clear()
        self._by_lease.clear()
        for fd in self._entry_watches.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._entry_watches = {}
        self.inbox.close()
        self.to_tell = []
        self._watching = False
        self.marker.drop()


def _ignore_grant(ticket: Ticket, waited_s: float) -> None:
    """The default grant callback, before a guard binds its own."""


@contextlib.contextmanager
def refusing(ticket: Ticket) -> Iterator[None]:
    """A state that cannot be trusted refuses ``ticket`` with :class:`GuardUnavailable`."""
    try:
        yield
    except StateError as exc:
        raise GuardUnavailable(
            operation=ticket.operation, model=ticket.model, scope="host", reason=str(exc)
        ) from exc
