"""Benchmark rows: the host lease with 2, 4, 8 and 16 processes, beside plain file locks.

Each row starts N processes that all hold one lock as fast as they can (an empty body) for a
fixed number of holds each; every hold appends ``pid start_ns end_ns`` to a ledger (one
``O_APPEND`` write). Per hold: the span from the first grant to the last release over the
holds made (what one hold costs with N processes in line; their start-up left out).
Hand-off: from one process's release (``end``) to the next holder's grant (``start``), over
consecutive holds of different processes, p50/p99.

Contenders: ``GpuGuard.host`` (this tree, and the ``--baseline`` tree's, imported as
:func:`guard_overhead.load_baseline` does), ``fcntl.flock`` (the kernel's lock, the floor),
``filelock.FileLock`` and ``portalocker.Lock`` (their defaults: both poll), and
``portalocker.lock(LOCK_EX)`` (a blocking ``flock``). A child is this script with ``--child``.
"""

from __future__ import annotations

import asyncio
import fcntl
import itertools
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

PROCESSES = (2, 4, 8, 16)
KINDS = ("gpuguard", "baseline", "flock", "filelock", "portalocker", "portalocker LOCK_EX")


def scratch_dir() -> Path:
    """A fresh directory on tmpfs where there is one (where the host lease lives by default)."""
    return Path(
        tempfile.mkdtemp(
            prefix="gpuguard-scaling-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None
        )
    )


def _file_lock(kind: str, where: Path) -> Callable[[], AbstractContextManager[object]]:
    path = where / "lock"
    if kind == "flock":
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)

        @contextmanager
        def flock() -> Iterator[None]:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

        return flock
    if kind == "filelock":
        import filelock

        lock = filelock.FileLock(str(path))
        return lambda: lock
    import portalocker

    if kind == "portalocker":
        portal = portalocker.Lock(str(path), timeout=60)
        return lambda: portal
    handle = open(path, "a")  # noqa: SIM115 - held for the child's life

    @contextmanager
    def blocking() -> Iterator[None]:
        portalocker.lock(handle, portalocker.LOCK_EX)
        try:
            yield
        finally:
            portalocker.unlock(handle)

    return blocking


def child(kind: str, where: str, ledger: str, holds: int, src: str | None) -> None:
    """``--child``: wait for the go (a line on stdin), hold ``holds`` times, log each."""
    fd = os.open(ledger, os.O_WRONLY | os.O_APPEND)
    rows: list[str] = []
    if kind in ("gpuguard", "baseline"):
        if kind == "baseline":
            from guard_overhead import load_baseline

            assert src is not None
            guard = load_baseline(src).GpuGuard.host("scaling", lock_dir=where)
        else:
            from gpuguard import GpuGuard

            guard = GpuGuard.host("scaling", lock_dir=where, max_waiters=1000)

        async def run() -> None:
            for _ in range(holds):
                async with guard.hold("bench"):
                    start = time.monotonic_ns()
                    end = time.monotonic_ns()
                rows.append(f"{os.getpid()} {start} {end}\n")

        print("ready", flush=True)
        sys.stdin.readline()
        asyncio.run(run())
    else:
        hold = _file_lock(kind, Path(where))
        print("ready", flush=True)
        sys.stdin.readline()
        for _ in range(holds):
            with hold():
                start = time.monotonic_ns()
                end = time.monotonic_ns()
            rows.append(f"{os.getpid()} {start} {end}\n")
    os.write(fd, "".join(rows).encode())
    os.close(fd)


def _percentile(samples: list[int], p: float) -> float:
    ordered = sorted(samples)
    return float(ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))])


def one_row(kind: str, processes: int, holds: int, src: str | None) -> tuple[float, float, float]:
    """Per-hold microseconds, hand-off p50 and p99 microseconds, for ``processes``."""
    import subprocess

    where = scratch_dir()
    ledger = where / "ledger"
    ledger.touch()
    argv = [sys.executable, __file__, "--child", kind, str(where), str(ledger), str(holds)]
    children = [
        subprocess.Popen(
            [*argv, src or ""], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        for _ in range(processes)
    ]
    for process in children:
        assert process.stdout is not None
        assert process.stdout.readline() == "ready\n"
    for process in children:
        assert process.stdin is not None
        process.stdin.write("go\n")
        process.stdin.flush()
    for process in children:
        assert process.wait() == 0
    rows = sorted(
        (int(start), int(end), int(pid))
        for pid, start, end in (line.split() for line in ledger.read_text().splitlines())
    )
    handoffs = [b[0] - a[1] for a, b in itertools.pairwise(rows) if a[2] != b[2]]
    span = max(end for _, end, _ in rows) - rows[0][0]  # first grant to last release
    shutil.rmtree(where, ignore_errors=True)
    p50, p99 = (_percentile(handoffs, p) / 1000 for p in (50, 99))
    return span / len(rows) / 1000, p50, p99


def rows(baseline_src: str | None, quick: bool) -> None:
    """Print the scaling table: every contender at 2, 4, 8 and 16 processes."""
    holds = 100 if quick else 400
    kinds = [k for k in KINDS if k != "baseline" or baseline_src is not None]
    print(f"\nhost lease, N processes in line ({holds} holds each, empty body; lock dir on tmpfs)")
    header = f"{'':24}" + "".join(
        f" {f'{n} procs: hold':>15} {'p50':>8} {'p99':>8}" for n in PROCESSES
    )
    print(header)
    print(f"{'':24}" + "".join(f" {'us':>15} {'us':>8} {'us':>8}" for _ in PROCESSES))
    print("-" * len(header))
    results: dict[str, list[tuple[float, float, float]]] = {k: [] for k in kinds}
    for n in PROCESSES:
        for kind in kinds:  # interleaved per size: the machine's noise lands on every row
            results[kind].append(one_row(kind, n, holds, baseline_src))
    for kind in kinds:
        name = {"gpuguard": "GpuGuard.host", "baseline": "baseline GpuGuard.host"}.get(kind, kind)
        cells = "".join(f" {hold:15.1f} {p50:8.1f} {p99:8.1f}" for hold, p50, p99 in results[kind])
        print(f"{name:24}{cells}")
    flat = [hold for hold, _, _ in results["gpuguard"]]
    print(f"GpuGuard.host per hold, 16 vs 2 processes: {flat[-1] / flat[0]:.2f}x")
    handoff = statistics.median(p50 for _, p50, _ in results["gpuguard"])
    floor = statistics.median(p50 for _, p50, _ in results["flock"])
    print(f"GpuGuard.host hand-off p50 (median over N) vs fcntl.flock: {handoff / floor:.1f}x")


if __name__ == "__main__" and sys.argv[1:2] == ["--child"]:
    kind, where, ledger, holds, src = sys.argv[2:7]
    child(kind, where, ledger, int(holds), src or None)
