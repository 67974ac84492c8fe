"""One guard's leases: requests, grants with their hold deadlines, and endings.

:class:`Leases` is the guard's side of every :class:`~gpuguard.Lease` it grants (the
:class:`~gpuguard.guard._lease.Keeper` a lease is handed) and what an ``async with``
:class:`~gpuguard.guard._hold.Hold` asks for the GPU through. It keeps this process's registry
of leases that wait or hold, asks the arbiter for grants, records each grant's hold deadline
(one timer per guard: :mod:`gpuguard.guard._deadlines`), ends holds with their outcome, and
routes the arbiter's callbacks and the timers to the parts that handle them: queued leases
(:mod:`gpuguard.guard._waiting`), hung and lost ones (:mod:`gpuguard.guard._hung`), counters
and events (:mod:`gpuguard.guard._telemetry`).
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass

from .._clock import Clock
from .._events import EventBus, GpuStatus, Priority
from .._exceptions import GuardError, LeaseNotHeld, WouldBlock
from ._arbiter import Arbiter, holders_of
from ._deadlines import HoldDeadlines
from ._fences import FenceBook
from ._hung import INTERRUPTED, HungLeases
from ._lease import Lease, LeaseState
from ._options import DEFAULT, OnHang, Timeout, check_timeout
from ._snapshot import holder_info
from ._telemetry import GuardTelemetry
from ._tickets import Grant, Owner, Ticket
from ._waiting import WaitingLeases

__all__ = ["Leases", "Limits"]


@dataclass(frozen=True, slots=True)
class Limits:
    """A guard's defaults: how long to wait, how long to hold, how many may wait, hangs."""

    wait_timeout: float | None
    hold_timeout: float | None
    max_waiters: int
    on_hang: OnHang


