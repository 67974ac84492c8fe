"""Benchmark: the Redis scope at scale, beside a plain ``SET NX PX`` + pub/sub lock.

Run it as ``python bench/redis_scale.py [--quick] [--baseline SRC] [--url URL]``. It starts a
``redis-server`` of its own on a free port (unless ``--url`` names one) and deletes every key
it made. For 1, 4, 16, 64 and 256 clients (``--quick``: up to 64), each client a guard with
its own connections, spread over up to :data:`PROCESSES` processes, every client holds the
GPU ``holds`` times in a row with an empty body; per hold it prints:

* commands/op: ``INFO commandstats`` calls over the measured holds (the commands the lease
  script runs included), per hold;
* Redis CPU/op: ``used_cpu_user + used_cpu_sys`` of the server, per hold, in microseconds;
* client CPU/op: the client processes' CPU time (``time.process_time``) over the measured
  holds, per hold, in microseconds: with Redis's, where a hand-off's time goes on the cores;
* hand-off p50/p99: from one hold's release to the next hold's first line, on the
  system-wide monotonic clock (every client waits, so each grant is a hand-off).

``budget`` is the same scope under the budget policy (a fake 80-GiB GPU, 1 GiB kept free)
with holds that declare 50 GiB each, so no two fit together: every grant takes the sharing
path (the room measured, the ledger summed in the script), and still hands off one at a time.
The peer (``setnx``) is the lock most Redis users write: ``SET key token NX PX ttl``; a
waiter that fails waits for a ``released`` message (or 100 ms) and tries again; the holder
deletes its key with a compare-and-delete script and publishes ``released``. It has no queue
and no fairness. ``--baseline SRC`` runs the scope of another checkout's ``src/`` too. The
implementations run one after the other at each size, so noise lands on each. Prints the
load average.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Final

PROCESSES: Final = 4
PREFIX: Final = "gpuguard-bench-scale"
RELEASE: Final = (
    "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end "
    "redis.call('PUBLISH', KEYS[2], 'released')"
)


# --- the clients (in a worker process) ------------------------------------------------------


Warm = Callable[[], None]


async def guard_client(
    url: str, name: str, holds: int, warm: Warm, go: asyncio.Event, budget: bool = False
) -> list[int]:
    """One guard: a warm-up hold, then ``holds`` holds; [grant_ns, release_ns, ...]."""
    from gpuguard import EventBus, GpuGuard

    bus = EventBus(history_size=0)
    options: dict[str, Any] = {}  # none for the baseline, whose guard takes no policy
    need = None
    if budget:
        from gpuguard.devices import FakeDevices
        from gpuguard.guard.policies import Budget

        gpu = FakeDevices.with_gpus(80 * 1024)
        options["policy"] = Budget(lambda: gpu.info(0), headroom_bytes=1024**3)
        need = 50 * 1024**3  # no two fit together: one at a time, through the ledger
    guard = GpuGuard.redis(url, name, prefix=PREFIX, events=bus, max_waiters=1024, **options)
    times: list[int] = []
    try:
        async with guard.hold("warm-up", memory_bytes=need):
            pass
        warm()
        await go.wait()
        for _ in range(holds):
            async with guard.hold("bench", memory_bytes=need):
                times.append(time.monotonic_ns())
                await asyncio.sleep(0)
                times.append(time.monotonic_ns())
        return times
    finally:
        await guard.aclose()


async def setnx_client(url: str, name: str, holds: int, warm: Warm, go: asyncio.Event) -> list[int]:
    """One plain ``SET NX PX`` + pub/sub lock client."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    key, channel = f"{PREFIX}:{{{name}}}:lock", f"{PREFIX}:{{{name}}}:released"
    release = client.register_script(RELEASE)
    pubsub = client.pubsub()
    await pubsub.subscribe(channel)
    token, times = uuid.uuid4().hex, []
    try:
        warm()
        await go.wait()
        for _ in range(holds):
            while not await client.set(key, token, nx=True, px=2000):
                await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
            times.append(time.monotonic_ns())
            await asyncio.sleep(0)
            times.append(time.monotonic_ns())
            await release(keys=[key, channel], args=[token])
        return times
    finally:
        await pubsub.aclose()  # type: ignore[attr-defined]
        await client.aclose()  # type: ignore[attr-defined]


async def worker(impl: str, url: str, name: str, clients: int, holds: int, out: str) -> None:
    """Run ``clients`` clients; "ready" once warm, go on "go", "done", exit on "exit"."""
    all_warm, go, warmed = asyncio.Event(), asyncio.Event(), [0]

    def warm() -> None:
        warmed[0] += 1
        if warmed[0] == clients:
            all_warm.set()

    def run() -> Coroutine[None, None, list[int]]:
        if impl == "setnx":
            return setnx_client(url, name, holds, warm, go)
        return guard_client(url, name, holds, warm, go, budget=impl == "budget")

    tasks = [asyncio.create_task(run()) for _ in range(clients)]
    await all_warm.wait()
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    cpu = time.process_time()
    go.set()
    results = await asyncio.gather(*tasks)
    cpu = time.process_time() - cpu
    text = "\n".join(" ".join(map(str, r)) for r in results)
    await asyncio.to_thread(Path(out).write_text, text)
    print(f"done {cpu!r}", flush=True)


# --- the parent -----------------------------------------------------------------------------


