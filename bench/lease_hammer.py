"""Benchmark: one GPU lease under a hammer of processes, some SIGKILLed while they hold it.

Run it as ``python bench/lease_hammer.py [--quick] [--procs N] [--seconds S] [--kills K]
[--redis URL] [--only NAME,...]``. For each target - the host scope in a directory under
``/var/tmp`` (ext4 here), the host scope under ``/dev/shm`` (tmpfs) and the Redis scope (the
Redis at ``--redis``, default ``redis://127.0.0.1:6379/0``, under a key prefix of its own;
every key it made is deleted at the end) - it runs N worker processes (this script with
``--worker``) for S seconds. Each worker runs three tasks that take the lease over and over
with random priorities, wait timeouts and cancels. While it holds, a worker "uses the GPU":
it takes an independent sentinel ``flock`` without blocking (a conflict means another holder
still has it) and stamps ``E``/``L`` lines with ``CLOCK_MONOTONIC`` nanoseconds into an
external ledger (one ``O_APPEND`` write each). One hold in ten is long (20-100 ms), so that
the parent, which watches the ledger, finds holders to SIGKILL (at most K, spread over the
run); a killed worker is replaced by a fresh one.

Counted per target, from the ledger and the workers' reports: holds, wait timeouts, cancels,
kills (and how many hit a hold in progress), overlapping holds (a hold that began before the
previous one ended; a killed hold ends when its SIGKILL was sent, as the lease cannot know
earlier), sentinel conflicts (which also cover the moment between the SIGKILL and the
process's death) and holds per second. Prints the machine's load average.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

REDIS_URL: Final = "redis://127.0.0.1:6379/0"
TARGETS: Final = ("host-ext4", "host-tmpfs", "redis")
LONG_HOLD_S: Final = (0.02, 0.1)
"""How long the one hold in ten that the parent may kill lasts."""
WATCH_S: Final = 0.002
"""How often the parent reads the ledger while it looks for a holder to kill."""
STOP_GRACE_S: Final = 60.0
"""Bound on the workers' last holds once told to stop (then they are killed and reported)."""


# --- a worker (``--worker``) ------------------------------------------------------------------


async def hammer(
    scope: str, where: str, ledger: str, sentinel: str, stop_ns: int, seed: int
) -> None:
    """Hold the lease until ``CLOCK_MONOTONIC`` reaches ``stop_ns``; print the outcomes."""
    from gpuguard import GpuGuard, Priority, WaitTimeout

    logging.getLogger("gpuguard").setLevel(logging.CRITICAL)  # a timeout is not news here
    if scope == "redis":
        url, prefix = where.split(" ")
        guard = GpuGuard.redis(url, prefix=prefix, max_waiters=1000, aging_s=0.05)
    else:
        guard = GpuGuard.host(lock_dir=where, max_waiters=1000, aging_s=0.05)
    rng = random.Random(seed)
    out = os.open(ledger, os.O_WRONLY | os.O_APPEND)
    pid, counter = os.getpid(), iter(range(1 << 62))
    outcomes = {"held": 0, "timeout": 0, "cancelled": 0}

    def stamp(kind: str, n: int) -> None:
        os.write(out, f"{kind} {pid} {n} {time.monotonic_ns()}\n".encode())

    async def one() -> None:
        priority = rng.choice(list(Priority))
        timeout = rng.choice([None, 0.002, 0.02, 0.2])
        async with guard.hold("hammer", priority=priority, wait_timeout=timeout):
            n = next(counter)
            lock = os.open(sentinel, os.O_RDONLY)
            try:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    stamp("C", n)
                stamp("E", n)
                long = rng.random() < 0.1
                await asyncio.sleep(rng.uniform(*LONG_HOLD_S) if long else rng.random() * 0.002)
            finally:  # a cancelled hold leaves too; only a killed one never does
                stamp("L", n)
                os.close(lock)

    async def task() -> None:
        while time.monotonic_ns() < stop_ns:
            attempt = asyncio.ensure_future(one())
            if rng.random() < 0.2:
                await asyncio.sleep(rng.random() * 0.003)
                attempt.cancel()
            try:
                await attempt
                outcomes["held"] += 1
            except WaitTimeout:
                outcomes["timeout"] += 1
            except asyncio.CancelledError:
                outcomes["cancelled"] += 1

    try:
        await asyncio.gather(task(), task(), task())
    finally:
        await guard.aclose()
        os.close(out)
    print(" ".join(f"{k}={v}" for k, v in outcomes.items()), flush=True)


