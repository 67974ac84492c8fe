"""A process in line for one host-scope lease, for the watch-chain tests (``python -m``).

``wait DIR LEDGER NAME TIMEOUT THEN [PRIORITY AGING_S]``: ask for the GPU (print ``queued`` if
it had to wait) at PRIORITY (``normal`` unless given), with a wait timeout of TIMEOUT seconds
(``-``: none) and the guard's ``aging_s`` (30 unless given). Once granted, append ``NAME`` to LEDGER
(one ``O_APPEND`` write: the order of grants across processes) and print ``granted``; then,
by THEN: ``hold`` until the line ``release`` on stdin, ``pass`` at once, or ``die`` (SIGKILL
itself, holding). Released, it prints ``released looks=K``: K is how many looks its watcher
thread took (counted here, around the arbiter's look), so a test can tell how many processes
a hand-off woke. The line ``cancel`` while it waits cancels the request; cancelled or timed
out, it prints ``left``. When stdin closes it releases (if it holds) and exits. With
``CHAIN_SAY_LOOKS=1`` in its environment it also prints ``looked K`` after each look.

The GPU is named after the lock directory, so no other lease of this machine meets these on
the machine-wide mark.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Collection
from typing import Any

from gpuguard import GpuGuard, Priority, WaitTimeout
from gpuguard.guard.scopes.host._arbiter import HostArbiter

_LOOKS = [0]


def _count_looks() -> None:
    """Count the watcher's looks (a look that finds nobody waiting here is not one)."""
    look = HostArbiter._watch_once

    def counted(self: HostArbiter, watched: Collection[int]) -> Any:
        result = look(self, watched)
        _LOOKS[0] += 1
        if os.environ.get("CHAIN_SAY_LOOKS") == "1":
            say(f"looked {_LOOKS[0]}")
        return result

    HostArbiter._watch_once = counted  # type: ignore[method-assign]


def gpu_name(lock_dir: str | os.PathLike[str]) -> str:
    """The GPU's name in ``lock_dir``: its own, unlike any other test's."""
    return f"chain-{os.path.basename(lock_dir)}"


def say(line: str) -> None:
    os.write(1, f"{line}\n".encode())  # one write: the watcher thread says lines too


async def wait(
    lock_dir: str,
    ledger: str,
    name: str,
    timeout: str,
    then: str,
    priority: str = "normal",
    aging_s: str = "30",
) -> None:
    wait_timeout = None if timeout == "-" else float(timeout)
    guard = GpuGuard.host(
        gpu_name(lock_dir), lock_dir=lock_dir, wait_timeout=wait_timeout, aging_s=float(aging_s)
    )
    request = guard.hold(name, priority=Priority[priority.upper()])
    if await request.reserve():
        say("queued")
    release = asyncio.Event()

    async def held() -> None:
        async with request:
            fd = os.open(ledger, os.O_WRONLY | os.O_APPEND)
            os.write(fd, f"{name}\n".encode())
            os.close(fd)
            say("granted")
            if then == "die":
                os.kill(os.getpid(), signal.SIGKILL)
            if then == "hold":
                await release.wait()

    holding = asyncio.ensure_future(held())
    commands = asyncio.ensure_future(_commands(holding, release))
    try:
        await holding
        say(f"released looks={_LOOKS[0]}")
    except (asyncio.CancelledError, WaitTimeout):
        say("left")
    await commands


async def _commands(holding: asyncio.Future[None], release: asyncio.Event) -> None:
    while command := (await asyncio.to_thread(sys.stdin.readline)).strip():
        if command == "cancel":
            holding.cancel()
        elif command == "release":
            release.set()
    release.set()  # stdin closed: let go


def main(argv: list[str]) -> None:
    mode, *args = argv
    if mode != "wait":
        raise SystemExit(f"unknown mode {mode!r}")
    _count_looks()
    asyncio.run(wait(*args))


if __name__ == "__main__":
    main(sys.argv[1:])
