"""Processes that do to a host-scope lease what real deployments do (``python -m``).

``fork-hammer DIR LEDGER SENTINEL CHILDREN ROUNDS``: one guard made before ``fork()``
(gunicorn ``--preload``, Celery prefork); CHILDREN forked children each hold ROUNDS times.
Every hold takes the independent SENTINEL ``flock`` without blocking (``overlap`` is printed
if another holder has it) and appends ``pid start_ns end_ns`` to LEDGER.
``fork-holder DIR``: hold (print ``held``), fork a child that keeps running, release on the
first line of stdin (print ``released``); the child is ended when stdin closes.
``crash DIR PHASE K``: SIGKILL itself at the K-th file system call inside ``try_acquire`` (PHASE
``hold``), ``enqueue`` (``queue``) or ``release`` (``release``, on the first line of stdin);
prints ``done`` if the phase had fewer than K calls.
``fsize DIR LIMIT``: under ``RLIMIT_FSIZE`` LIMIT bytes, queue long-named requests until one
is refused (print ``refused``) or 200 are queued (print ``queued``).
``release-on-full-disk DIR``: hold (print ``held``); on the first line of stdin, make every
write fail and release (print ``released``).
``hold DIR OP HOLD_S``: hold with a hold timeout (print ``held``) until stdin closes.
``hold-in SCOPE GPU WHERE``: hold GPU through SCOPE (``host``: lock directory WHERE;
``redis``: Redis URL WHERE, keys under the prefix GPU; ``process``: WHERE unused), print
``held``, and release on the first line of stdin (print ``released``) or when it closes;
the guard is closed when stdin closes.
``wait DIR OP``: queue (print ``queued``), then print ``granted`` or ``refused: <error>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import resource
import signal
import sys
import time
from types import FrameType
from typing import Any

from gpuguard import GpuGuard, GuardError, Priority

_FILE_CALLS = frozenset(
    [
        "open",
        "close",
        "read",
        "write",
        "pread",
        "pwrite",
        "unlink",
        "replace",
        "rename",
        "mkdir",
        "rmdir",
        "flock",
        "fstat",
        "stat",
        "listdir",
        "fchmod",
        "fchown",
    ]
)
"""The system calls that change or read the lease's files: the steps a crash can fall between."""


def say(line: str) -> None:
    print(line, flush=True)


def stdin_line() -> str:
    return sys.stdin.readline()


async def until_stdin_closes() -> None:
    await asyncio.to_thread(sys.stdin.read)


def fork_hammer(lock_dir: str, ledger: str, sentinel: str, children: int, rounds: int) -> None:
    guard = GpuGuard.host(lock_dir=lock_dir, wait_timeout=60, max_waiters=1000)

    async def warm_up() -> None:  # the parent has used the lease before it forks
        async with guard.hold("warm-up"):
            pass

    asyncio.run(warm_up())
    pids = []
    for _ in range(children):
        pid = os.fork()
        if pid == 0:
            os._exit(_child(guard, ledger, sentinel, rounds))
        pids.append(pid)
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]
    say(f"codes {' '.join(map(str, codes))}")


def _child(guard: GpuGuard, ledger: str, sentinel: str, rounds: int) -> int:
    out = os.open(ledger, os.O_WRONLY | os.O_APPEND)

    async def holds() -> None:
        for _ in range(rounds):
            async with guard.hold("forked"):
                fd = os.open(sentinel, os.O_RDONLY)
                try:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        say(f"overlap {os.getpid()}")
                    start = time.monotonic_ns()
                    await asyncio.sleep(0.0005)
                    os.write(out, f"{os.getpid()} {start} {time.monotonic_ns()}\n".encode())
                finally:
                    os.close(fd)

    try:
        asyncio.run(holds())
    except GuardError as exc:
        say(f"error {type(exc).__name__}: {exc}")
        return 1
    return 0


async def fork_holder(lock_dir: str) -> None:
    guard = GpuGuard.host(lock_dir=lock_dir)
    lease = await guard.acquire("parent")
    say("held")
    child = os.fork()
    if child == 0:
        signal.pause()  # runs on, with every inherited descriptor it did not close
        os._exit(0)
    await asyncio.to_thread(stdin_line)
    lease.release()
    say("released")
    await until_stdin_closes()
    os.kill(child, signal.SIGKILL)
    await asyncio.to_thread(os.waitpid, child, 0)


