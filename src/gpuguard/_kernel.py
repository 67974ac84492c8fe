"""What the kernel can do for a process tree that must not outlive its lease (Linux ``prctl``).

* :func:`die_with_parent`: in a child, ask the kernel to SIGKILL it when its parent dies
  (``PR_SET_PDEATHSIG``). No Python thread is involved, so a child stuck in a call that holds
  the GIL dies too. The "parent" is the *thread* that started the child, so children that must
  live as long as their parent process are started from :func:`start_from_lasting_thread`.
* :func:`become_subreaper`: make this process the one that inherits its orphaned
  descendants (``PR_SET_CHILD_SUBREAPER``), so that it can wait for a whole tree.

Elsewhere these are no-ops that return False: the callers keep their portable fallbacks.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import functools
import os
import queue
import signal
import sys
import threading
from collections.abc import Callable
from typing import TypeVar

__all__ = ["become_subreaper", "die_with_parent", "start_from_lasting_thread"]

R = TypeVar("R")

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """The C library, loaded once: a child forked after the first call only calls into it."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def _prctl(option: int, value: int) -> bool:
    """``prctl(option, value)``; False where there is no ``prctl`` or it refused."""
    libc = _libc()
    return libc is not None and int(libc.prctl(option, value, 0, 0, 0)) == 0


def die_with_parent(parent_pid: int) -> bool:
    """SIGKILL this process as soon as its parent (``parent_pid``) dies; True if armed.

    Closes the race with a parent that died before the death signal was armed: if the
    parent is already gone (this process was handed to another), it dies now.
    """
    armed = _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if armed and os.getppid() != parent_pid:
        os.kill(os.getpid(), signal.SIGKILL)
    return armed


def become_subreaper() -> bool:
    """Make this process inherit its orphaned descendants; True if the kernel agreed."""
    return _prctl(_PR_SET_CHILD_SUBREAPER, 1)


_jobs: queue.SimpleQueue[tuple[Callable[[], object], concurrent.futures.Future[object]]] = (
    queue.SimpleQueue()
)
_lasting: threading.Thread | None = None
_lasting_lock = threading.Lock()


def start_from_lasting_thread(start: Callable[[], R]) -> R:
    """Run ``start`` (it starts a child process) in a thread as lasting as this process.

    Returns what ``start`` returns. A child armed with :func:`die_with_parent` is killed
    when the thread that started it ends; started from here, that is when this process
    ends, whichever thread asked.
    """
    global _lasting
    with _lasting_lock:
        if _lasting is None:
            _lasting = threading.Thread(target=_serve_jobs, name="gpuguard-spawner", daemon=True)
            _lasting.start()
    done: concurrent.futures.Future[object] = concurrent.futures.Future()
    _jobs.put((start, done))
    return done.result()  # type: ignore[return-value]


def _forget_lasting_thread() -> None:
    """In a forked child: the parent's thread is not here; the next start makes a new one."""
    global _jobs, _lasting, _lasting_lock
    _jobs, _lasting, _lasting_lock = queue.SimpleQueue(), None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_lasting_thread)


def _serve_jobs() -> None:
    jobs = _jobs
    while True:
        job, done = jobs.get()
        try:
            done.set_result(job())
        except BaseException as exc:
            done.set_exception(exc)
