"""The GPU lease: one :class:`GpuGuard` per GPU, and the :class:`Lease` it grants.

Contract (the exclusive policy):

* At most one lease is held at a time.
* Waiters are served by priority (interactive > normal > background), first come first
  served within a priority. With aging, a waiter's priority rises one level for every
  ``aging_s`` seconds it has waited, so background work is never starved for ever.
* :meth:`GpuGuard.acquire_nowait` / :meth:`GpuGuard.try_hold` never jump the queue: they fail
  with :class:`WouldBlock` while anyone holds the GPU *or* waits for it.
* Everything is bounded: ``wait_timeout`` (:class:`WaitTimeout`, naming the holder),
  ``hold_timeout`` (the holder is treated as hung: its task is cancelled, its lease freed,
  a ``hung`` event emitted, and it gets :class:`OperationHung`), ``max_waiters``
  (:class:`QueueFull` with a retry-after estimate).

Cancellation safety (the invariant every code path keeps): *the guard never holds a lease
for a task that will not release it.* A waiter cancelled while queued leaves the queue; a
waiter cancelled after being granted but before it resumed releases the lease at once and
hands it on; a holder cancelled inside ``async with`` releases on the way out; a lease
taken back as hung (even before its task resumed) surfaces as :class:`OperationHung`, with the
guard's own cancellation withdrawn from the task. A second invariant keeps hand-off simple:
*when nobody holds the GPU, nobody waits for it*; every release grants the next waiter in the
same step.

Hot path: an uncontended hold and release builds no event objects unless someone subscribed
(history entries are built when read) and formats no log record unless INFO is enabled.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging
from collections import deque
from functools import partial
from types import TracebackType
from typing import Final, Literal, NoReturn

from ._clock import Clock, SystemClock, TimerHandle
from ._events import EventBus, GpuEvent, GpuStatus, Priority
from ._exceptions import LeaseNotHeld, OperationHung, QueueFull, WaitTimeout, WouldBlock
from ._snapshot import GuardCounters, GuardSnapshot, HolderInfo, WaiterInfo

__all__ = ["DEFAULT", "DefaultType", "GpuGuard", "Lease", "Timeout"]

logger = logging.getLogger("gpuguard.guard")

# Timer callbacks may run up to the loop's clock resolution early; treat that as "due".
_DUE_EPSILON: Final = 1e-6


class DefaultType(enum.Enum):
    """The type of :data:`DEFAULT`."""

    DEFAULT = "DEFAULT"

    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT: Final = DefaultType.DEFAULT
"""Sentinel: use the guard's configured value. ``None`` means "no limit"."""

Timeout = float | None | Literal[DefaultType.DEFAULT]


class _State(enum.Enum):
    WAITING = "waiting"
    HELD = "held"
    RELEASED = "released"
    HUNG = "hung"
    ABANDONED = "abandoned"


# Python 3.11 looks enum members up on a slow path (about 60 ns each; 3.12 fixed it) and one
# hold/release cycle reads a dozen, several times the cost of an asyncio.Lock: bind them once.
_WAITING: Final = _State.WAITING
_HELD: Final = _State.HELD
_RELEASED: Final = _State.RELEASED
_HUNG: Final = _State.HUNG
_ABANDONED: Final = _State.ABANDONED
_STARTED: Final = GpuStatus.STARTED
_COMPLETED: Final = GpuStatus.COMPLETED
_FAILED: Final = GpuStatus.FAILED
_CANCELLED: Final = GpuStatus.CANCELLED


