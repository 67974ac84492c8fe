"""The parent's handle on one incarnation of a worker child: its pipe and its threads.

A reader thread unpickles the child's answers and hands each to the event loop of the call
that asked (``call_soon_threadsafe``); a writer thread pickles and sends requests, so a large
batch or a full pipe never blocks a loop; a third thread forwards the child's stderr to the
``gpuguard.worker`` logger and keeps its tail for error reports. When the child dies, every
pending call fails with :class:`~gpuguard.WorkerKilled` (killed on purpose) or
:class:`~gpuguard.WorkerCrashed` (its exit status and the tail of its stderr).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing
import os
import pickle
import queue
import signal
import threading
from multiprocessing.connection import Connection, wait
from multiprocessing.reduction import ForkingPickler
from typing import Any

from .._exceptions import WorkerCrashed, WorkerError, WorkerKilled
from .._kernel import start_from_lasting_thread
from ._child import READY, Message, child_main

__all__ = ["ChildHandle", "Pending"]

logger = logging.getLogger("gpuguard.worker")

_STDERR_TAIL_CHARS = 2000
_REAP_AFTER_EOF_S = 5.0


class Pending:
    """One call waiting for the child: a future (unary) or a queue of messages (stream)."""

    def __init__(self, operation: str, *, stream: bool) -> None:
        self.operation = operation
        self.loop = asyncio.get_running_loop()
        self.future: asyncio.Future[Any] | None = None if stream else self.loop.create_future()
        self.queue: asyncio.Queue[tuple[str, Any]] | None = asyncio.Queue() if stream else None

    def deliver(self, kind: str, value: Any) -> None:
        """Hand one message to the caller's loop (called from the reader thread)."""
        with contextlib.suppress(RuntimeError):  # the caller's loop is closed: nobody waits
            self.loop.call_soon_threadsafe(self._deliver, kind, value)

    def _deliver(self, kind: str, value: Any) -> None:
        if self.queue is not None:
            self.queue.put_nowait((kind, value))
        elif self.future is not None and not self.future.done():
            if kind == "error":
                self.future.set_exception(value)
            else:
                self.future.set_result(value)


