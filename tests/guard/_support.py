"""Helpers shared by the guard's contract tests: checkpoints, not sleeps."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from gpuguard import FakeClock, GpuEvent, GpuGuard, Lease, Priority, Subscription


class MakeGuard(Protocol):
    """The ``make_guard`` fixture: a guard of the scope under test."""

    def __call__(self, *, clock: FakeClock = ..., **options: Any) -> GpuGuard: ...


SETTLERS: list[Callable[[], Awaitable[None]]] = []
"""Shared-scope guards of the running test: each waits until its round trips are over."""


async def settled() -> None:
    """Wait until every shared-scope guard's messages to and from its server have landed."""
    for settle in list(SETTLERS):
        await settle()


async def checkpoints(n: int = 10) -> None:
    """Yield to the event loop ``n`` times: lets every ready task run to its next wait.

    With a shared scope, also wait for the server's answers and yield ``n`` times more.
    """
    for _ in range(n):
        await asyncio.sleep(0)
    if SETTLERS:
        await settled()
        for _ in range(n):
            await asyncio.sleep(0)


async def until(condition: Callable[[], bool], *, limit: int = 200) -> None:
    """Yield until ``condition()`` holds; fail after ``limit`` checkpoints (never real time)."""
    for i in range(limit):
        if condition():
            return
        await asyncio.sleep(0)
        if SETTLERS and i % 10 == 9:
            await settled()
    raise AssertionError("condition not reached within the checkpoint budget")


def gpu_events(subscription: Subscription) -> list[GpuEvent]:
    """Everything queued on ``subscription`` so far, as GPU events."""
    events = subscription.drain()
    assert all(isinstance(e, GpuEvent) for e in events)
    return [e for e in events if isinstance(e, GpuEvent)]


def statuses(subscription: Subscription) -> list[tuple[str, str]]:
    """``(operation, status)`` for everything queued on ``subscription`` so far."""
    return [(e.operation, str(e.status)) for e in gpu_events(subscription)]


class Op:
    """A task that holds the GPU (``async with guard.hold``) until :meth:`finish` is called.

    ``order`` (shared between ops) records the order in which bodies started.
    """

    def __init__(
        self,
        guard: GpuGuard,
        name: str,
        order: list[str],
        *,
        priority: Priority = Priority.NORMAL,
        fail: bool = False,
        **options: Any,
    ) -> None:
        self.guard = guard
        self.name = name
        self.lease: Lease | None = None
        self._order = order
        self._priority = priority
        self._fail = fail
        self._options = options
        self._done = asyncio.Event()
        self.task = asyncio.create_task(self._run(), name=name)

    async def _run(self) -> None:
        async with self.guard.hold(self.name, priority=self._priority, **self._options) as lease:
            self.lease = lease
            self._order.append(self.name)
            await self._done.wait()
            if self._fail:
                raise RuntimeError(f"{self.name} failed")

    def finish(self) -> None:
        """Let the body return (or raise, with ``fail=True``) at its next checkpoint."""
        self._done.set()

    async def until_holding(self) -> None:
        """Yield until this op's body runs with the GPU held."""
        await until(lambda: self.holding)

    @property
    def holding(self) -> bool:
        """True once the body runs and while its lease is held."""
        return self.lease is not None and self.lease.held


async def start(guard: GpuGuard, name: str, order: list[str], **options: Any) -> Op:
    """Start an :class:`Op` and let it run until it holds the GPU or waits in the queue."""
    op = Op(guard, name, order, **options)
    await checkpoints()
    return op


class Work:
    """GPU work running elsewhere (a thread, a process): it ends only when told to."""

    def __init__(self) -> None:
        self.done = asyncio.Event()
        self.stops = 0
        self.stoppable = True

    async def run(self) -> str:
        # Honest, like a thread run through in_thread: cancelling it does not end it early.
        while not self.done.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await self.done.wait()
        return "vectors"

    def stop(self) -> None:
        self.stops += 1
        if self.stoppable:
            self.done.set()