class Lease:
    """One grant of the GPU to one operation.

    Obtained from :meth:`GpuGuard.acquire` (release it with :meth:`release`) or, better, from
    ``async with guard.hold(...) as lease``.
    """

    __slots__ = (
        "_cancelled_by_guard",
        "_deadline",
        "_guard",
        "_state",
        "_task",
        "granted_at",
        "hold_timeout",
        "lease_id",
        "model",
        "operation",
        "priority",
        "requested_at",
    )

    def __init__(
        self,
        guard: GpuGuard,
        lease_id: int,
        operation: str,
        model: str | None,
        priority: Priority,
        hold_timeout: float | None,
        requested_at: float,
    ) -> None:
        self._guard = guard
        self.lease_id = lease_id
        self.operation = operation
        self.model = model
        self.priority = priority
        self.hold_timeout = hold_timeout
        self.requested_at = requested_at
        self.granted_at: float | None = None
        self._state = _WAITING
        self._task: asyncio.Task[object] | None = None
        self._deadline: float | None = None
        self._cancelled_by_guard = False

    @property
    def held(self) -> bool:
        """True while this lease holds the GPU."""
        return self._state is _HELD

    @property
    def hung(self) -> bool:
        """True if the guard took this lease back because it outlived its hold timeout."""
        return self._state is _HUNG

    @property
    def waited_s(self) -> float:
        """Seconds between the request and the grant (0 if never granted)."""
        return 0.0 if self.granted_at is None else self.granted_at - self.requested_at

    def release(self) -> None:
        """Give the GPU back and hand it to the next waiter.

        Raises :class:`LeaseNotHeld` if the lease was never granted or already released, and
        :class:`OperationHung` if the guard already took it back as hung.
        """
        if self._state is _HUNG:
            _withdraw_guard_cancel(self)
        self._guard._finish(self, _COMPLETED, "")

    def __repr__(self) -> str:
        model = f" model={self.model!r}" if self.model else ""
        return (
            f"<Lease #{self.lease_id} {self.operation!r}{model} {self.priority} "
            f"{self._state.value}>"
        )


class _Waiter:
    __slots__ = ("enqueued_at", "future", "lease", "queued", "timer")

    def __init__(self, lease: Lease, future: asyncio.Future[None], enqueued_at: float) -> None:
        self.lease = lease
        self.future = future
        self.enqueued_at = enqueued_at
        self.timer: TimerHandle | None = None
        self.queued = True


class _Hold:
    """The async context manager behind :meth:`GpuGuard.hold` and :meth:`GpuGuard.try_hold`."""

    __slots__ = (
        "_guard",
        "_hold_timeout",
        "_lease",
        "_model",
        "_nowait",
        "_operation",
        "_priority",
        "_wait_timeout",
    )

    def __init__(
        self,
        guard: GpuGuard,
        operation: str,
        model: str | None,
        priority: Priority,
        wait_timeout: Timeout,
        hold_timeout: Timeout,
        nowait: bool,
    ) -> None:
        self._guard = guard
        self._operation = operation
        self._model = model
        self._priority = priority
        self._wait_timeout = wait_timeout
        self._hold_timeout = hold_timeout
        self._nowait = nowait
        self._lease: Lease | None = None

    async def __aenter__(self) -> Lease:
        if self._lease is not None:
            raise RuntimeError("a hold() context manager cannot be entered twice")
        # The uncontended case, inlined: no acquire() coroutine to create and await.
        self._lease = self._guard._grant_if_free(
            self._operation, self._model, self._priority, self._hold_timeout
        )
        if self._lease is not None:
            return self._lease
        if self._nowait:
            self._lease = self._guard.acquire_nowait(
                self._operation,
                model=self._model,
                priority=self._priority,
                hold_timeout=self._hold_timeout,
            )
        else:
            self._lease = await self._guard.acquire(
                self._operation,
                model=self._model,
                priority=self._priority,
                wait_timeout=self._wait_timeout,
                hold_timeout=self._hold_timeout,
            )
        return self._lease

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        lease = self._lease
        assert lease is not None
        if lease._state is _HUNG:
            absorbed: asyncio.CancelledError | None = None
            if exc_type is None and lease._cancelled_by_guard:
                # The body finished before the guard's cancellation reached it (it advanced
                # the clock itself, say). Take delivery here, or the CancelledError would
                # surface at the caller's next await, long after the ``async with``.
                try:
                    await asyncio.sleep(0)
                except asyncio.CancelledError as err:
                    absorbed = err
            if _withdraw_guard_cancel(lease):
                # Also cancelled from outside: let that cancellation win.
                if absorbed is not None:
                    raise absorbed
                if exc_type is not None and issubclass(exc_type, asyncio.CancelledError):
                    return
            raise self._guard._hung_error(lease) from exc
        if exc_type is None:
            self._guard._finish(lease, _COMPLETED, "")
        elif issubclass(exc_type, asyncio.CancelledError | GeneratorExit):
            # GeneratorExit: a streaming generator closed early (the client went away).
            self._guard._finish(lease, _CANCELLED, "cancelled while holding the GPU")
        else:
            self._guard._finish(lease, _FAILED, f"{exc_type.__name__}: {exc}")


