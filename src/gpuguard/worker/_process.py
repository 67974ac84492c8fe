"""A supervised worker process: in-process GPU engines that can be killed.

A thread stuck in llama.cpp or CUDA cannot be stopped, and the GPU memory it holds is freed
only when it returns. A process can be killed at any moment, and the OS then frees
everything it held, VRAM included. :class:`WorkerProcess` runs one engine in a child process:

* **Lazy.** Nothing is spawned until the first call; the engine is built *inside* the child
  by an importable factory (``"module:function"`` plus picklable arguments), so the model
  is loaded there and never in the parent. The child is started with the ``spawn`` method
  (no fork of a process that has threads, CUDA or an event loop).
* **Calls and streams.** :meth:`WorkerProcess.call` runs one method of the engine;
  :meth:`WorkerProcess.stream` iterates a method that returns an iterator (chat tokens), with
  at most ``max_in_flight`` items sent ahead of the reader (credits flow back from the
  parent), so a slow reader never makes memory grow. Closing a stream early tells the child
  to close its iterator, and waits until it has.
* **Kill.** :meth:`WorkerProcess.kill` SIGKILLs the child, waits until it is reaped, and fails
  every pending call with :class:`~gpuguard.WorkerKilled`. A child that dies on its own
  (segfault, ``os._exit``, the OOM killer) fails its pending calls with
  :class:`~gpuguard.WorkerCrashed`, carrying its exit code and the tail of its stderr. Either
  way the next call starts a fresh child (and so reloads the model).
* **No orphans.** The child watches a "lifeline" pipe whose only writer is the parent; when
  the parent dies, for whatever reason, the pipe reaches EOF and the child exits.

The parent reads the pipe in a **dedicated reader thread**, not with ``loop.add_reader``:
it works on every event loop (the Windows proactor loop has no ``add_reader``), it unpickles
large results (embedding matrices) off the event loop, and it serves callers on several
event loops over the worker's lifetime (each result is handed to the loop that asked for it
with ``call_soon_threadsafe``). A writer thread sends requests for the same reasons: pickling
a large batch, or a pipe that is full because the child is busy, never blocks the loop.
Each incarnation of the child costs three threads in the parent, blocked in system calls.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncGenerator
from typing import Any

from .._exceptions import ConfigError
from ._handle import ChildHandle, Pending

__all__ = ["WorkerProcess"]

logger = logging.getLogger("gpuguard.worker")

_STOP_TIMEOUT_S = 10.0


async def _through_cancels(future: asyncio.Future[Any]) -> None:
    """Wait until ``future`` is done, absorbing cancellations; re-raise one afterwards."""
    cancelled = False
    while not future.done():
        try:
            await asyncio.wait([future])  # never cancels ``future`` itself
        except asyncio.CancelledError:
            cancelled = True
    if not future.cancelled():
        future.exception()  # seen: whoever was cancelled gets the cancellation instead
    if cancelled:
        raise asyncio.CancelledError


async def _join(thread: threading.Thread, timeout: float | None = None) -> bool:
    """Wait for ``thread`` to end (through cancellations, re-raised after); True if it did."""
    await _through_cancels(asyncio.ensure_future(asyncio.to_thread(thread.join, timeout)))
    return not thread.is_alive()


class WorkerProcess:
    """One engine in a supervised child process; see the module docstring.

    ``factory`` (``"module:function"``) is called in the child with ``args`` and returns the
    engine; calls name its methods. ``name`` labels errors, logs and the process.
    ``max_in_flight`` bounds how many streamed items the child may send ahead of the reader.
    Calls are run one at a time, in the order they were made.
    """

    def __init__(
        self,
        factory: str,
        args: tuple[Any, ...] = (),
        *,
        name: str,
        max_in_flight: int = 16,
        stop_timeout_s: float = _STOP_TIMEOUT_S,
    ) -> None:
        if max_in_flight < 1 or stop_timeout_s <= 0:
            raise ConfigError("max_in_flight must be >= 1 and stop_timeout_s positive")
        self._factory = factory
        self._args = args
        self._name = name
        self._window = max_in_flight
        self._stop_timeout_s = stop_timeout_s
        self._child: ChildHandle | None = None
        self.starts = 0
        """How many child processes were started over this worker's life."""

    @property
    def name(self) -> str:
        """The worker's label."""
        return self._name

    @property
    def alive(self) -> bool:
        """True while a child process is running (started, possibly still building)."""
        return self._child is not None and not self._child.dead

    @property
    def pid(self) -> int | None:
        """The running child's process id."""
        return self._child.process.pid if self.alive and self._child is not None else None

    async def start(self) -> None:
        """Start the child and build the engine, unless running; restart a dead one.

        Cancelled meanwhile (a load timeout, an abort), the half-started child is killed
        and reaped before the cancellation goes on: a load never outlives its caller.
        """
        await self._running()

    async def _running(self) -> ChildHandle:
        if self._child is None or self._child.dead:
            self.starts += 1
            self._child = ChildHandle(self._name, self._factory, self._args)
        child = self._child
        if not child.ready.done():
            try:
                await asyncio.wait([child.ready])  # never cancels it, never raises its error
            except asyncio.CancelledError:
                await self._kill(child)
                if child.ready.done() and not child.ready.cancelled():
                    child.ready.exception()  # seen: the cancellation is what the caller gets
                raise
        if child.ready.exception() is not None:  # the factory failed, or the child died
            if not await _join(child.reader, self._stop_timeout_s):  # it exits on its own
                await self._kill(child)
            child.ready.result()
        return child

    async def call(
        self, method: str, *args: Any, timeout_s: float | None = None, **kwargs: Any
    ) -> Any:
        """Run ``engine.method(*args, **kwargs)`` in the child and return its result.

        An exception raised there is raised here (with the child's traceback as a note);
        a child that dies meanwhile raises :class:`~gpuguard.WorkerError`. Past
        ``timeout_s`` the call is treated as hung: the child is killed, then
        :class:`TimeoutError` is raised. Cancelled, it returns only once the child has
        finished the call or died, so the awaitable is honest about its work.
        """
        child = await self._running()
        pending = Pending(method, stream=False)
        call_id = child.submit("call", (method, args, kwargs), pending)
        future = pending.future
        assert future is not None
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.wait([future])
        except TimeoutError:
            await self._kill(child)
            future.exception()  # the WorkerKilled it got; the timeout is what the caller sees
            raise TimeoutError(f"worker {self._name!r}: {method!r} hung; killed") from None
        except asyncio.CancelledError:
            # Honest: a cancelled caller returns once the child has finished this call (a
            # hung call ends when the worker is killed: abort()).
            await _through_cancels(future)
            raise
        finally:
            child.forget(call_id)
        return future.result()

    async def stream(
        self, method: str, *args: Any, item_timeout_s: float | None = None, **kwargs: Any
    ) -> AsyncGenerator[Any, None]:
        """Yield the items of ``engine.method(*args, **kwargs)``, an iterator, as they come.

        Closing the generator early asks the child to close its iterator and waits until it
        has (or until the child is killed), so the work has really stopped when it returns.
        No item (or end) within ``item_timeout_s``: the child is killed, then
        :class:`TimeoutError` is raised; a close not confirmed within it kills the child too.
        """
        child = await self._running()
        pending = Pending(method, stream=True)
        call_id = child.submit("stream", (method, args, kwargs, self._window), pending)
        assert pending.queue is not None
        threshold = max(1, self._window // 2)
        consumed = 0
        finished = False
        try:
            while True:
                try:
                    async with asyncio.timeout(item_timeout_s):
                        kind, value = await pending.queue.get()
                except TimeoutError:
                    await self._kill(child)
                    raise TimeoutError(f"worker {self._name!r}: {method!r} hung; killed") from None
                if kind == "end":
                    finished = True
                    return
                if kind == "error":
                    finished = True
                    raise value
                consumed += 1
                if consumed >= threshold:  # credits in batches: one message per half window
                    child.notify("credit", call_id, consumed)
                    consumed = 0
                yield value
        finally:
            if not finished:
                child.notify("cancel", call_id)
                try:
                    async with asyncio.timeout(item_timeout_s):
                        while (await pending.queue.get())[0] not in ("end", "error"):
                            pass  # items already on their way; the stream stops at its end
                except TimeoutError:
                    await self._kill(child)  # it does not even stop: it is hung

    async def kill(self) -> None:
        """SIGKILL the child, wait until it is reaped, and fail every pending call.

        The OS frees all its memory, GPU memory included. A no-op without a child; the next
        call starts a new one.
        """
        if self._child is not None:
            await self._kill(self._child)

    async def _kill(self, child: ChildHandle) -> None:
        was_running = not child.dead
        child.kill()
        await _join(child.reader)
        if was_running:
            logger.info("worker %s: killed (pid %s)", self._name, child.process.pid)

    async def stop(self) -> None:
        """Ask the child to close its engine and exit; kill it if it takes too long."""
        child = self._child
        if child is None or child.dead:
            return
        child.stop()
        if not await _join(child.reader, self._stop_timeout_s):
            await self._kill(child)

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.alive else "not running"
        return f"WorkerProcess({self._factory!r}, name={self._name!r}, {state})"