class Leases:
    """The leases of one guard, from request to ending (see the module docstring)."""

    def __init__(
        self, name: str, limits: Limits, clock: Clock, events: EventBus, arbiter: Arbiter
    ) -> None:
        self.limits = limits
        self.clock = clock
        self.arbiter = arbiter
        self.telemetry = GuardTelemetry(name, events, clock)
        self.fences = FenceBook(name)
        """The newest fencing token seen for this GPU: a lease's work under an older is refused."""
        self.hung = HungLeases(clock, arbiter, self.telemetry, self.forget)
        self.waiting = WaitingLeases(
            clock,
            arbiter,
            self.telemetry,
            self.hung,
            forget=self.forget,
            finish=self.finish,
            holder=self.holder_label,
        )
        self.deadlines = HoldDeadlines(clock, self._on_hold_timeout)
        self._ids = itertools.count(1)
        self._leases: dict[int, Lease] = {}
        """This process's leases that wait or hold, by lease id."""
        arbiter.bind(self._on_grant, self._on_lost)

    # --- asking for the GPU ------------------------------------------------------------------

    async def request(
        self,
        operation: str,
        *,
        model: str | None,
        priority: Priority,
        wait_timeout: Timeout,
        hold_timeout: Timeout,
        memory_bytes: int | None = None,
    ) -> tuple[Lease, asyncio.Future[None] | None]:
        """Take the GPU at once, or a place in the queue (``QueueFull`` when there is none).

        Returns the lease and, when it is queued, the future of its grant.
        """
        check_timeout(self.wait_limit(wait_timeout), "wait_timeout")
        lease = self.new_lease(operation, model, priority, hold_timeout, memory_bytes)
        if self.grant_now(lease):
            return lease, None
        return lease, await self.submit(lease, wait_timeout)

    def wait_limit(self, wait_timeout: Timeout) -> float | None:
        """How long a request asked with ``wait_timeout`` may wait (the guard's default)."""
        return self.limits.wait_timeout if wait_timeout is DEFAULT else wait_timeout

    def grant_now(self, lease: Lease) -> bool:
        """Grant new ``lease`` here and now if the arbiter decides locally and admits it.

        The uncontended hold's one step; else :meth:`submit` asks a shared scope (once) or
        queues.
        """
        arbiter = self.arbiter
        if arbiter.decides_locally and arbiter.try_acquire_now(lease.ticket, lease.requested_at):
            self._grant(lease, 0.0, lease.requested_at, queued=False)
            return True
        return False

    async def submit(self, lease: Lease, wait_timeout: Timeout) -> asyncio.Future[None] | None:
        """Ask for new ``lease`` past :meth:`grant_now`: the future of its grant if queued.

        One call to the arbiter (:meth:`Arbiter.enqueue`), which grants at once or queues
        with what the ``waiting`` event says. ``None`` when it was granted at once;
        ``QueueFull`` when the line has no room.
        """
        limit = self.wait_limit(wait_timeout)
        ticket = lease.ticket
        self._leases[ticket.lease_id] = lease  # before enqueue: a shared scope may grant
        try:
            joined = await self.arbiter.enqueue(
                ticket, lease.requested_at, limit=self.limits.max_waiters
            )
        except asyncio.CancelledError:
            # Cancelled while a shared scope was asked: the arbiter gives back what it got.
            self._leases.pop(ticket.lease_id, None)
            self.waiting.abandon(lease)
            raise
        except BaseException:
            self._leases.pop(ticket.lease_id, None)
            raise
        if joined is None:
            self._leases.pop(ticket.lease_id, None)
            self.waiting.reject(lease)
        if joined.pending is None:  # granted at once (unless told of it while it asked)
            if lease.state is LeaseState.WAITING:
                self._grant(lease, 0.0, self.clock.monotonic(), queued=False)
            return None
        if lease.state is LeaseState.WAITING:  # not granted while it joined the line
            holder = None if joined.holder is None else self._label(joined.holder)
            self.waiting.joined(lease, joined.pending, limit, joined.position, holder)
        return joined.pending

    async def submit_nowait(self, lease: Lease) -> Lease:
        """Past :meth:`grant_now`: ask a shared scope for new ``lease``, else ``WouldBlock``."""
        arbiter = self.arbiter
        granted = not arbiter.decides_locally and await arbiter.try_acquire(
            lease.ticket, lease.requested_at
        )
        return self.granted_nowait(lease, granted)

    def granted_nowait(self, lease: Lease, granted: bool) -> Lease:
        """``lease``, granted without waiting; :class:`WouldBlock` if the arbiter said no."""
        if not granted:
            raise WouldBlock(
                operation=lease.operation,
                model=lease.model,
                holder=self.holder_label(),
                queued=self.arbiter.queue_length(),
            )
        self._grant(lease, 0.0, self.clock.monotonic(), queued=False)
        return lease

    def new_lease(
        self,
        operation: str,
        model: str | None,
        priority: Priority,
        hold_timeout: Timeout,
        memory_bytes: int | None = None,
    ) -> Lease:
        """A lease not yet asked for, with its own ticket (``memory_bytes``: as declared)."""
        if memory_bytes is not None and memory_bytes < 0:
            raise ValueError("memory_bytes must be >= 0")
        hold = (
            self.limits.hold_timeout  # checked when the guard was made
            if hold_timeout is DEFAULT
            else check_timeout(hold_timeout, "hold_timeout")
        )
        ticket = Ticket(
            next(self._ids),
            operation,
            model,
            priority if type(priority) is Priority else Priority(priority),
            Owner.this_process(),
            memory_bytes,
            hold_timeout_s=hold,
        )
        return Lease(self, ticket, hold, self.clock)

    async def await_grant(self, lease: Lease, pending: asyncio.Future[None]) -> None:
        """Wait for a queued lease's grant; cancellation leaves nothing behind."""
        await self.waiting.await_grant(lease, pending)

    def give_up(self, lease: Lease) -> None:
        """A lease asked for and never used: leave the line, or hand its grant on."""
        if lease.state is LeaseState.WAITING:
            self.waiting.abandon(lease)
        elif lease.state is LeaseState.HELD:
            self.finish(lease, GpuStatus.CANCELLED, "given up before it started")
        elif lease.state in INTERRUPTED:
            self.hung.end_quarantine(lease, "it was given up before it started")

    # --- grants ------------------------------------------------------------------------------

    def _on_grant(self, ticket: Ticket, waited_s: float) -> None:
        """The arbiter granted a queued ticket of this process."""
        lease = self._leases.get(ticket.lease_id)
        if lease is not None:
            if lease.timer is not None:
                lease.timer.cancel()  # its wait timeout
            self._grant(lease, waited_s, self.clock.monotonic(), queued=True)

    def _grant(self, lease: Lease, waited_s: float, now: float, *, queued: bool) -> None:
        lease.state = LeaseState.HELD
        lease.granted_at = now
        if self.arbiter.issues_fences:  # else no need to ask who holds (a locked file read)
            mine = (g for g in holders_of(self.arbiter) if g.ticket == lease.ticket)
            grant = next(mine, None)  # its own grant: under a sharing policy, one of several
            if grant is not None:
                lease.fence, lease.fence_floor = grant.fence, grant.fence_floor
        self._leases[lease.ticket.lease_id] = lease
        self.telemetry.started(lease.ticket, waited_s=waited_s, queued=queued)
        lease.timer = None
        if lease.hold_timeout is not None:
            self.deadlines.add(lease, now + lease.hold_timeout)

    # --- endings (the Keeper a lease is handed) ------------------------------------------------

    def end(
        self, lease: Lease, exc_type: type[BaseException] | None, exc: BaseException | None
    ) -> None:
        """End a hold from how its body exited."""
        if exc_type is None:
            self.finish(lease, GpuStatus.COMPLETED, "")
        elif issubclass(exc_type, asyncio.CancelledError | GeneratorExit):
            # GeneratorExit: a streaming generator closed early (the client went away).
            self.finish(lease, GpuStatus.CANCELLED, "cancelled while holding the GPU")
        else:
            self.finish(lease, GpuStatus.FAILED, f"{exc_type.__name__}: {exc}")

    def release(self, lease: Lease) -> None:
        """:meth:`Lease.release`."""
        if lease.state in INTERRUPTED:
            self.hung.release(lease)
        self.finish(lease, GpuStatus.COMPLETED, "")

    def refusal(self, lease: Lease) -> GuardError:
        """What using ``lease`` raises once it is not held: hung, lost or never held."""
        if lease.state in INTERRUPTED:
            return lease.interrupt_error()
        return LeaseNotHeld(
            f"lease #{lease.lease_id} for {lease.operation!r} is not held ({lease.state.value})",
            operation=lease.operation,
            model=lease.model,
            holder=self.holder_label(),
        )

    def work_stopped(self, lease: Lease) -> None:
        """A hung lease's last tracked work has ended: the GPU is free again."""
        self.hung.end_quarantine(lease, "its work has stopped")

    def finish(self, lease: Lease, status: GpuStatus, detail: str) -> None:
        """Release a held lease with an outcome and hand the GPU on."""
        if lease.keeper is not self or lease.state is not LeaseState.HELD:
            raise self.refusal(lease)
        assert lease.granted_at is not None
        now = self.clock.monotonic()
        lease.state = LeaseState.RELEASED
        self.forget(lease)
        self.telemetry.ended(
            lease.ticket,
            status,
            waited_s=lease.waited_s,
            held_s=now - lease.granted_at,
            detail=detail,
        )
        self.arbiter.release(lease.ticket, now)

    def forget(self, lease: Lease) -> None:
        """Drop ``lease`` from the registry, its hold deadline and its wait timer."""
        self._leases.pop(lease.ticket.lease_id, None)
        self.deadlines.discard(lease)
        if lease.timer is not None:
            lease.timer.cancel()
            lease.timer = None

    # --- hung and lost leases (handled in gpuguard.guard._hung) --------------------------------

    def _on_hold_timeout(self, lease: Lease) -> None:
        self.hung.hold_timed_out(lease, release=self.limits.on_hang == "release")

    def _on_lost(self, ticket: Ticket, reason: str) -> None:
        """The arbiter says a granted ticket of this process lost the GPU."""
        lease = self._leases.get(ticket.lease_id)
        if lease is not None:
            self.hung.lost(lease, reason)

    def holder_label(self) -> str | None:
        """How waiters name the current holder (``None`` when the GPU is free)."""
        grant = self.arbiter.holder()
        return None if grant is None else self._label(grant)

    def _label(self, grant: Grant) -> str:
        """How waiters name the holder of ``grant``."""
        return holder_info(grant, self.clock.monotonic()).label
