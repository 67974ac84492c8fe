"""The child's half of :class:`~gpuguard.worker.WorkerProcess`: build the engine, serve calls.

Runs in the spawned worker process. Every message on the pipe is ``(kind, call id,
payload)``; the child answers each value pickled on its own, so that the parent can tell
which call an unreadable answer belonged to.
"""

from __future__ import annotations

import collections
import contextlib
import faulthandler
import importlib
import os
import pickle
import threading
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from .._exceptions import ConfigError
from .._kernel import die_with_parent

__all__ = ["READY", "Message", "child_main", "resolve_factory"]

READY = 0
"""The call id of the start-up handshake."""

Message = tuple[str, int, Any]
"""``(kind, call id, payload)``: every message on the pipe, both ways."""


def child_main(
    conn: Connection,
    lifeline: Connection,
    stderr: Connection | None,
    factory: str,
    args: tuple[Any, ...],
    parent_pid: int,
) -> None:
    """The child's entry point: build the engine, then serve requests until told to stop.

    First of all it asks the kernel to kill it when ``parent_pid`` dies (Linux): a lifeline
    thread needs the GIL to act, and a call into a C library may hold it for minutes.
    """
    die_with_parent(parent_pid)
    if stderr is not None:
        os.dup2(stderr.fileno(), 2)  # C libraries' messages too, not only Python's
        stderr.close()
    faulthandler.enable()  # a segfault prints the Python stack into the captured stderr
    # OpenMP threads (torch, llama.cpp's ggml) spin between parallel regions by default; a
    # worker waits on its pipe between calls, and spinning there starved its own main
    # thread of the CPU (8x slower embedding and generation on 2 cores). Set before the
    # engine is imported; an explicit setting in the environment wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    threading.Thread(target=_exit_with_parent, args=(lifeline,), daemon=True).start()
    try:
        target = resolve_factory(factory)(*args)
    except BaseException as exc:
        _send_error(conn, READY, exc)
        return
    _send(conn, "ready", READY, os.getpid())
    _serve(conn, target)


def _exit_with_parent(lifeline: Connection) -> None:
    """Block until the parent's end of the lifeline closes (the parent died), then exit.

    The portable fallback of the kernel's death signal: it needs the GIL to exit.
    """
    with contextlib.suppress(EOFError, OSError):
        lifeline.recv()
    os._exit(70)


def resolve_factory(spec: str) -> Callable[..., Any]:
    """The callable named ``"package.module:attribute"``."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"a worker factory is 'module:function', got {spec!r}")
    target: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        target = getattr(target, part)
    if not callable(target):
        raise ConfigError(f"worker factory {spec!r} is not callable")
    return target  # type: ignore[no-any-return]


def _serve(conn: Connection, target: Any) -> None:
    """Run requests one at a time, in order, until ``stop`` or the parent's end closes."""
    backlog: collections.deque[Message] = collections.deque()
    while True:
        try:
            kind, call_id, payload = backlog.popleft() if backlog else conn.recv()
        except (EOFError, OSError):
            return
        if kind == "stop":
            close = getattr(target, "close", None)
            if close is not None:
                close()
            return
        if kind == "call":
            method, args, kwargs = payload
            try:
                value = getattr(target, method)(*args, **kwargs)
            except Exception as exc:
                _send_error(conn, call_id, exc)
                continue
            _send(conn, "ok", call_id, value)
        elif kind == "stream":
            _stream(conn, target, call_id, payload, backlog)
        # Credits and cancels for a stream that has already ended are dropped here.


def _stream(
    conn: Connection,
    target: Any,
    call_id: int,
    payload: tuple[str, tuple[Any, ...], dict[str, Any], int],
    backlog: collections.deque[Message],
) -> None:
    """Send the items of one iterator, never more than the parent's credits allow."""
    method, args, kwargs, credits = payload
    items: Any = None
    try:
        items = iter(getattr(target, method)(*args, **kwargs))
        for item in items:
            conn.send(("item", call_id, _dumps(item)))
            credits -= 1
            while credits <= 0 or conn.poll():
                message = conn.recv()
                kind, other, value = message
                if other != call_id:
                    backlog.append(message)  # a request queued behind this stream
                elif kind == "credit":
                    credits += value
                elif kind == "cancel":
                    return
    except Exception as exc:
        _send_error(conn, call_id, exc)
        call_id = -1
    finally:
        close = getattr(items, "close", None)
        if close is not None:
            close()  # llama.cpp's generator stops at once
        if call_id != -1:
            _send(conn, "end", call_id, None)


def _dumps(value: Any) -> bytes:
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def _send(conn: Connection, kind: str, call_id: int, value: Any) -> None:
    """Send ``value`` pickled on its own, so the parent can tell which call it cannot read."""
    try:
        payload = _dumps(value)
    except Exception as exc:
        _send_error(conn, call_id, TypeError(f"the result cannot be sent back: {exc}"))
        return
    conn.send((kind, call_id, payload))


def _send_error(conn: Connection, call_id: int, exc: BaseException) -> None:
    trace = "".join(traceback.format_exception(exc))
    try:
        payload = _dumps((exc, trace))
        pickle.loads(payload)  # an exception must also be rebuilt on the other side
    except Exception:  # send its type and text instead
        payload = _dumps((RuntimeError(f"{type(exc).__name__}: {exc}"), trace))
    conn.send(("error", call_id, payload))
