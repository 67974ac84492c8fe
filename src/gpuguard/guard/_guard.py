"""The GPU lease: one :class:`GpuGuard` per GPU, the front every GPU operation goes through.

Contract (the exclusive policy):

* At most one lease is held at a time.
* Waiters are served by priority (interactive > normal > background), first come first
  served within a priority; with aging a waiter's priority rises one level for every
  ``aging_s`` seconds it has waited, so background work is never starved for ever
  (:mod:`gpuguard.guard._queue`).
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

The parts: the arbiter decides grants (:mod:`gpuguard.guard._arbiter`, one per scope, built
by name in :mod:`gpuguard.guard.scopes`), :class:`~gpuguard.guard._keeper.Leases` takes
requests, grants and endings, and logging is a listener on the event bus. This module owns
the public API and the views of the guard.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .._clock import Clock, SystemClock
from .._events import EventBus, Priority
from ._arbiter import Arbiter, holders_of, lease_fd_of
from ._fences import FenceBook
from ._hold import Hold
from ._keeper import Leases, Limits
from ._lease import Lease
from ._options import DEFAULT, OnHang, Timeout, check_option, check_timeout
from ._snapshot import GuardSnapshot, HolderInfo, holder_info, waiter_infos
from ._telemetry import log_gpu_event, log_wants
from ._tickets import GpuBudget
from .policies import EXCLUSIVE, Policy
from .scopes import make_arbiter

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
        self.events.add_listener(log_gpu_event, wants=log_wants)
        if arbiter is None:
            arbiter = make_arbiter("process", name, aging_s=aging_s, clock=self.clock)
        self._arbiter = arbiter
        limits = Limits(self.wait_timeout, self.hold_timeout, max_waiters, on_hang)
        self._leases = Leases(name, limits, self.clock, self.events, arbiter)

    @classmethod
    def host(
        cls,
        name: str = "gpu0",
        *,
        lock_dir: Path | str | None = None,
        lock_group: str | None = None,
        aging_s: float | None = 30.0,
        clock: Clock | None = None,
        **options: Any,
    ) -> GpuGuard:
        """A guard whose lease is shared by every process on this host (the host scope).

        Processes meet in ``lock_dir`` (default the machine's ``/run/gpuguard``, shared with the
        group ``lock_group``; per-user ``/dev/shm/gpuguard-<uid>`` only where that cannot be
        made); ``name`` names the GPU there. A holder or waiter that dies leaves the lease and
        the queue at once. ``options`` are those of :class:`GpuGuard`.
        """
        clock = clock if clock is not None else SystemClock()
        arbiter = make_arbiter(
            "host", name, lock_dir=lock_dir, lock_group=lock_group, aging_s=aging_s, clock=clock
        )
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
        policy: Policy = EXCLUSIVE,
    ) -> GpuGuard:
        """A guard whose lease is shared through the Redis at ``url``.

        Every process on every host that names the same GPU (``name``, under ``prefix``)
        shares it. A holder that dies frees the GPU within ``ttl_s``; one that loses its lease gets
        :class:`LeaseLost`. Under a sharing ``policy`` (a :class:`~gpuguard.guard.policies.Budget`
        reading that GPU) the lease keeps its ledger in Redis and grants several holders at
        once. Needs the ``redis`` extra; call :meth:`aclose` when done.
        """
        clock = clock if clock is not None else SystemClock()
        arbiter = make_arbiter(
            "redis",
            name,
            redis_url=url,
            aging_s=aging_s,
            ttl_s=ttl_s,
            prefix=prefix,
            clock=clock,
            policy=policy,
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
    def policy(self) -> str:
        """Who may hold at once: ``exclusive`` (:mod:`gpuguard.guard.policies`)."""
        return self._arbiter.policy.name

    @property
    def scope(self) -> str:
        """How wide the lease is: ``process``, ``host`` or ``redis``."""
        return self._arbiter.scope

    @property
    def fences(self) -> FenceBook:
        """The newest fencing token seen for this GPU: work under an older one is refused.

        Fed by this guard's leases (on scopes that issue fences) and by whoever else is the
        last hop before the GPU (``gpuguard serve`` admits the fences its requests carry).
        """
        return self._leases.fences

    # --- public API ------------------------------------------------------------------------

    def hold(
        self,
        operation: str,
        *,
        model: str | None = None,
        priority: Priority = Priority.NORMAL,
        wait_timeout: Timeout = DEFAULT,
        hold_timeout: Timeout = DEFAULT,
        memory_bytes: int | None = None,
    ) -> Hold:
        """Hold the GPU for the body of ``async with``, waiting in the queue if needed.

        The outcome (completed, failed, cancelled) is reported from how the body exits. If
        the lease outlives ``hold_timeout`` its work is stopped and the ``async with``
        raises :class:`OperationHung`. ``memory_bytes`` declares the GPU memory the work
        needs, for the budget policy (``None``: the policy's figure for ``model``).
        """
        check_option(wait_timeout, "wait_timeout")
        check_option(hold_timeout, "hold_timeout")
        return Hold(
            self._leases,
            operation,
            model=model,
            priority=priority,
            wait_timeout=wait_timeout,
            hold_timeout=hold_timeout,
            nowait=False,
            memory_bytes=memory_bytes,
        )

    def try_hold(
        self,
        operation: str,
        *,
        model: str | None = None,
        priority: Priority = Priority.BACKGROUND,
        hold_timeout: Timeout = DEFAULT,
        memory_bytes: int | None = None,
    ) -> Hold:
        """Like :meth:`hold`, but raise :class:`WouldBlock` instead of waiting.

        Fails while the GPU is held or anyone is queued: it never jumps the queue.
        """
        check_option(hold_timeout, "hold_timeout")
        return Hold(
            self._leases,
            operation,
            model=model,
            priority=priority,
            wait_timeout=DEFAULT,
            hold_timeout=hold_timeout,
            nowait=True,
            memory_bytes=memory_bytes,
        )

    async def acquire(
        self,
        operation: str,
        *,
        model: str | None = None,
        priority: Priority = Priority.NORMAL,
        wait_timeout: Timeout = DEFAULT,
        hold_timeout: Timeout = DEFAULT,
        memory_bytes: int | None = None,
    ) -> Lease:
        """Wait for the GPU and return the granted lease; the caller must release it."""
        lease, pending = await self._leases.request(
            operation,
            model=model,
            priority=priority,
            wait_timeout=wait_timeout,
            hold_timeout=hold_timeout,
            memory_bytes=memory_bytes,
        )
        if pending is not None:
            await self._leases.await_grant(lease, pending)
        return lease

    def acquire_nowait(
        self,
        operation: str,
        *,
        model: str | None = None,
        priority: Priority = Priority.BACKGROUND,
        hold_timeout: Timeout = DEFAULT,
        memory_bytes: int | None = None,
    ) -> Lease:
        """Take the GPU if it is free and nobody is queued, else raise :class:`WouldBlock`.

        Never waits for the GPU. On the Redis scope it makes one bounded round trip (none
        while the GPU is known to be busy); async code may prefer ``try_hold``.
        """
        lease = self._leases.new_lease(operation, model, priority, hold_timeout, memory_bytes)
        granted = self._arbiter.try_acquire_now(lease.ticket, lease.requested_at)
        return self._leases.granted_nowait(lease, granted)

    def lease_fd(self, lease: Lease) -> int | None:
        """A new descriptor that keeps held ``lease`` while any process has it open.

        For a program started under the lease to inherit (``gpuguard run`` passes it on):
        the GPU stays held while any process of the program's tree lives, even if this
        process is killed. The caller closes its own copy once the program has started.
        ``None`` on the process and Redis scopes, which have no such kernel object, and for
        a lease that is not held.
        """
        return lease_fd_of(self._arbiter, lease.ticket) if lease.held else None

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

    @property
    def memory(self) -> GpuBudget | None:
        """The GPU's memory as the policy counts it now: the snapshot's ``memory`` alone.

        ``None`` under ``exclusive``, or while the GPU cannot be read.
        """
        return self._arbiter.policy.memory(holders_of(self._arbiter))

    def snapshot(self) -> GuardSnapshot:
        """A frozen view: holders, waiters in service order, the GPU's memory, counters."""
        now = self.clock.monotonic()
        waiters = waiter_infos(self._arbiter.waiters(now), now)
        policy = self._arbiter.policy
        grants = holders_of(self._arbiter)
        holders = tuple(holder_info(g, now, policy.need(g.ticket)) for g in grants)
        return GuardSnapshot(
            guard=self.name,
            policy=self.policy,
            scope=self.scope,
            holder=holders[0] if holders else None,
            waiters=waiters,
            counters=self._leases.telemetry.counters,
            max_waiters=self.max_waiters,
            dropped_events=self.events.dropped,
            taken_at=self.clock.time(),
            holders=holders,
            memory=policy.memory(grants),
        )

    def __repr__(self) -> str:
        return (
            f"<GpuGuard {self.name!r} scope={self.scope} holder={self._leases.holder_label()!r} "
            f"waiting={self.queue_length}>"
        )
