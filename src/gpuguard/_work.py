"""Hold on until GPU work has really stopped: the one helper every GPU call site goes through.

GPU work runs somewhere the awaiting coroutine does not control: a worker thread, a child
process, a request to an LLM server. Cancelling the coroutine does not stop that work, so a
lease released on cancellation would hand a busy GPU to the next holder. :func:`run_to_end`
closes that hole: when the caller is cancelled (once or many times) it asks the work to stop
*once* (``stop``), waits for the work to end, and only then lets the cancellation out.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["StopWork", "run_to_end"]

logger = logging.getLogger("gpuguard.work")

R = TypeVar("R")

StopWork = Callable[[], Awaitable[None] | None]
"""Ask running GPU work to stop: kill its process, close its request, set its stop flag.

Called at most once per piece of work. It may be a plain function or a coroutine function; it
should return promptly (bound any request it makes) and must not raise for "already stopped".
"""


async def run_to_end(work: Awaitable[R], *, stop: StopWork | None = None) -> R:
    """Await ``work``; if cancelled meanwhile, ask it to ``stop``, wait for its end, re-raise.

    Every further cancellation while waiting is absorbed: the caller returns only once the
    work is over, so whoever holds the GPU lease for it holds it until then. Without ``stop``
    (a thread that cannot be interrupted) the wait lasts as long as the work does.
    """
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        if not task.done():
            await _stop_and_wait(task, stop)
        if not task.cancelled():
            task.exception()  # mark it retrieved: the cancellation is what the caller sees
        raise


async def _stop_and_wait(task: asyncio.Future[object], stop: StopWork | None) -> None:
    """Request a stop once, then wait for ``task`` through any number of cancellations."""
    if stop is not None:
        await _absorbing_cancels(_call_stop(stop))
    await _absorbing_cancels(asyncio.wait([task]))


async def _absorbing_cancels(step: Awaitable[object]) -> None:
    """Await ``step`` to its end, absorbing cancellations (the caller re-raises the first)."""
    inner = asyncio.ensure_future(step)
    while not inner.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(inner)
    if not inner.cancelled() and inner.exception() is not None:
        logger.warning("stopping GPU work failed: %r", inner.exception())


async def _call_stop(stop: StopWork) -> None:
    result = stop()
    if inspect.isawaitable(result):
        await result
