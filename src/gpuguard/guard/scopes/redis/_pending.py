"""Calls to Redis that this process has made and not yet heard back from.

Requests in flight (a take or a queue place, awaited by a caller) and background calls (a
state read after a published change, a give-back of a grant nobody wants any more, a hung
mark) are kept here, so that :meth:`PendingCalls.drain` can wait until Redis has heard them
all, and a background call that fails is logged where operators look: the lease's TTL covers
what Redis did not hear.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

__all__ = ["PendingCalls", "told_too_late"]

logger = logging.getLogger("gpuguard.redis")


class PendingCalls:
    """The calls to Redis this process has in flight; once closed, it starts no more."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._inflight: set[asyncio.Future[None]] = set()
        self._coalescing = self._again = False
        self.closed = False

    @property
    def busy(self) -> bool:
        """True while any call is in flight."""
        return bool(self._tasks or self._inflight)

    @contextlib.contextmanager
    def request(self) -> Iterator[None]:
        """Count the enclosed request as in flight until it returns."""
        answered = asyncio.get_running_loop().create_future()
        self._inflight.add(answered)
        try:
            yield
        finally:
            answered.set_result(None)
            self._inflight.discard(answered)

    def spawn(self, step: Coroutine[Any, Any, object]) -> None:
        """Run ``step`` in the background (dropped once closed); a failure is logged."""
        if self.closed:
            step.close()
            return
        task = asyncio.ensure_future(step)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def coalesce(self, step: Callable[[], Coroutine[Any, Any, object]]) -> None:
        """Run ``step()`` in the background; asked again meanwhile, once more after it.

        However many asks arrive while one runs, at most one more run follows: a flood of
        messages costs two reads, not one per message.
        """
        if self._coalescing:
            self._again = True
            return
        self._coalescing = True
        self.spawn(self._coalesced(step))

    async def _coalesced(self, step: Callable[[], Coroutine[Any, Any, object]]) -> None:
        try:
            while True:
                self._again = False
                await step()
                if not self._again:
                    return
        finally:
            self._coalescing = False

    async def drain(self, *, requests: bool = True) -> None:
        """Wait for the background calls (and, with ``requests``, the requests in flight)."""
        while self._tasks or (requests and self._inflight):
            waiting = [*self._tasks, *(self._inflight if requests else ())]
            await asyncio.gather(*waiting, return_exceptions=True)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            told_too_late(task.exception())


def told_too_late(exc: BaseException | None) -> None:
    """Redis did not hear a give-back: say so, where operators look; the TTL covers it."""
    logger.warning("telling Redis failed (the lease TTL covers it): %r", exc)
