"""The GPU lease: one :class:`GpuGuard` per GPU, the front every GPU operation goes through.

Contract (the exclusive policy):

* At most one lease is held at a time.
* Waiters are served by priority (interactive > normal > background), first come first
  served within a priority; with aging a waiter's priority rises one level for every
  ``aging_s`` seconds it has waited, so background work is never starved for ever
  (:mod:`gpuguard._queue`).
* :meth:`GpuGuard.acquire_nowait` / :meth:`GpuGuard.try_hold` never jump the queue: they fail
  with :class:`WouldBlock` while anyone holds the GPU *or* waits for it.
* Everything is bounded: ``wait_timeout`` (:class:`WaitTimeout`, naming the holder),
  ``max_waiters`` (:class:`QueueFull` with a retry-after estimate) and ``hold_timeout``.
* GPU work never outlives its lease. Past its hold timeout a holder is *hung*: its tracked
  work (:meth:`Lease.run`) is asked to stop and the task awaiting it is interrupted (for an
  opaque body, the task that entered it). Under ``on_hang="quarantine"`` (the default) the
  GPU stays held, visibly ``hung``, until that work has really ended, and only then passes on;
  ``on_hang="release"`` hands the GPU on at once, for those who accept the risk of overlap.
  The holder gets :class:`OperationHung`.

Cancellation safety (kept by every code path): *the guard never holds a lease for a task
that will not release it.* A waiter cancelled while queued leaves the queue; a waiter
cancelled after being granted but before it resumed releases at once; a holder cancelled
inside ``async with`` releases on the way out (after its tracked work has ended); the guard's
own interruption of a hung holder surfaces as :class:`OperationHung`, withdrawn from the task.

The parts: the arbiter decides grants (:mod:`gpuguard._arbiter`, one per scope), the
telemetry counts and publishes transitions (:mod:`gpuguard._telemetry`), queued leases are
tracked in :mod:`gpuguard._waiting`, hung and lost ones in :mod:`gpuguard._hung`, and logging
is a listener on the event bus. This module owns the public API and the views of the guard,
this process's lease registry, requests, grants with their hold timers, and endings.
"""

from __future__ import annotations

import asyncio
import itertools
from functools import partial
from pathlib import Path
from typing import Any, Final, NoReturn

from ._arbiter import Arbiter, LocalArbiter, Owner, Ticket
from ._clock import Clock, SystemClock
from ._events import EventBus, GpuStatus, Priority
from ._exceptions import LeaseNotHeld, WouldBlock
from ._host_arbiter import HostArbiter
from ._hung import INTERRUPTED, HungLeases
from ._lease import Hold, Lease, LeaseState
from ._options import DEFAULT, OnHang, Timeout, check_option, check_timeout
from ._snapshot import GuardSnapshot, HolderInfo, holder_info, waiter_infos
from ._telemetry import GuardTelemetry, log_gpu_event
from ._waiting import WaitingLeases

__all__ = ["GpuGuard"]


