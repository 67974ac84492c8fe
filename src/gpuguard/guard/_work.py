"""Hold on until GPU work has really stopped: the helpers every GPU call site goes through.

GPU work runs somewhere the awaiting coroutine does not fully control: a worker thread, a
child process, a request to an LLM server. A lease released as soon as its coroutine is
cancelled would hand a busy GPU to the next holder. Two rules close that hole:

* :func:`run_to_end` wraps one piece of GPU work. When the caller is cancelled (once or many
  times) it asks the work to stop *once* (``stop``: kill its process, ask its server to
  cancel), delivers the cancellation to the work, waits for the work to end, and only then
  lets the cancellation out.
* Every awaitable that engines hand to it is *honest*: cancelling it returns only once its
  work has ended. Asyncio I/O (an HTTP request) is honest by nature: cancelling it closes the
  request. A thread is not, so engines run threads through :func:`in_thread`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

__all__ = ["StopWork", "in_thread", "run_to_end"]

logger = logging.getLogger("gpuguard.work")

P = ParamSpec("P")
R = TypeVar("R")

StopWork = Callable[[], Awaitable[None] | None]
"""Ask running GPU work to stop: kill its process, ask its server to cancel, set a flag.

Called at most once per piece of work. It may be a plain function or a coroutine function; it
should return promptly (bound any request it makes) and must not raise for "already stopped".
"""


async def run_to_end(work: Awaitable[R], *, stop: StopWork | None = None) -> R:
    """Await ``work``; if cancelled meanwhile, stop it, wait for its end, then re-raise.

    On cancellation ``stop`` is called once, the cancellation is passed on to ``work``, and
    the caller returns only once ``work`` is over, however often it is cancelled meanwhile:
    whoever holds the GPU lease for the work holds it until then.
    """
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        if not task.done():
            if stop is not None:
                await _absorbing_cancels(_call_stop(stop))
            task.cancel()
            await _absorbing_cancels(asyncio.wait([task]))
        if not task.cancelled():
            task.exception()  # mark it retrieved: the cancellation is what the caller sees
        raise


async def in_thread(func: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
    """Run ``func`` in a worker thread; cancelling waits for the thread to return first.

    Unlike :func:`asyncio.to_thread`, a cancelled caller does not return while the thread
    still runs (a thread cannot be interrupted), so the awaitable is honest about its work.
    """
    loop = asyncio.get_running_loop()
    call = functools.partial(contextvars.copy_context().run, func, *args, **kwargs)
    future = loop.run_in_executor(None, call)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await _absorbing_cancels(asyncio.wait([future]))
        if not future.cancelled():
            future.exception()
        raise


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
