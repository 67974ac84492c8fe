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
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Generic, ParamSpec, TypeVar

__all__ = ["OnceClosed", "StopWork", "in_thread", "run_to_end"]

logger = logging.getLogger("gpuguard.work")

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

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


class OnceClosed(Generic[T]):
    """A stream of GPU work that is closed once, by whoever asks first; later askers await it.

    Its producer may run ahead of its reader (a worker process fills its window while the
    reader stalls), so a stream is GPU work from its first step until it is closed. Its lease
    closes it when it hangs while the reader is away; the reader closes it when it leaves.
    """

    def __init__(self, source: AsyncGenerator[T, None]) -> None:
        self._source = source
        self._closed: asyncio.Future[None] | None = None
        self.stepping = False
        """True while a step runs: then only that step's caller may close the stream."""

    async def step(self) -> T:
        """The next item; raises :class:`StopAsyncIteration` at the end."""
        self.stepping = True
        try:
            return await anext(self._source)
        finally:
            self.stepping = False

    @property
    def closing(self) -> bool:
        """True once someone began to close the stream."""
        return self._closed is not None

    async def aclose(self, stop: StopWork | None = None) -> None:
        """Call ``stop`` (if given) and close the source, once; return when that has ended.

        A cancellation does not cut the wait short (the stream's lease is held until the
        close has ended); it is re-raised afterwards. The close's error is raised to each.
        """
        if self._closed is None:
            self._closed = asyncio.ensure_future(self._close(stop))
        closed = self._closed
        cancelled = False
        while not closed.done():
            try:
                await asyncio.wait([closed])
            except asyncio.CancelledError:
                cancelled = True
        if cancelled:
            if not closed.cancelled():
                closed.exception()  # seen: the cancellation is what this caller gets
            raise asyncio.CancelledError
        closed.result()

    async def _close(self, stop: StopWork | None) -> None:
        if stop is not None:
            await _call_stop(stop)
        await self._source.aclose()
