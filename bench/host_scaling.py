"""Benchmark rows: the host lease with 2, 4, 8 and 16 processes, beside plain file locks.

Each row starts N processes that all hold one lock as fast as they can (an empty body) for a
fixed number of holds each; every hold appends ``pid start_ns end_ns`` to a ledger (one
``O_APPEND`` write). Per hold: the span from the first grant to the last release over the
holds made (what one hold costs with N processes in line; their start-up left out).
Hand-off: from one process's release (``end``) to the next holder's grant (``start``), over
consecutive holds of different processes, p50/p99. For the host lease, each process also
counts its watcher's looks (how often a change woke it) and its decisions (each one the
directory's lock taken and the state read), around the arbiter's own methods: per hold, a
second table.

Contenders: ``GpuGuard.host`` (this tree, and the ``--baseline`` tree's, imported as
:func:`guard_overhead.load_baseline` does), ``fcntl.flock`` (the kernel's lock, the floor),
``filelock.FileLock`` and ``portalocker.Lock`` (their defaults: both poll), and
``portalocker.lock(LOCK_EX)`` (a blocking ``flock``). A child is this script with ``--child``.
"""

from __future__ import annotations

import asyncio
import fcntl
import importlib
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
from typing import Any, NamedTuple

PROCESSES = (2, 4, 8, 16)
KINDS = ("gpuguard", "baseline", "flock", "filelock", "portalocker", "portalocker LOCK_EX")


def scratch_dir() -> Path:
    """A fresh directory on tmpfs where there is one (where the host lease lives by default)."""
    return Path(
        tempfile.mkdtemp(
            prefix="gpuguard-scaling-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None
        )
    )


class Row(NamedTuple):
    """One contender at one size: per hold and hand-off microseconds; looks and decisions."""

    hold: float
    p50: float
    p99: float
    looks: float | None
    """The host lease's watcher looks per hold (None: not the host lease)."""
    decisions: float | None
    """The host lease's decisions per hold, by every process (None: not the host lease)."""


def count_calls(package: str) -> dict[str, int] | None:
    """Count the host arbiter's watcher looks and decisions in this process.

    ``package``: ``gpuguard`` or the baseline's name. A look that finds nobody waiting here
    (the watcher's last) is not counted. None for an older tree without these two places.
    """
    try:
        arbiter = importlib.import_module(f"{package}.guard.scopes.host._arbiter").HostArbiter
        decisions = importlib.import_module(f"{package}.guard.scopes.host._decisions").Decisions
        arbiter._watch_once  # noqa: B018 - an older tree has no such method
    except (ImportError, AttributeError):
        return None
    counts = {"looks": 0, "decisions": 0}
    look, decide = arbiter._watch_once, decisions.decide

    def counted_look(self: Any, watched: Any) -> Any:
        result = look(self, watched)
        counts["looks"] += 1
        return result

    def counted_decide(self: Any, *args: Any) -> Any:
        counts["decisions"] += 1
        return decide(self, *args)

    arbiter._watch_once, decisions.decide = counted_look, counted_decide
    return counts


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
    counts: dict[str, int] | None = None
    if kind in ("gpuguard", "baseline"):
        if kind == "baseline":
            from guard_overhead import load_baseline

            assert src is not None
            guard = load_baseline(src).GpuGuard.host("scaling", lock_dir=where)
            counts = count_calls("gpuguard_baseline")
        else:
            from gpuguard import GpuGuard

            guard = GpuGuard.host("scaling", lock_dir=where, max_waiters=1000)
            counts = count_calls("gpuguard")

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
    if counts is not None:
        print(f"counted {counts['looks']} {counts['decisions']}", flush=True)


def _percentile(samples: list[int], p: float) -> float:
    ordered = sorted(samples)
    return float(ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))])


def one_row(kind: str, processes: int, holds: int, src: str | None) -> Row:
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
    counted: list[int] | None = None
    for process in children:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith("counted "):
                counts = [int(b) for b in line.split()[1:]]
                counted = (
                    counts
                    if counted is None
                    else [a + b for a, b in zip(counted, counts, strict=True)]
                )
        assert process.wait() == 0
    rows = sorted(
        (int(start), int(end), int(pid))
        for pid, start, end in (line.split() for line in ledger.read_text().splitlines())
    )
    handoffs = [b[0] - a[1] for a, b in itertools.pairwise(rows) if a[2] != b[2]]
    span = max(end for _, end, _ in rows) - rows[0][0]  # first grant to last release
    shutil.rmtree(where, ignore_errors=True)
    p50, p99 = (_percentile(handoffs, p) / 1000 for p in (50, 99))
    looks, decisions = (None, None) if counted is None else (c / len(rows) for c in counted)
    return Row(span / len(rows) / 1000, p50, p99, looks, decisions)


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
    results: dict[str, list[Row]] = {k: [] for k in kinds}
    for n in PROCESSES:
        for kind in kinds:  # interleaved per size: the machine's noise lands on every row
            results[kind].append(one_row(kind, n, holds, baseline_src))
    names = {"gpuguard": "GpuGuard.host", "baseline": "baseline GpuGuard.host"}
    for kind in kinds:
        cells = "".join(f" {r.hold:15.1f} {r.p50:8.1f} {r.p99:8.1f}" for r in results[kind])
        print(f"{names.get(kind, kind):24}{cells}")
    flat = [row.hold for row in results["gpuguard"]]
    print(f"GpuGuard.host per hold, 16 vs 2 processes: {flat[-1] / flat[0]:.2f}x")
    handoff = statistics.median(row.p50 for row in results["gpuguard"])
    floor = statistics.median(row.p50 for row in results["flock"])
    print(f"GpuGuard.host hand-off p50 (median over N) vs fcntl.flock: {handoff / floor:.1f}x")
    print("\nper hold, every process together: watcher looks (wake-ups) / decisions")
    print(f"{'':24}" + "".join(f" {f'{n} procs':>17}" for n in PROCESSES))
    for kind in (k for k in kinds if k in names):
        cells = "".join(
            f" {'-':>17}" if r.looks is None else f" {r.looks:8.2f}/{r.decisions or 0:8.2f}"
            for r in results[kind]
        )
        print(f"{names[kind]:24}{cells}")


if __name__ == "__main__" and sys.argv[1:2] == ["--child"]:
    kind, where, ledger, holds, src = sys.argv[2:7]
    child(kind, where, ledger, int(holds), src or None)