def crash_at(k: int) -> None:
    """SIGKILL this process at the K-th file system call from now on."""
    calls = 0

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        nonlocal calls
        if event == "c_call" and getattr(arg, "__name__", None) in _FILE_CALLS:
            calls += 1
            if calls == k:
                os.kill(os.getpid(), signal.SIGKILL)

    sys.setprofile(profile)


async def crash(lock_dir: str, phase: str, k: int) -> None:
    guard = GpuGuard.host(lock_dir=lock_dir, wait_timeout=None)
    if phase == "hold":
        crash_at(k)
        lease = guard.acquire_nowait("doomed")
    elif phase == "queue":
        request = guard.hold("doomed")
        crash_at(k)
        await request.reserve()
        sys.setprofile(None)
        say("done")
        return
    else:
        lease = guard.acquire_nowait("doomed")
        say("held")
        await asyncio.to_thread(stdin_line)
        crash_at(k)
    lease.release()
    sys.setprofile(None)
    say("done")


async def fsize(lock_dir: str, limit: int) -> None:
    guard = GpuGuard.host(lock_dir=lock_dir, max_waiters=1000, wait_timeout=None)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    holds = []
    for i in range(200):
        hold = guard.hold(f"long-operation-name-{i:04d}-" + "x" * 100)
        try:
            await hold.reserve()
        except GuardError as exc:
            say(f"refused {type(exc).__name__}: {exc}")
            return
        holds.append(hold)
    say("queued")
    await until_stdin_closes()


async def release_on_full_disk(lock_dir: str) -> None:
    guard = GpuGuard.host(lock_dir=lock_dir)
    lease = guard.acquire_nowait("train")
    say("held")
    await asyncio.to_thread(stdin_line)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1, 1))  # no state write can succeed now
    lease.release()
    say("released")
    await until_stdin_closes()


async def hold(lock_dir: str, operation: str, hold_s: float) -> None:
    guard = GpuGuard.host(lock_dir=lock_dir)
    async with guard.hold(operation, hold_timeout=hold_s):
        say("held")
        await until_stdin_closes()


def guard_in(scope: str, gpu: str, where: str) -> GpuGuard:
    """A guard of GPU ``gpu`` through ``scope`` (see ``hold-in``)."""
    if scope == "host":
        return GpuGuard.host(gpu, lock_dir=where)
    if scope == "redis":
        return GpuGuard.redis(where, gpu, prefix=gpu)
    return GpuGuard(gpu)


async def hold_in(scope: str, gpu: str, where: str) -> None:
    guard = guard_in(scope, gpu, where)
    async with guard.hold("train"):
        say("held")
        await asyncio.to_thread(stdin_line)
    say("released")
    await until_stdin_closes()
    await guard.aclose()


async def wait(lock_dir: str, operation: str) -> None:
    guard = GpuGuard.host(lock_dir=lock_dir, wait_timeout=None)
    request = guard.hold(operation, priority=Priority.NORMAL)
    if await request.reserve():
        say("queued")
    try:
        async with request:
            say("granted")
            await until_stdin_closes()
    except GuardError as exc:
        say(f"refused {type(exc).__name__}: {exc}")


def main(argv: list[str]) -> None:
    mode, *args = argv
    if mode == "fork-hammer":
        fork_hammer(args[0], args[1], args[2], int(args[3]), int(args[4]))
    elif mode == "fork-holder":
        asyncio.run(fork_holder(args[0]))
    elif mode == "crash":
        asyncio.run(crash(args[0], args[1], int(args[2])))
    elif mode == "fsize":
        asyncio.run(fsize(args[0], int(args[1])))
    elif mode == "release-on-full-disk":
        asyncio.run(release_on_full_disk(args[0]))
    elif mode == "hold":
        asyncio.run(hold(args[0], args[1], float(args[2])))
    elif mode == "hold-in":
        asyncio.run(hold_in(args[0], args[1], args[2]))
    elif mode == "wait":
        asyncio.run(wait(args[0], args[1]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        main(sys.argv[1:])