class GpuGuard:
    """A fair, prioritised, bounded lease on one GPU (the exclusive policy).

    Args:
        name: names the GPU in events, logs and errors.
        max_waiters: bound on the queue; a request beyond it gets :class:`QueueFull`.
        wait_timeout: default seconds a request may wait (``None``: no limit).
        hold_timeout: default seconds a lease may be held before it is treated as hung.
        aging_s: every ``aging_s`` seconds of waiting raise a waiter one priority level
            (``None`` disables aging).
        on_hang: ``"quarantine"`` (keep the GPU until hung work has really ended) or
            ``"release"`` (hand it on at once; hung work may overlap the next holder).
        clock: time source; inject :class:`~gpuguard.FakeClock` in tests.
        events: the bus to publish :class:`~gpuguard.GpuEvent` to (a new one by default).
        arbiter: who decides grants; in-process by default (the scope of this guard).
    """

    policy: Final = "exclusive"

    def __init__(
        self,
        name: str = "gpu0",
        *,
        max_waiters: int = 64,
        wait_timeout: float | None = 300.0,
        hold_timeout: float | None = 900.0,
        aging_s: float | None = 30.0,
        on_hang: OnHang = "quarantine",
        clock: Clock | None = None,
        events: EventBus | None = None,
        arbiter: Arbiter | None = None,
    ) -> None:
        if max_waiters < 0:
            raise ValueError("max_waiters must be >= 0")
        if on_hang not in ("quarantine", "release"):
            raise ValueError("on_hang must be 'quarantine' or 'release'")
        self.name = name
        self.max_waiters = max_waiters
        self.wait_timeout = check_timeout(wait_timeout, "wait_timeout")
        self.hold_timeout = check_timeout(hold_timeout, "hold_timeout")
        self.on_hang: OnHang = on_hang
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.events = events if events is not None else EventBus()
        self.events.add_listener(log_gpu_event)
        self._arbiter: Arbiter = arbiter if arbiter is not None else LocalArbiter(aging_s=aging_s)
        self._arbiter.bind(self._on_grant, self._on_lost)
        self._telemetry = GuardTelemetry(name, self.events, self.clock)
        self._hung = HungLeases(self.clock, self._arbiter, self._telemetry, self._forget)
        self._waiting = WaitingLeases(
            self.clock,
            self._arbiter,
            self._telemetry,
            self._hung,
            forget=self._forget,
            finish=self._finish,
            holder=self._holder_label,
        )
        self._ids = itertools.count(1)
        self._leases: dict[int, Lease] = {}
        """This process's leases that wait or hold, by lease id."""

    @classmethod
    def host(
        cls,
        name: str = "gpu0",
        *,
        lock_dir: Path | str | None = None,
        aging_s: float | None = 30.0,
        clock: Clock | None = None,
        **options: Any,
    ) -> GpuGuard:
        """A guard whose lease is shared by every process on this host (the host scope).

        Processes meet in ``lock_dir`` (default ``$XDG_RUNTIME_DIR/gpuguard``, else
        ``/dev/shm/gpuguard-<uid>``, created owner-only); ``name`` names the GPU there. A holder
        or waiter that dies leaves the lease and the queue at once. ``options`` are those of
        :class:`GpuGuard`.
        """
        clock = clock if clock is not None else SystemClock()
        arbiter = HostArbiter(name, lock_dir=lock_dir, aging_s=aging_s, clock=clock)
        return cls(name, aging_s=aging_s, clock=clock, arbiter=arbiter, **options)

    @classmethod
    def redis(
        cls,
        url: str,
        name: str = "gpu0",
        *,
        ttl_s: float = 2.0,
        prefix: str = "gpuguard",
        max_waiters: int = 64,
        wait_timeout: float | None = 300.0,
        hold_timeout: float | None = 900.0,
        aging_s: float | None = 30.0,
        on_hang: OnHang = "quarantine",
        clock: Clock | None = None,
        events: EventBus | None = None,
    ) -> GpuGuard:
        """A guard whose lease is shared through the Redis at ``url``.

        Every process on every host that names the same GPU (``name``, under ``prefix``)
        shares it. A holder that dies frees the GPU within ``ttl_s``; one that loses its lease gets
        :class:`LeaseLost`. Needs the ``redis`` extra; call :meth:`aclose` when done.
        """
        from ._redis_arbiter import RedisArbiter  # the redis extra is needed only here

        clock = clock if clock is not None else SystemClock()
        arbiter = RedisArbiter.from_url(
            url, name, aging_s=aging_s, ttl_s=ttl_s, prefix=prefix, clock=clock
        )
        return cls(
            name,
            max_waiters=max_waiters,
            wait_timeout=wait_timeout,
            hold_timeout=hold_timeout,
            on_hang=on_hang,
            clock=clock,
            events=events,
            arbiter=arbiter,
        )

    async def aclose(self) -> None:
        """Let go of the arbiter's connections and background tasks (shared scopes)."""
        await self._arbiter.aclose()

    @property
    def scope(self) -> str:
        """How wide the lease is: ``process``, ``host`` or ``redis``."""
        return self._arbiter.scope

    # --- public API ------------------------------------------------------------------------

    def hold(
        self,
        operation: str,
        *,
        model: str | None = None,
        priority: Priority = Priority.NORMAL,
        wait_timeout: Timeout = DEFAULT,
        hold_timeout: Timeout = DEFAULT,
    ) -> Hold:
        """Hold the GPU for the body of ``async with``, waiting in the queue if needed.

        The outcome (completed, failed, cancelled) is reported from how the body exits. If
        the lease outlives ``hold_timeout`` its work is stopped and the ``async with``
        raises :class:`OperationHung`.
        """
        check_option(wait_timeout, "wait_timeout")
        check_option(hold_timeout, "hold_timeout")
        return Hold(
            self,
            operation,
            model=model,
            priority=priority,
            wait_timeout=wait_timeout,
            hold_timeout=hold_timeout,
            nowait=False,
        )

    def try_hold(
        self,
        operation: str,
        *,
        model: str | None = None,
        priority: Priority = Priority.BACKGROUND,
        hold_timeout: Timeout = DEFAULT,
    ) -> Hold:
        """Like :meth:`hold`, but raise :class:`WouldBlock` instead of waiting.

        Fails while the GPU is held or anyone is queued: it never jumps the queue.
        """
        check_option(hold_timeout, "hold_timeout")
        return Hold(
            self,
            operation,
            model=model,
            priority=priority,
            wait_timeout=DEFAULT,
            hold_timeout=hold_timeout,
            nowait=True,
        )

    async def acquire(
        self,
        operation: str,
        *,
        model: str | None = None,
        priority: Priority = Priority.NORMAL,
        wait_timeout: Timeout = DEFAULT,
        hold_timeout: Timeout = DEFAULT,
    ) -> Lease:
        """Wait for the GPU and return the granted lease; the caller must release it."""
        lease, pending = await self._request(
            operation,
            model=model,
            priority=priority,
            wait_timeout=wait_timeout,
            hold_timeout=hold_timeout,
        )
        if pending is not None:
            await self._waiting.await_grant(lease, pending)
        return lease

    def acquire_nowait(
        self,
        operation: str,
        *,
        model: str | None = None,
        priority: Priority = Priority.BACKGROUND,
        hold_timeout: Timeout = DEFAULT,
    ) -> Lease:
        """Take the GPU if it is free and nobody is queued, else raise :class:`WouldBlock`.

        Never waits for the GPU. On the Redis scope it makes one bounded round trip (none
        while the GPU is known to be busy); async code may prefer ``try_hold``.
        """
        lease = self._new_lease(operation, model, priority, hold_timeout)
        granted = self._arbiter.try_acquire_now(lease.ticket, lease.requested_at)
        return self._granted_nowait(lease, granted)

    async def _acquire_nowait(
        self, operation: str, *, model: str | None, priority: Priority, hold_timeout: Timeout
    ) -> Lease:
        """:meth:`acquire_nowait` on any scope (``try_hold``)."""
        lease = self._new_lease(operation, model, priority, hold_timeout)
        ticket, now = lease.ticket, lease.requested_at
        arbiter = self._arbiter
        granted = (
            arbiter.try_acquire_now(ticket, now)
            if arbiter.decides_locally
            else await arbiter.try_acquire(ticket, now)
        )
        return self._granted_nowait(lease, granted)

    def _granted_nowait(self, lease: Lease, granted: bool) -> Lease:
        if not granted:
            raise WouldBlock(
                operation=lease.operation,
                model=lease.model,
                holder=self._holder_label(),
                queued=self._arbiter.queue_length(),
            )
        self._grant(lease, 0.0, queued=False)
        return lease

    @property
    def current(self) -> HolderInfo | None:
        """The operation holding the GPU (hung or not), or ``None`` when it is free."""
        grant = self._arbiter.holder()
        return None if grant is None else holder_info(grant, self.clock.monotonic())

    @property
    def locked(self) -> bool:
        """True while a lease is held (hung ones included)."""
        return self._arbiter.holder() is not None

    @property
    def queue_length(self) -> int:
        """How many requests are waiting."""
        return self._arbiter.queue_length()

    def snapshot(self) -> GuardSnapshot:
        """A frozen view: holder, waiters in service order, counters."""
        now = self.clock.monotonic()
        waiters = waiter_infos(self._arbiter.waiters(now), now)
        return GuardSnapshot(
            guard=self.name,
            policy=self.policy,
            scope=self.scope,
            holder=self.current,
            waiters=waiters,
            counters=self._telemetry.counters,
            max_waiters=self.max_waiters,
            dropped_events=self.events.dropped,
            taken_at=self.clock.time(),
        )

    def __repr__(self) -> str:
        return (
            f"<GpuGuard {self.name!r} scope={self.scope} holder={self._holder_label()!r} "
            f"waiting={self.queue_length}>"
        )

    # --- requests and grants (called by Hold and Lease) -------------------------------------

    async def _request(
        self,
        operation: str,
        *,
        model: str | None,
        priority: Priority,
        wait_timeout: Timeout,
        hold_timeout: Timeout,
    ) -> tuple[Lease, asyncio.Future[None] | None]:
        """Take the GPU at once, or a place in the queue (``QueueFull`` when there is none).

        Returns the lease and, when it is queued, the future of its grant.
        """
        wait_s = check_timeout(
            self.wait_timeout if wait_timeout is DEFAULT else wait_timeout, "wait_timeout"
        )
        lease = self._new_lease(operation, model, priority, hold_timeout)
        ticket, now = lease.ticket, lease.requested_at
        try:
            arbiter = self._arbiter
            if (
                arbiter.try_acquire_now(ticket, now)
                if arbiter.decides_locally
                else await arbiter.try_acquire(ticket, now)
            ):
                self._grant(lease, 0.0, queued=False)
                return lease, None
            self._leases[ticket.lease_id] = lease  # before enqueue: a shared scope may grant
            pending = await self._arbiter.enqueue(ticket, now, limit=self.max_waiters)
        except asyncio.CancelledError:
            # Cancelled while a shared scope was asked: the arbiter gives back what it got.
            self._leases.pop(ticket.lease_id, None)
            self._waiting.abandon(lease)
            raise
        except BaseException:
            self._leases.pop(ticket.lease_id, None)
            raise
        if pending is None:
            self._leases.pop(ticket.lease_id, None)
            self._waiting.reject(lease)
        if lease.state is LeaseState.WAITING:  # not granted while it joined the line
            self._waiting.joined(lease, pending, wait_s)
        return lease, pending

    def _on_grant(self, ticket: Ticket, waited_s: float) -> None:
        """The arbiter granted a queued ticket of this process."""
        lease = self._leases.get(ticket.lease_id)
        if lease is not None:
            if lease.timer is not None:
                lease.timer.cancel()  # its wait timeout
            self._grant(lease, waited_s, queued=True)

    def _grant(self, lease: Lease, waited_s: float, *, queued: bool) -> None:
        now = self.clock.monotonic()
        lease.state = LeaseState.HELD
        lease.granted_at = now
        if self._arbiter.issues_fences:  # else no need to ask who holds (a locked file read)
            grant = self._arbiter.holder()
            if grant is not None and grant.ticket == lease.ticket:
                lease.fence = grant.fence
        self._leases[lease.lease_id] = lease
        self._telemetry.started(lease.ticket, waited_s=waited_s, queued=queued)
        if lease.hold_timeout is not None:
            lease.timer = self.clock.call_later(
                lease.hold_timeout, partial(self._on_hold_timeout, lease)
            )
        else:
            lease.timer = None

    def _new_lease(
        self, operation: str, model: str | None, priority: Priority, hold_timeout: Timeout
    ) -> Lease:
        hold_s = self.hold_timeout if hold_timeout is DEFAULT else hold_timeout
        ticket = Ticket(next(self._ids), operation, model, Priority(priority), Owner.this_process())
        return Lease(self, ticket, check_timeout(hold_s, "hold_timeout"), self.clock.monotonic())

    # --- endings -------------------------------------------------------------------------------

    def _end(
        self, lease: Lease, exc_type: type[BaseException] | None, exc: BaseException | None
    ) -> None:
        """End a hold from how its body exited."""
        if exc_type is None:
            self._finish(lease, GpuStatus.COMPLETED, "")
        elif issubclass(exc_type, asyncio.CancelledError | GeneratorExit):
            # GeneratorExit: a streaming generator closed early (the client went away).
            self._finish(lease, GpuStatus.CANCELLED, "cancelled while holding the GPU")
        else:
            self._finish(lease, GpuStatus.FAILED, f"{exc_type.__name__}: {exc}")

    def _release(self, lease: Lease) -> None:
        """:meth:`Lease.release`."""
        if lease.state in INTERRUPTED:
            self._hung.release(lease)
        self._finish(lease, GpuStatus.COMPLETED, "")

    def _finish(self, lease: Lease, status: GpuStatus, detail: str) -> None:
        """Release a held lease with an outcome and hand the GPU on."""
        if lease._guard is not self or lease.state is not LeaseState.HELD:
            self._raise_not_held(lease)
        assert lease.granted_at is not None
        now = self.clock.monotonic()
        lease.state = LeaseState.RELEASED
        self._forget(lease)
        self._telemetry.ended(
            lease.ticket,
            status,
            waited_s=lease.waited_s,
            held_s=now - lease.granted_at,
            detail=detail,
        )
        self._arbiter.release(lease.ticket, now)

    def _raise_not_held(self, lease: Lease) -> NoReturn:
        if lease.state in INTERRUPTED:
            raise lease._interrupt_error()
        raise LeaseNotHeld(
            f"lease #{lease.lease_id} for {lease.operation!r} is not held ({lease.state.value})",
            operation=lease.operation,
            model=lease.model,
            holder=self._holder_label(),
        )

    def _forget(self, lease: Lease) -> None:
        self._leases.pop(lease.lease_id, None)
        if lease.timer is not None:
            lease.timer.cancel()
            lease.timer = None

    # --- hung and lost leases (handled in gpuguard._hung) ---------------------------------

    def _on_hold_timeout(self, lease: Lease) -> None:
        self._hung.hold_timed_out(lease, release=self.on_hang == "release")

    def _on_lost(self, ticket: Ticket, reason: str) -> None:
        """The arbiter says a granted ticket of this process lost the GPU."""
        lease = self._leases.get(ticket.lease_id)
        if lease is not None:
            self._hung.lost(lease, reason)

    def _holder_label(self) -> str | None:
        current = self.current
        return None if current is None else current.label