def start_redis(directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A private ``redis-server`` on a free port, answering."""
    import socket

    import redis

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    binary = shutil.which("redis-server") or "redis-server"
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    process = subprocess.Popen(
        [*args, "--appendonly", "no", "--dir", str(directory)], stdout=subprocess.DEVNULL
    )
    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.RedisError:
            time.sleep(0.05)
    return process, f"redis://127.0.0.1:{port}/0"


def server_counters(url: str) -> tuple[int, float]:
    """Commands run (less INFO itself) and CPU seconds used by the server so far."""
    import redis

    client = redis.Redis.from_url(url)
    stats = client.info("commandstats")
    calls = sum(int(r["calls"]) for k, r in stats.items() if k != "cmdstat_info")
    cpu = client.info("cpu")
    client.close()
    return calls, float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def run_size(impl: str, src: str, url: str, clients: int, holds: int) -> dict[str, float]:
    """One measurement: ``clients`` clients of ``impl`` (gpuguard under ``src``, or setnx)."""
    name = f"scale-{uuid.uuid4().hex[:8]}"
    procs = min(PROCESSES, clients)
    env = {**os.environ, "PYTHONPATH": src}
    with tempfile.TemporaryDirectory() as tmp:
        outs = [str(Path(tmp) / f"w{i}") for i in range(procs)]
        workers = [
            subprocess.Popen(
                [
                    *(sys.executable, __file__, "--worker", impl, url, name),
                    *(str(clients // procs + (i < clients % procs)), str(holds), outs[i]),
                ],
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for i in range(procs)
        ]
        try:
            spans, calls, cpu_s, client_s = _measure(workers, outs, url)
        finally:
            for w in workers:
                w.kill()  # a worker that failed must not outlive the bench
                w.wait(5)
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end <= start, f"{impl}: two clients held at once"
    gaps = [b[0] - a[1] for a, b in itertools.pairwise(spans)]
    n = len(spans)
    return {
        "ops": n,
        "cmds": calls / n,
        "cpu_us": cpu_s * 1e6 / n,
        "client_us": client_s * 1e6 / n,
        "p50": _pct(gaps, 50) / 1e6,
        "p99": _pct(gaps, 99) / 1e6,
    }


def _measure(
    workers: list[subprocess.Popen[str]], outs: list[str], url: str
) -> tuple[list[tuple[int, int]], int, float, float]:
    """Start the warm workers at once; their holds, the server's commands and CPU, theirs."""
    for w in workers:
        assert w.stdout is not None
        assert w.stdout.readline().strip() == "ready"
    calls, cpu = server_counters(url)
    client_s = 0.0
    for w in workers:
        assert w.stdin is not None
        w.stdin.write("go\n")
        w.stdin.flush()
    for w in workers:
        assert w.stdout is not None
        done, client_cpu = w.stdout.readline().split()
        assert done == "done"
        client_s += float(client_cpu)
    calls2, cpu2 = server_counters(url)
    spans = sorted(
        (int(pair[0]), int(pair[1]))
        for out in outs
        for line in Path(out).read_text().splitlines()
        if line
        for pair in _pairs(line.split())
    )
    return spans, calls2 - calls, cpu2 - cpu, client_s


def _pairs(values: list[str]) -> list[tuple[str, str]]:
    return list(zip(values[::2], values[1::2], strict=True))


def _pct(samples: list[int], p: float) -> float:
    if len(samples) < 2:
        return float(samples[0]) if samples else 0.0
    return statistics.quantiles(samples, n=100, method="inclusive")[int(p) - 1]


def main(quick: bool, baseline: str | None, url: str | None, sizes: list[int] | None) -> None:
    """Start Redis (unless ``url``), measure every size, print the table, leave no keys."""
    import redis

    here = str(Path(__file__).resolve().parents[1] / "src")
    impls = [("gpuguard", here)] + ([("baseline", baseline)] if baseline else [])
    impls += [("budget", here), ("setnx", here)]
    sizes = sizes or ([1, 4, 16, 64] if quick else [1, 4, 16, 64, 256])
    with tempfile.TemporaryDirectory() as tmp:
        server = None
        if url is None:
            server, url = start_redis(Path(tmp))
        try:
            print(f"load average {os.getloadavg()}; redis at {url}")
            print(f"{'clients':>7} {'impl':>9} {'holds':>6} {'cmds/op':>8} {'CPU us/op':>10} "
                  f"{'client us/op':>12} "
                  f"{'p50 ms':>8} {'p99 ms':>8}")  # fmt: skip
            for clients in sizes:
                holds = max(2, (100 if quick else 300) // clients)
                for label, src in impls:
                    impl = label if label in ("setnx", "budget") else "gpuguard"
                    r = run_size(impl, src, url, clients, holds)
                    print(
                        f"{clients:7} {label:>9} {r['ops']:6.0f} {r['cmds']:8.1f} "
                        f"{r['cpu_us']:10.0f} {r['client_us']:12.0f} {r['p50']:8.3f} "
                        f"{r['p99']:8.3f}",
                        flush=True,
                    )
            print(f"load average {os.getloadavg()}")
        finally:
            client = redis.Redis.from_url(url)
            keys = list(client.scan_iter(match=f"{PREFIX}:*"))
            if keys:
                client.delete(*keys)
            client.close()
            if server is not None:
                server.kill()
                server.wait(5)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--quick", action="store_true", help="sizes up to 64 clients")
    parser.add_argument("--baseline", metavar="SRC", help="also the scope of SRC")
    parser.add_argument("--url", help="an existing Redis (its keys under the prefix go)")
    parser.add_argument("--clients", type=int, nargs="+", help="these sizes only")
    parser.add_argument("--worker", nargs=6, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.worker:
        impl, url, name, clients, holds, out = arguments.worker
        asyncio.run(worker(impl, url, name, int(clients), int(holds), out))
    else:
        main(arguments.quick, arguments.baseline, arguments.url, arguments.clients)