# --- the parent ---------------------------------------------------------------------------


@dataclass
class Result:
    """What one target's run counted."""

    name: str
    seconds: float
    holds: int = 0
    timeouts: int = 0
    cancels: int = 0
    kills: int = 0
    kills_in_hold: int = 0
    overlaps: int = 0
    conflicts: int = 0
    lost_workers: int = 0
    notes: list[str] = field(default_factory=list)


@dataclass
class Ledger:
    """The ledger read back: each hold's enter and leave stamps, and sentinel conflicts."""

    path: Path
    enter: dict[tuple[int, int], int] = field(default_factory=dict)
    leave: dict[tuple[int, int], int] = field(default_factory=dict)
    conflicts: int = 0
    _offset: int = 0

    def update(self) -> Ledger:
        """Read the lines added since the last call (whole lines only)."""
        with self.path.open("rb") as ledger:
            ledger.seek(self._offset)
            chunk = ledger.read()
        whole = chunk[: chunk.rfind(b"\n") + 1]
        self._offset += len(whole)
        for record in whole.decode().splitlines():
            kind, pid, n, ns = record.split()
            key = (int(pid), int(n))
            if kind == "E":
                self.enter[key] = int(ns)
            elif kind == "L":
                self.leave[key] = int(ns)
            else:
                self.conflicts += 1
        return self

    def span_s(self) -> float:
        """From the first hold's start to the last one's end, in seconds."""
        stamps = [*self.enter.values(), *self.leave.values()]
        return (max(stamps) - min(stamps)) / 1e9 if stamps else 0.0

    def open_holds(self) -> list[tuple[int, int]]:
        """Holds entered and not left, oldest first."""
        return sorted((k for k in self.enter if k not in self.leave), key=self.enter.__getitem__)

    def overlaps(self, killed_at: dict[int, int]) -> int:
        """Holds that began before an earlier one ended (a killed one ends at its SIGKILL)."""
        spans = []
        for key, start in self.enter.items():
            end = self.leave.get(key, killed_at.get(key[0]))
            if end is not None:
                spans.append((start, end))
        spans.sort()
        count, latest = 0, -1
        for start, end in spans:
            if start < latest:
                count += 1
            latest = max(latest, end)
        return count