class GpuGuard:
    """A fair, prioritised, bounded lease on one GPU (the exclusive policy).

    Args:
        name: names the GPU in events, logs and errors.
        max_waiters: bound on the queue; a request beyond it gets :class:`QueueFull`.
        wait_timeout: default seconds a request may wait (``None``: no limit).
        hold_timeout: default seconds a lease may be held before it is treated as hung.
        aging_s: every ``aging_s`` seconds of waiting raise a waiter one priority level
            (``None`` disables aging).
        clock: time source; inject :class:`~gpuguard.FakeClock` in tests.
        events: the bus to publish :class:`~gpuguard.GpuEvent` to (a new one by default).
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
        clock: Clock | None = None,
        events: EventBus | None = None,
    ) -> None:
        if max_waiters < 0:
            raise ValueError("max_waiters must be >= 0")
        if aging_s is not None and aging_s <= 0:
            raise ValueError("aging_s must be > 0, or None to disable aging")
        self.name = name
        self.max_waiters = max_waiters
        self.wait_timeout = _check_timeout(wait_timeout, "wait_timeout")
        self.hold_timeout = _check_timeout(hold_timeout, "hold_timeout")
        self.aging_s = aging_s
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.events = events if events is not None else EventBus()
        self._ids = itertools.count(1)
        self._holder: Lease | None = None
        self._queues: dict[Priority, deque[_Waiter]] = {p: deque() for p in Priority}
        self._n_waiting = 0
        self._watchdog: TimerHandle | None = None
        self._watchdog_due = 0.0
        self._acquired = self._waited = self._completed = self._failed = 0
        self._cancelled = self._timed_out = self._hung = self._rejected = self._fallbacks = 0
        self._abandoned = 0
        self._total_wait_s = self._total_hold_s = 0.0

    # --- public API ------------------------------------------------------------------------

    def hold(
        self,
        operation: str,
        *,
        model: str | None = None,
        priority: Priority = Priority.NORMAL,
        wait_timeout: Timeout = DEFAULT,
        hold_timeout: Timeout = DEFAULT,
    ) -> _Hold:
        """Hold the GPU for the body of ``async with``, waiting in the queue if needed.

        The outcome (completed, failed, cancelled) is reported from how the body exits. If
        the body outlives ``hold_timeout`` it is cancelled and the ``async with`` raises
        :class:`OperationHung`.
        """
        if wait_timeout is not DEFAULT:
            _check_timeout(wait_timeout, "wait_timeout")
        if hold_timeout is not DEFAULT:
            _check_timeout(hold_timeout, "hold_timeout")
        return _Hold(self, operation, model, priority, wait_timeout, hold_timeout, False)

    def try_hold(
        self,
        operation: str,
        *,
        model: str | None = None,
        priority: Priority = Priority.BACKGROUND,
        hold_timeout: Timeout = DEFAULT,
    ) -> _Hold:
        """Like :meth:`hold`, but raise :class:`WouldBlock` instead of waiting.

        Fails while the GPU is held or anyone is queued: it never jumps the queue.
        """
        if hold_timeout is not DEFAULT:
            _check_timeout(hold_timeout, "hold_timeout")
        return _Hold(self, operation, model, priority, DEFAULT, hold_timeout, True)

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
        wait_s = self.wait_timeout if wait_timeout is DEFAULT else wait_timeout
        wait_s = _check_timeout(wait_s, "wait_timeout")
        lease = self._grant_if_free(operation, model, priority, hold_timeout)
        if lease is not None:
            return lease
        lease = self._new_lease(operation, model, priority, hold_timeout)
        await self._wait(lease, wait_s)
        return lease

    def acquire_nowait(
        self,
        operation: str,
        *,
        model: str | None = None,
        priority: Priority = Priority.BACKGROUND,
        hold_timeout: Timeout = DEFAULT,
    ) -> Lease:
        """Take the GPU if it is free and nobody is queued, else raise :class:`WouldBlock`."""
        lease = self._grant_if_free(operation, model, priority, hold_timeout)
        if lease is None:
            # Validate first: an impossible request is a ValueError even when the GPU is busy.
            self._resolve_hold_timeout(hold_timeout)
            raise WouldBlock(
                operation=operation,
                model=model,
                holder=self._holder_name(),
                queued=self._n_waiting,
            )
        return lease

    def report_fallback(
        self, operation: str, *, model: str | None = None, detail: str = ""
    ) -> None:
        """Record that ``operation`` ran on the CPU because the GPU was busy."""
        self._fallbacks += 1
        holder = self._holder_name()
        event = GpuEvent(
            guard=self.name,
            operation=operation,
            model=model,
            status=GpuStatus.FALLBACK,
            timestamp=self.clock.time(),
            lease_id=0,
            priority=Priority.BACKGROUND,
            holder=holder,
            detail=detail or "GPU busy, ran on the CPU",
        )
        self.events.publish(event)
        logger.info(
            "fallback: op=%s model=%s holder=%s detail=%s", operation, model, holder, detail
        )

    @property
    def current(self) -> HolderInfo | None:
        """The operation holding the GPU, or ``None`` when it is free."""
        lease = self._holder
        if lease is None or lease.granted_at is None:
            return None
        return HolderInfo(
            lease_id=lease.lease_id,
            operation=lease.operation,
            model=lease.model,
            priority=lease.priority,
            since=lease.granted_at,
            held_s=self.clock.monotonic() - lease.granted_at,
        )

    @property
    def locked(self) -> bool:
        """True while a lease is held."""
        return self._holder is not None

    @property
    def queue_length(self) -> int:
        """How many requests are waiting."""
        return self._n_waiting

    def snapshot(self) -> GuardSnapshot:
        """A frozen view: holder, waiters in service order, counters."""
        now = self.clock.monotonic()
        waiters = tuple(
            WaiterInfo(
                lease_id=w.lease.lease_id,
                operation=w.lease.operation,
                model=w.lease.model,
                priority=w.lease.priority,
                effective_priority=self._effective_priority(w, now),
                position=position,
                since=w.enqueued_at,
                waited_s=now - w.enqueued_at,
            )
            for position, w in enumerate(self._service_order(now), start=1)
        )
        return GuardSnapshot(
            guard=self.name,
            policy=self.policy,
            holder=self.current,
            waiters=waiters,
            counters=GuardCounters(
                acquired=self._acquired,
                waited=self._waited,
                completed=self._completed,
                failed=self._failed,
                cancelled=self._cancelled,
                abandoned=self._abandoned,
                timed_out=self._timed_out,
                hung=self._hung,
                rejected=self._rejected,
                fallbacks=self._fallbacks,
                total_wait_s=self._total_wait_s,
                total_hold_s=self._total_hold_s,
            ),
            max_waiters=self.max_waiters,
            dropped_events=self.events.dropped,
            taken_at=self.clock.time(),
        )

    def __repr__(self) -> str:
        return f"<GpuGuard {self.name!r} holder={self._holder_name()!r} waiting={self._n_waiting}>"

    # --- internals -------------------------------------------------------------------------

    def _resolve_hold_timeout(self, hold_timeout: Timeout) -> float | None:
        if hold_timeout is DEFAULT:
            return self.hold_timeout
        return _check_timeout(hold_timeout, "hold_timeout")

    def _grant_if_free(
        self, operation: str, model: str | None, priority: Priority, hold_timeout: Timeout
    ) -> Lease | None:
        """The uncontended path: grant a new lease at once, or return ``None`` if busy."""
        if self._holder is not None or self._n_waiting:
            return None
        lease = self._new_lease(operation, model, priority, hold_timeout)
        self._grant(lease, lease.requested_at, 0.0)
        return lease

    def _new_lease(
        self, operation: str, model: str | None, priority: Priority, hold_timeout: Timeout
    ) -> Lease:
        lease = Lease(
            self,
            next(self._ids),
            operation,
            model,
            # Priority(x) costs an enum lookup; skip it for the common, already-typed case.
            priority if type(priority) is Priority else Priority(priority),
            self._resolve_hold_timeout(hold_timeout),
            self.clock.monotonic(),
        )
        lease._task = asyncio.current_task()
        return lease

    async def _wait(self, lease: Lease, wait_s: float | None) -> None:
        if self._n_waiting >= self.max_waiters:
            self._reject(lease)
        waiter = _Waiter(lease, asyncio.get_running_loop().create_future(), lease.requested_at)
        self._queues[lease.priority].append(waiter)
        self._n_waiting += 1
        position = self._service_order(waiter.enqueued_at).index(waiter) + 1
        holder = self._holder_name()
        self._emit(lease, GpuStatus.WAITING, position=position, holder=holder)
        logger.info(
            "waiting: op=%s model=%s priority=%s position=%d holder=%s",
            lease.operation,
            lease.model,
            lease.priority,
            position,
            holder,
        )
        if wait_s is not None:
            waiter.timer = self.clock.call_later(wait_s, partial(self._on_wait_timeout, waiter))
        try:
            await waiter.future
        except asyncio.CancelledError:
            if waiter.future.done() and not waiter.future.cancelled():
                waiter.future.exception()  # a timeout raced the cancellation: mark it seen
            if lease._state is _HELD:
                self._finish(lease, _CANCELLED, "cancelled before it could start")
            elif lease._state is _WAITING:
                self._abandon(waiter)
            elif lease._state is _HUNG and not _withdraw_guard_cancel(lease):
                # Granted, then outlived its hold timeout before it even resumed: the
                # cancellation was the guard's own, so report what happened instead.
                raise self._hung_error(lease) from None
            raise
        finally:
            if waiter.timer is not None:
                waiter.timer.cancel()

    def _reject(self, lease: Lease) -> NoReturn:
        self._rejected += 1
        lease._state = _ABANDONED
        holder = self._holder_name()
        finished = self._completed + self._failed + self._cancelled + self._hung
        mean_hold = self._total_hold_s / max(1, finished)
        retry_after = max(1.0, mean_hold * (self._n_waiting + 1))
        self._emit(lease, GpuStatus.REJECTED, holder=holder, detail="GPU queue full")
        logger.warning(
            "rejected: op=%s model=%s queue=%d holder=%s",
            lease.operation,
            lease.model,
            self._n_waiting,
            holder,
        )
        raise QueueFull(
            operation=lease.operation,
            model=lease.model,
            holder=holder,
            queue_length=self._n_waiting,
            retry_after_s=retry_after,
        )

    def _abandon(self, waiter: _Waiter) -> None:
        """A queued waiter's task was cancelled: take it out of the queue."""
        lease = waiter.lease
        self._dequeue(waiter)
        lease._state = _ABANDONED
        self._abandoned += 1
        waited = self.clock.monotonic() - waiter.enqueued_at
        self._emit(lease, _CANCELLED, waited_s=waited, detail="cancelled while waiting")
        logger.info(
            "cancelled: op=%s model=%s waited=%.3fs (while waiting)",
            lease.operation,
            lease.model,
            waited,
        )

    def _on_wait_timeout(self, waiter: _Waiter) -> None:
        lease = waiter.lease
        if lease._state is not _WAITING or waiter.future.done():
            return
        self._dequeue(waiter)
        lease._state = _ABANDONED
        self._timed_out += 1
        waited = self.clock.monotonic() - waiter.enqueued_at
        holder = self._holder_name()
        self._emit(
            lease,
            GpuStatus.TIMED_OUT,
            waited_s=waited,
            holder=holder,
            detail=f"gave up waiting for the GPU after {waited:.3f}s",
        )
        logger.warning(
            "timed out: op=%s model=%s waited=%.3fs holder=%s",
            lease.operation,
            lease.model,
            waited,
            holder,
        )
        waiter.future.set_exception(
            WaitTimeout(
                operation=lease.operation, model=lease.model, holder=holder, waited_s=waited
            )
        )

    def _dequeue(self, waiter: _Waiter) -> None:
        if waiter.queued:
            self._queues[waiter.lease.priority].remove(waiter)
            waiter.queued = False
            self._n_waiting -= 1

    def _grant(self, lease: Lease, now: float, waited_s: float, queued: bool = False) -> None:
        lease._state = _HELD
        lease.granted_at = now
        self._holder = lease
        self._acquired += 1
        if queued:
            self._waited += 1
            self._total_wait_s += waited_s
        self._emit(lease, _STARTED, waited_s=waited_s)
        if logger.isEnabledFor(logging.INFO):
            logger.info(
                "acquired: op=%s model=%s priority=%s waited=%.3fs",
                lease.operation,
                lease.model,
                lease.priority,
                waited_s,
            )
        if lease.hold_timeout is not None:
            deadline = lease._deadline = now + lease.hold_timeout
            if self._watchdog is None or deadline < self._watchdog_due:
                self._arm_watchdog(deadline, now)

    def _finish(self, lease: Lease, status: GpuStatus, detail: str) -> None:
        """Release a held lease with an outcome and hand the GPU on."""
        if lease._guard is not self or lease._state is not _HELD:
            if lease._state is _HUNG:
                raise self._hung_error(lease)
            raise LeaseNotHeld(
                f"lease #{lease.lease_id} for {lease.operation!r} is not held "
                f"({lease._state.value})",
                operation=lease.operation,
                model=lease.model,
                holder=self._holder_name(),
            )
        assert lease.granted_at is not None
        held = self.clock.monotonic() - lease.granted_at
        lease._state = _RELEASED
        self._holder = None
        self._total_hold_s += held
        if status is _COMPLETED:
            self._completed += 1
        elif status is _FAILED:
            self._failed += 1
        else:
            self._cancelled += 1
        self._emit(lease, status, waited_s=lease.waited_s, held_s=held, detail=detail)
        level = logging.WARNING if status is _FAILED else logging.INFO
        if logger.isEnabledFor(level):
            logger.log(
                level,
                "released: op=%s model=%s outcome=%s held=%.3fs%s",
                lease.operation,
                lease.model,
                status,
                held,
                f" ({detail})" if detail else "",
            )
        if self._n_waiting:
            self._grant_next()

    def _grant_next(self) -> None:
        now = self.clock.monotonic()
        while self._n_waiting:
            waiter = self._pop_next(now)
            if waiter.future.done():
                continue  # its task was cancelled and has not run yet; it cleans up itself
            if waiter.timer is not None:
                waiter.timer.cancel()
                waiter.timer = None
            self._grant(waiter.lease, now, now - waiter.enqueued_at, True)
            waiter.future.set_result(None)
            return

    def _pop_next(self, now: float) -> _Waiter:
        best: deque[_Waiter] | None = None
        best_key = (-1, 0)
        for queue in self._queues.values():
            if queue:
                head = queue[0]
                key = (self._effective_priority(head, now), -head.lease.lease_id)
                if key > best_key:
                    best, best_key = queue, key
        assert best is not None
        waiter = best.popleft()
        waiter.queued = False
        self._n_waiting -= 1
        return waiter

    def _effective_priority(self, waiter: _Waiter, now: float) -> Priority:
        base = waiter.lease.priority
        if self.aging_s is None or base is Priority.INTERACTIVE:
            return base
        steps = int((now - waiter.enqueued_at + _DUE_EPSILON) // self.aging_s)
        return Priority(min(Priority.INTERACTIVE, base + steps))

    def _service_order(self, now: float) -> list[_Waiter]:
        waiters = [w for queue in self._queues.values() for w in queue]
        waiters.sort(key=lambda w: (-self._effective_priority(w, now), w.lease.lease_id))
        return waiters

    # The watchdog is one timer, armed for the earliest hold deadline and re-armed lazily
    # when it fires, so that a fast acquire/release cycle does not schedule a timer each time.
    def _arm_watchdog(self, deadline: float, now: float) -> None:
        if self._watchdog is not None and self._watchdog_due <= deadline:
            return
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._watchdog_due = deadline
        self._watchdog = self.clock.call_later(deadline - now, self._on_watchdog)

    def _on_watchdog(self) -> None:
        self._watchdog = None
        lease = self._holder
        if lease is None or lease._deadline is None:
            return
        now = self.clock.monotonic()
        if now + _DUE_EPSILON >= lease._deadline:
            self._declare_hung(lease, now)
        else:
            self._arm_watchdog(lease._deadline, now)

    def _declare_hung(self, lease: Lease, now: float) -> None:
        assert lease.granted_at is not None
        held = now - lease.granted_at
        lease._state = _HUNG
        self._holder = None
        self._hung += 1
        self._total_hold_s += held
        self._emit(
            lease,
            GpuStatus.HUNG,
            waited_s=lease.waited_s,
            held_s=held,
            detail=f"held past its hold timeout of {lease.hold_timeout}s; cancelled",
        )
        logger.error(
            "hung: op=%s model=%s held=%.3fs (hold timeout %ss); cancelling it and freeing the GPU",
            lease.operation,
            lease.model,
            held,
            lease.hold_timeout,
        )
        task = lease._task
        if task is not None and not task.done():
            lease._cancelled_by_guard = True
            task.cancel(f"gpuguard: {lease.operation!r} hung")
        if self._n_waiting:
            self._grant_next()

    def _hung_error(self, lease: Lease) -> OperationHung:
        assert lease.hold_timeout is not None
        return OperationHung(
            operation=lease.operation, model=lease.model, held_s=lease.hold_timeout
        )

    def _holder_name(self) -> str | None:
        return None if self._holder is None else self._holder.operation

    def _emit(
        self,
        lease: Lease,
        status: GpuStatus,
        *,
        waited_s: float = 0.0,
        held_s: float = 0.0,
        position: int | None = None,
        holder: str | None = None,
        detail: str = "",
    ) -> None:
        bus = self.events
        if not bus.listening:
            return
        # Positional, in GpuEvent's field order: the bus builds the event only when needed.
        bus.publish_lazy(
            GpuEvent,
            self.name,
            lease.operation,
            lease.model,
            status,
            self.clock.time(),
            lease.lease_id,
            lease.priority,
            waited_s,
            held_s,
            position,
            holder,
            detail,
        )


def _withdraw_guard_cancel(lease: Lease) -> bool:
    """Undo the watchdog's ``task.cancel()`` on a hung lease's task, once.

    Returns True when the task is still being cancelled by someone else, so that the
    caller lets that cancellation propagate instead of :class:`OperationHung`.
    """
    task = lease._task
    if not lease._cancelled_by_guard or task is None:
        return task is not None and task.cancelling() > 0
    lease._cancelled_by_guard = False
    return task.uncancel() > 0


def _check_timeout(value: float | None, name: str) -> float | None:
    # ``not value >= 0`` also rejects NaN, which would never compare as due.
    if value is not None and not value >= 0:
        raise ValueError(f"{name} must be >= 0 seconds, or None for no limit")
    return value