class ChildHandle:
    """One incarnation of the worker process, with its reader, writer and stderr threads."""

    def __init__(self, name: str, factory: str, args: tuple[Any, ...]) -> None:
        context = multiprocessing.get_context("spawn")
        self.name = name
        self.conn, child_conn = context.Pipe()
        lifeline_reader, self._lifeline = context.Pipe(duplex=False)
        stderr_reader, stderr_writer = (
            context.Pipe(duplex=False) if os.name == "posix" else (None, None)
        )
        self.process = context.Process(
            target=child_main,
            args=(child_conn, lifeline_reader, stderr_writer, factory, args, os.getpid()),
            name=f"gpuguard-worker-{name}",
            daemon=True,
        )
        # The kernel kills the child when the thread that started it ends: start it from one
        # that lasts as long as this process, not from whichever thread runs this loop.
        start_from_lasting_thread(self.process.start)
        for end in (child_conn, lifeline_reader, stderr_writer):
            if end is not None:
                end.close()  # the child's ends: EOF must come when the child dies
        starting = Pending("start", stream=False)
        assert starting.future is not None
        self.ready: asyncio.Future[Any] = starting.future
        """Resolves with the child's pid once the engine is built."""
        self.pending: dict[int, Pending] = {READY: starting}
        self.lock = threading.Lock()
        self.killed = False
        self.dead = False
        self._ids = itertools.count(1)
        self._stderr_tail = ""
        self._outbox: queue.SimpleQueue[tuple[Message, Pending] | None] = queue.SimpleQueue()
        self._stderr_thread = (
            threading.Thread(target=self._read_stderr, args=(stderr_reader,), daemon=True)
            if stderr_reader is not None
            else None
        )
        self.reader = threading.Thread(target=self._read, daemon=True, name=f"{name}-reader")
        for thread in (self._stderr_thread, self.reader):
            if thread is not None:
                thread.start()
        threading.Thread(target=self._write, daemon=True, name=f"{name}-writer").start()

    def submit(self, kind: str, payload: Any, pending: Pending) -> int:
        """Queue a request for the child; its answers go to ``pending``."""
        with self.lock:
            call_id = next(self._ids)
            if self.dead:
                pending.deliver("error", self._error(pending.operation))
            else:
                self.pending[call_id] = pending
        self._outbox.put(((kind, call_id, payload), pending))
        return call_id

    def notify(self, kind: str, call_id: int, value: Any = None) -> None:
        """Send a credit or a cancel for a running stream."""
        with self.lock:
            pending = self.pending.get(call_id)
        if pending is not None:
            self._outbox.put(((kind, call_id, value), pending))

    def forget(self, call_id: int) -> None:
        """Drop a call whose caller has stopped waiting."""
        with self.lock:
            self.pending.pop(call_id, None)

    def _write(self) -> None:
        while (entry := self._outbox.get()) is not None:
            message, pending = entry
            try:
                data = ForkingPickler.dumps(message)
            except Exception as exc:
                self.forget(message[1])
                pending.deliver("error", TypeError(f"cannot send {pending.operation!r}: {exc}"))
                continue
            with contextlib.suppress(OSError):  # the child died; the reader reports it
                self.conn.send_bytes(data)

    def _read(self) -> None:
        while True:
            ready = wait([self.conn, self.process.sentinel])
            if self.conn in ready:
                try:
                    kind, call_id, value = self.conn.recv()
                except (EOFError, OSError):
                    break
                self._dispatch(kind, call_id, value)
            elif self.process.sentinel in ready:
                break
        self.process.join(_REAP_AFTER_EOF_S)
        if self.process.exitcode is None:  # closed its pipe but lingers: it is dead to us
            self.process.kill()
            self.process.join()
        if self._stderr_thread is not None:
            self._stderr_thread.join(1.0)
        with self.lock:
            self.dead = True
            pending, self.pending = self.pending, {}
        for entry in pending.values():
            entry.deliver("error", self._error(entry.operation))
        self._outbox.put(None)
        with contextlib.suppress(OSError):
            self.conn.close()
        self._lifeline.close()

    def _dispatch(self, kind: str, call_id: int, payload: bytes) -> None:
        try:
            value = pickle.loads(payload)
        except Exception as exc:
            kind, value = "error", (TypeError(f"cannot read the worker's answer: {exc}"), "")
        with self.lock:
            final = kind in ("ok", "error", "end", "ready")
            pending = self.pending.pop(call_id, None) if final else self.pending.get(call_id)
        if pending is None:
            return
        if kind == "error":
            error, trace = value
            error.add_note(f"in worker {self.name!r} (pid {self.process.pid}):\n{trace}")
            value = error
        pending.deliver(kind, value)

    def _read_stderr(self, reader: Connection) -> None:
        while True:
            try:
                chunk = os.read(reader.fileno(), 4096)
            except OSError:
                break
            if not chunk:
                break
            text = chunk.decode(errors="replace")
            self._stderr_tail = (self._stderr_tail + text)[-_STDERR_TAIL_CHARS:]
            for line in text.splitlines():
                if line.strip():
                    logger.info("worker %s: %s", self.name, line)
        reader.close()

    def _error(self, operation: str) -> WorkerError:
        code = self.process.exitcode
        how = _describe_exit(code)
        tail = self._stderr_tail.strip()
        said = f"; its stderr ends: {tail[-500:]}" if tail else ""
        if self.killed:
            return WorkerKilled(
                f"worker {self.name!r} was killed during {operation!r}",
                worker=self.name,
                operation=operation,
                exit_code=code,
                stderr=tail,
            )
        return WorkerCrashed(
            f"worker {self.name!r} died during {operation!r} ({how}){said}",
            worker=self.name,
            operation=operation,
            exit_code=code,
            stderr=tail,
        )

    def kill(self) -> None:
        """SIGKILL the child (the reader thread then reaps it and fails pending calls)."""
        self.killed = True
        if self.process.exitcode is None:
            self.process.kill()

    def stop(self) -> None:
        """Ask the child to close its engine and exit."""
        with self.lock:
            if self.dead:
                return
        self._outbox.put((("stop", -1, None), Pending("stop", stream=False)))


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "exit status unknown"
    if code < 0:
        name = signal.Signals(-code).name
        hint = ", perhaps the out-of-memory killer" if -code == signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    return f"exit code {code}"