class Crew:
    """The worker processes of one target."""

    def __init__(self, argv: list[str], rng: random.Random) -> None:
        self._argv, self._rng = argv, rng
        self.running: dict[int, subprocess.Popen[str]] = {}
        self.killed: list[subprocess.Popen[str]] = []

    def start(self) -> None:
        """One more worker, with a seed of its own."""
        seed = str(self._rng.randrange(1 << 30))
        worker = subprocess.Popen([*self._argv, seed], stdout=subprocess.PIPE, text=True)
        self.running[worker.pid] = worker

    def kill(self, pid: int) -> int:
        """SIGKILL worker ``pid``, wait for its end and start another; when it was sent (ns)."""
        worker = self.running.pop(pid)
        sent = time.monotonic_ns()
        worker.kill()
        worker.wait()
        self.killed.append(worker)
        self.start()
        return sent

    def finish(self) -> tuple[dict[str, int], int]:
        """Wait for every worker's report: summed counts, and how many never reported."""
        totals = {"held": 0, "timeout": 0, "cancelled": 0}
        lost = 0
        deadline = time.monotonic() + STOP_GRACE_S
        for worker in self.running.values():
            try:
                out, _ = worker.communicate(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.kill()
                out, _ = worker.communicate()
            words = dict(w.split("=") for w in out.split() if "=" in w)
            if not words:
                lost += 1
            for key in totals:
                totals[key] += int(words.get(key, 0))
        return totals, lost


def run_target(name: str, procs: int, seconds: float, kills: int, redis_url: str) -> Result:
    """Hammer one target for ``seconds``; count what happened."""
    work = Path(tempfile.mkdtemp(prefix="gpuguard-hammer-"))
    base = "/dev/shm" if name == "host-tmpfs" else "/var/tmp"
    lock_dir = tempfile.mkdtemp(prefix="gpuguard-hammer-locks-", dir=base)
    prefix = f"gpuguard-bench-hammer-{uuid.uuid4().hex[:8]}"
    scope, where = ("redis", f"{redis_url} {prefix}") if name == "redis" else ("host", lock_dir)
    ledger, sentinel = work / "ledger", work / "sentinel"
    ledger.touch()
    sentinel.touch()
    began = time.monotonic()
    stop_ns = int((began + seconds) * 1e9)
    argv = [sys.executable, __file__, "--worker", scope, where, str(ledger), str(sentinel)]
    crew = Crew([*argv, str(stop_ns)], random.Random(name))
    result = Result(name, seconds)
    killed_at: dict[int, int] = {}
    book = Ledger(ledger)
    try:
        for _ in range(procs):
            crew.start()
        spacing = seconds / (kills + 1)
        next_kill = began + spacing
        while time.monotonic() < began + seconds:
            time.sleep(WATCH_S)
            if result.kills >= kills or time.monotonic() < next_kill:
                continue
            ripe = time.monotonic_ns() - int(LONG_HOLD_S[0] / 4 * 1e9)  # a long hold, likely
            held = [
                k
                for k in book.update().open_holds()
                if k[0] in crew.running and book.enter[k] < ripe
            ]
            if held:
                killed_at[held[0][0]] = crew.kill(held[0][0])
                result.kills += 1
                next_kill += spacing
        totals, result.lost_workers = crew.finish()
    finally:
        for worker in crew.running.values():
            with contextlib.suppress(ProcessLookupError):
                worker.kill()
        if name == "redis":
            result.notes.append(clean_redis(redis_url, prefix))
        shutil.rmtree(lock_dir, ignore_errors=True)
    book.update()
    shutil.rmtree(work, ignore_errors=True)
    result.seconds = book.span_s()
    result.holds, result.timeouts, result.cancels = (
        totals["held"] + sum(1 for k in book.leave if k[0] in killed_at),
        totals["timeout"],
        totals["cancelled"],
    )
    result.kills_in_hold = sum(1 for k in book.open_holds() if k[0] in killed_at)
    result.overlaps = book.overlaps(killed_at)
    result.conflicts = book.conflicts
    return result


def clean_redis(url: str, prefix: str) -> str:
    """Delete every key under ``prefix``; say how many there were and that none is left."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        left = sum(1 for _ in client.scan_iter(match=f"{prefix}*", count=1000))
    finally:
        client.close()
    return f"redis: {len(keys)} keys of the run deleted, {left} left"


def table(results: list[Result]) -> str:
    """The results as a Markdown table."""
    head = (
        "| target | s | holds | holds/s | timeouts | cancels | kills (in a hold) "
        "| overlaps | sentinel conflicts |"
    )
    rows = [head, "|" + "---|" * 9]
    for r in results:
        rows.append(
            f"| {r.name} | {r.seconds:.0f} | {r.holds} | {r.holds / r.seconds:.0f} "
            f"| {r.timeouts} | {r.cancels} | {r.kills} ({r.kills_in_hold}) "
            f"| {r.overlaps} | {r.conflicts} |"
        )
    return "\n".join(rows)


def main() -> None:
    """Parse the arguments; run a worker, or every target and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="15 s a target, 3 kills")
    parser.add_argument("--procs", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=None, help="default 60")
    parser.add_argument("--kills", type=int, default=None, help="default 12")
    parser.add_argument("--redis", default=REDIS_URL)
    parser.add_argument("--only", default=",".join(TARGETS))
    parser.add_argument("--worker", nargs=6, metavar="ARG", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        scope, where, ledger, sentinel, stop_ns, seed = args.worker
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(hammer(scope, where, ledger, sentinel, int(stop_ns), int(seed)))
        return
    seconds = args.seconds if args.seconds is not None else (15.0 if args.quick else 60.0)
    kills = args.kills if args.kills is not None else (3 if args.quick else 12)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    print(f"load average before {os.getloadavg()}; {args.procs} processes, {os.cpu_count()} CPUs")
    results = []
    for name in args.only.split(","):
        if name not in TARGETS:
            raise SystemExit(f"unknown target {name!r}: {', '.join(TARGETS)}")
        results.append(run_target(name, args.procs, seconds, kills, args.redis))
        print(f"{name} done; load average {os.getloadavg()}", flush=True)
    print(table(results))
    for r in results:
        for note in r.notes:
            print(note)
        if r.lost_workers:
            print(f"{r.name}: {r.lost_workers} workers did not stop in time (killed)")
    print(f"load average after {os.getloadavg()}")


if __name__ == "__main__":
    main()
