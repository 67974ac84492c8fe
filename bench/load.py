"""Load test: many concurrent streamed chats, model loads/unloads and indexing on one server.

A gpuguard server runs in a child process on 127.0.0.1 (the fake LLM backend, the hash
embedder, a real vector store and job manager), and this process drives it through one
shared httpx pool, as an app using the openai client does (httpx keeps an idle connection
5 s). Each client streams chats one after another; a share of its pauses lasts about that
5 s, where a server that closes idle connections itself races the client's pool. Meanwhile
models are loaded and unloaded every 0.5 s and documents and a database are indexed every
3 s. Everything is bounded in count and time and stops by itself.

Verdict (exit status 1 when it fails): no request lost (a transport error or a hang), every
refusal an explicit busy answer (503 with Retry-After), and the server's memory flat from
the first round to the last.

    python bench/load.py                        # 200 clients, 5 rounds of 2,000 chats
    python bench/load.py --ci                   # the CI size (well under a minute)
    python bench/load.py --server-keep-alive 5  # uvicorn's default: shows the lost requests
    python bench/load.py --attacks [--ci]       # slowloris, idle SSE, stalled readers
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import os
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

import gpuguard
import load_attacks

# The child imports the same gpuguard as this process, whatever its working directory.
GPUGUARD_SOURCE = str(Path(gpuguard.__file__).resolve().parents[1])
MODEL = "fake-llm"
OTHER = "other-llm"
CLIENT_KEEP_ALIVE_S = httpx.Limits().keepalive_expiry or 5.0
BUSY_CODES = {"gpu_queue_full", "gpu_wait_timeout", "gpu_busy", "backend_busy"}
FLAT_LIMIT_BYTES = 24 * 2**20
JITTER_S = float(os.environ.get("LOAD_JITTER_S", "0.03"))
WORDS = ["guard", "lease", "model", "chat", "index", "batch", "queue", "token", "stream", "fair"]


@dataclass(frozen=True)
class Size:
    """How much load one run makes."""

    clients: int
    rounds: int
    chats_per_round: int
    long_pauses: int  # pauses per client and round that last about the pool's keep-alive


BENCH = Size(clients=200, rounds=5, chats_per_round=2000, long_pauses=2)
CI = Size(clients=40, rounds=3, chats_per_round=160, long_pauses=1)


@dataclass
class Tally:
    """Outcomes by kind, with a few examples of each failure for the report."""

    outcomes: Counter[str] = field(default_factory=Counter)
    latencies_s: list[float] = field(default_factory=list)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, what: str, outcome: str, detail: str = "") -> None:
        """Count an outcome: ``ok``, ``busy``, ``busy-in-stream``, ``lost`` or ``failed``."""
        self.outcomes[f"{what}:{outcome}"] += 1
        if outcome in ("lost", "failed"):
            self.examples.setdefault(outcome, [])
            if len(self.examples[outcome]) < 5:
                self.examples[outcome].append(f"{what}: {detail}")

    def total(self, outcome: str | None = None) -> int:
        """Requests with ``outcome`` (all requests when None)."""
        return sum(n for key, n in self.outcomes.items() if outcome in (None, key.split(":")[1]))


def is_busy(response: httpx.Response, body: bytes) -> bool:
    """An explicit busy answer: 503, a Retry-After, and a busy error code."""
    if response.status_code != 503 or "retry-after" not in response.headers:
        return False
    try:
        return bool(json.loads(body)["error"]["code"] in BUSY_CODES)
    except (ValueError, KeyError, TypeError):
        return False


async def call(
    http: httpx.AsyncClient, tally: Tally, what: str, path: str, document: dict[str, Any]
) -> None:
    """One non-streamed request, counted."""
    try:
        response = await http.post(path, json=document)
    except httpx.TransportError as exc:
        tally.add(what, "lost", repr(exc))
        return
    if response.is_success:
        tally.add(what, "ok")
    elif is_busy(response, response.content):
        tally.add(what, "busy")
    else:
        tally.add(what, "failed", f"{response.status_code} {response.text[:200]}")


async def streamed_chat(http: httpx.AsyncClient, tally: Tally, rng: random.Random) -> None:
    """One streamed chat, read to its ``[DONE]``; an error frame counts as a failure."""
    words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 40)))
    document: dict[str, Any] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": words}],
        "stream": True,
        "retrieval": rng.random() < 0.1,
    }
    started = time.perf_counter()
    steps: list[str] = []

    async def trace(event: str, info: dict[str, Any]) -> None:
        steps.append(event)

    try:
        async with http.stream(
            "POST", "/v1/chat/completions", json=document, extensions={"trace": trace}
        ) as response:
            body = await response.aread()
    except httpx.TransportError as exc:
        connection = "new" if "connection.connect_tcp.complete" in steps else "reused"
        tally.add("chat", "lost", f"{exc!r} on a {connection} connection, at {steps[-1:]}")
        return
    if response.status_code != 200:
        if is_busy(response, body):
            tally.add("chat", "busy")
        else:
            tally.add("chat", "failed", f"{response.status_code} {body[:200]!r}")
        return
    frames = [line[6:] for line in body.decode().splitlines() if line.startswith("data: ")]
    errors = [json.loads(f)["error"] for f in frames[:-1] if f.startswith('{"error"')]
    if errors and all(error.get("code") in BUSY_CODES for error in errors):
        tally.add("chat", "busy-in-stream")  # explicit, but after the 200 went out
        return
    if not frames or frames[-1] != "[DONE]" or errors:
        tally.add("chat", "failed", f"stream ended badly: {frames[-2:]}")
        return
    tally.latencies_s.append(time.perf_counter() - started)
    tally.add("chat", "ok")


async def client(
    http: httpx.AsyncClient, tally: Tally, chats: int, long_pauses: int, rng: random.Random
) -> None:
    """Chats one after another; ``long_pauses`` of the pauses last about the pool's expiry."""
    long = set(rng.sample(range(chats), min(long_pauses, chats)))
    for index in range(chats):
        await streamed_chat(http, tally, rng)
        if index in long:
            await asyncio.sleep(CLIENT_KEEP_ALIVE_S + rng.uniform(-JITTER_S, JITTER_S))
        else:
            await asyncio.sleep(rng.uniform(0, 0.05))


async def models(http: httpx.AsyncClient, tally: Tally, stop: asyncio.Event) -> None:
    """Load and unload a second model every 0.5 s; prewarm the current one now and then."""
    steps = [
        ("load", "/admin/models/load", {"model": OTHER}),
        ("unload", "/admin/models/unload", {"model": OTHER}),
        ("load", "/admin/models/load", {"model": OTHER}),
        ("unload", "/admin/models/unload", {"model": OTHER}),
        ("prewarm", "/admin/models/prewarm", {"model": MODEL}),
    ]
    for what, path, document in itertools.cycle(steps):
        await call(http, tally, what, path, document)
        if await _stopped(stop, 0.5):
            return


async def indexing(
    http: httpx.AsyncClient, tally: Tally, stop: asyncio.Event, documents: Path, database: str
) -> None:
    """Index the sample documents and refresh the sample database's schemas every 3 s."""
    while True:
        await call(http, tally, "rag", "/admin/jobs/rag", {"path": str(documents)})
        await call(http, tally, "schema", "/admin/jobs/schema-refresh", {"database_url": database})
        if await _stopped(stop, 3.0):
            return


async def _stopped(stop: asyncio.Event, within_s: float) -> bool:
    try:
        await asyncio.wait_for(stop.wait(), within_s)
    except TimeoutError:
        return False
    return True


async def jobs_settled(http: httpx.AsyncClient, *, limit_s: float = 60.0) -> bool:
    """Wait (bounded) until no indexing job runs; False when some still run at the limit."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        listed = (await http.get("/admin/jobs")).json()["jobs"]
        if all(job["status"] != "running" for job in listed):
            return True
        await asyncio.sleep(0.2)
    return False


def rss_bytes(pid: int) -> int:
    """The resident set size of process ``pid`` (Linux ``/proc``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


@asynccontextmanager
async def child_server(
    workdir: Path,
    keep_alive_s: int | None,
    max_waiters: int,
    bounds: dict[str, float] | None = None,
) -> AsyncIterator[tuple[str, str, int]]:
    """Start the server in a child process; yields its URL, admin token and pid; ends it.

    ``bounds`` are ``[server]`` settings of the child (``stalled_reader_s``, ...).
    """
    command = [sys.executable, __file__, "--serve", "--max-waiters", str(max_waiters)]
    if keep_alive_s is not None:
        command += ["--server-keep-alive", str(keep_alive_s)]
    if bounds:
        command += ["--server-bounds", json.dumps(bounds)]
    paths = [GPUGUARD_SOURCE, os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=workdir,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdin is not None
    assert process.stdout is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), 60)
        if not line:
            raise RuntimeError("the server process ended before it served")
        url, token = line.decode().split()  # the child's URL and its admin token
        yield url, token, process.pid
    finally:
        process.stdin.close()  # the child serves until its stdin ends
        try:
            await asyncio.wait_for(process.wait(), 30)
        except TimeoutError:
            process.kill()
            await process.wait()


async def run(
    size: Size, *, keep_alive_s: int | None, max_waiters: int, seed: int
) -> dict[str, Any]:
    """Run the load once; returns the figures."""
    from gpuguard.cli._samples import write_sample_database, write_sample_documents

    rng = random.Random(seed)
    tally = Tally()
    with tempfile.TemporaryDirectory(prefix="gpuguard-load-") as tmp:
        workdir = Path(tmp)
        documents = write_sample_documents(workdir / "docs")
        database = write_sample_database(workdir / "shop.sqlite")
        async with child_server(workdir, keep_alive_s, max_waiters) as (url, token, pid):
            limits = httpx.Limits(max_connections=size.clients + 8)
            admin = {"Authorization": f"Bearer {token}"}
            async with httpx.AsyncClient(
                base_url=url, limits=limits, headers=admin, timeout=60
            ) as http:
                rss_start = rss_bytes(pid)
                samples = [rss_start]
                stop = asyncio.Event()
                background = [
                    asyncio.create_task(models(http, tally, stop)),
                    asyncio.create_task(indexing(http, tally, stop, documents, database)),
                ]
                sampler = asyncio.create_task(_sample(pid, samples, stop))
                per_client = max(1, size.chats_per_round // size.clients)
                round_ends = []
                started = time.perf_counter()
                for _ in range(size.rounds):
                    await asyncio.gather(
                        *(
                            client(http, tally, per_client, size.long_pauses, rng)
                            for _ in range(size.clients)
                        )
                    )
                    round_ends.append(rss_bytes(pid))
                stop.set()
                await asyncio.gather(*background, sampler)
                settled = await jobs_settled(http)
                elapsed = time.perf_counter() - started
                rss_end = rss_bytes(pid)
    latencies = sorted(tally.latencies_s) or [0.0]
    growth = round_ends[-1] - round_ends[0]
    return {
        "clients": size.clients,
        "rounds": size.rounds,
        "server_keep_alive_s": keep_alive_s,
        "requests": tally.total(),
        "ok": tally.total("ok"),
        "busy": tally.total("busy"),
        "busy_in_stream": tally.total("busy-in-stream"),
        "lost": tally.total("lost"),
        "failed": tally.total("failed"),
        "by_kind": dict(sorted(tally.outcomes.items())),
        "examples": tally.examples,
        "chat_p50_ms": 1000 * statistics.median(latencies),
        "chat_p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        "rss_start_mb": rss_start / 2**20,
        "rss_peak_mb": max(samples) / 2**20,
        "rss_end_mb": rss_end / 2**20,
        "rss_round_ends_mb": [r / 2**20 for r in round_ends],
        "rss_growth_mb": growth / 2**20,
        "flat": growth <= FLAT_LIMIT_BYTES,
        "jobs_settled": settled,
        "elapsed_s": elapsed,
    }


async def attacks(size: load_attacks.AttackSize) -> dict[str, Any]:
    """The attack rows (bench/load_attacks.py) against a child server with short bounds."""
    with tempfile.TemporaryDirectory(prefix="gpuguard-attacks-") as tmp:
        async with child_server(Path(tmp), None, 64, load_attacks.BOUNDS) as (url, token, pid):
            return await load_attacks.run_attacks(url, token, pid, size, rss_bytes)


async def _sample(pid: int, samples: list[int], stop: asyncio.Event) -> None:
    while not await _stopped(stop, 0.25):
        samples.append(rss_bytes(pid))


def passed(figures: dict[str, Any]) -> bool:
    """The verdict: nothing lost, only busy refusals, flat memory, every job finished."""
    return bool(
        figures["lost"] == 0
        and figures["failed"] == 0
        and figures["flat"]
        and figures["jobs_settled"]
    )


def report(figures: dict[str, Any]) -> str:
    """The figures as a table."""
    rows = [
        ("clients x rounds", f"{figures['clients']} x {figures['rounds']}"),
        ("server keep-alive", f"{figures['server_keep_alive_s'] or 'default'} s"),
        ("requests", figures["requests"]),
        ("ok", figures["ok"]),
        ("busy 503 (Retry-After)", figures["busy"]),
        ("busy error frame after 200", figures["busy_in_stream"]),
        ("lost (transport error)", figures["lost"]),
        ("failed otherwise", figures["failed"]),
        ("chat p50 / p99 ms", f"{figures['chat_p50_ms']:.1f} / {figures['chat_p99_ms']:.1f}"),
        (
            "server RSS start/peak/end MB",
            f"{figures['rss_start_mb']:.1f} / {figures['rss_peak_mb']:.1f} / "
            f"{figures['rss_end_mb']:.1f}",
        ),
        ("RSS at each round's end MB", " ".join(f"{r:.1f}" for r in figures["rss_round_ends_mb"])),
        ("elapsed s", f"{figures['elapsed_s']:.1f}"),
    ]
    lines = [f"{name:<30} {value}" for name, value in rows]
    lines += [f"  {kind}: {n}" for kind, n in figures["by_kind"].items()]
    for outcome, examples in figures["examples"].items():
        lines += [f"  e.g. {outcome}: {example}" for example in examples]
    lines.append("verdict: " + ("PASS" if passed(figures) else "FAIL"))
    return "\n".join(lines)


async def serve_child(keep_alive_s: int | None, max_waiters: int, bounds: dict[str, float]) -> None:
    """The server side: fakes behind the real app, index and jobs in the working directory."""
    from gpuguard import GpuGuard
    from gpuguard.embed import BulkEmbedder
    from gpuguard.gateway import ModelGateway
    from gpuguard.index import VectorStore
    from gpuguard.jobs import JobManager
    from gpuguard.server import create_app, running_server
    from gpuguard.server._jobs import IndexingJobs
    from gpuguard.server._runtime import store_retriever
    from gpuguard.settings import LlmSettings, ServerSettings, Settings
    from gpuguard.testing import FakeBackend, HashEmbedder

    logging.getLogger("gpuguard").setLevel(logging.ERROR)  # busy refusals are counted, not logged
    backend = FakeBackend([MODEL, OTHER], load_delay_s=0.02)
    gateway = ModelGateway(
        backend,
        model=MODEL,
        guard=GpuGuard(max_waiters=max_waiters, wait_timeout=30),
        gpu_embedder=HashEmbedder(device="cuda"),
        cpu_embedder=HashEmbedder(),
    )
    with VectorStore(Path("index.db")) as store:
        assert gateway.embedders is not None
        bulk = BulkEmbedder(gateway.embedders, gateway.guard, batch_size=16)
        manager = JobManager(events=gateway.events)
        jobs = IndexingJobs(
            manager, store=store, bulk=bulk, events=gateway.events, rewarm=gateway.rewarm
        )
        retriever = store_retriever(gateway, store, 3)
        app = create_app(
            Settings(llm=LlmSettings(backend="fake"), server=ServerSettings.model_validate(bounds)),
            gateway=gateway,
            retriever=retriever,
            jobs=jobs,
        )
        options: dict[str, Any] = {} if keep_alive_s is None else {"keep_alive_s": keep_alive_s}
        async with gateway, running_server(app, **options) as url:
            print(url, app.state.access.token, flush=True)
            await asyncio.to_thread(sys.stdin.buffer.read)  # until the parent closes it
            await manager.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--ci", action="store_true", help="the small size CI runs")
    parser.add_argument("--server-keep-alive", type=int, default=None, metavar="S")
    parser.add_argument("--max-waiters", type=int, default=64)
    parser.add_argument("--seed", type=int, default=int(os.environ.get("LOAD_SEED", "1")))
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    parser.add_argument("--attacks", action="store_true", help="slowloris, idle SSE, stalls")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--server-bounds", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        bounds = json.loads(args.server_bounds)
        asyncio.run(serve_child(args.server_keep_alive, args.max_waiters, bounds))
        return
    if args.attacks:
        attacked = asyncio.run(attacks(load_attacks.CI if args.ci else load_attacks.BENCH))
        print(load_attacks.attacks_report(attacked))
        if args.json:
            print(json.dumps(attacked))
        sys.exit(0 if load_attacks.attacks_passed(attacked) else 1)
    size = CI if args.ci else BENCH
    figures = asyncio.run(
        run(size, keep_alive_s=args.server_keep_alive, max_waiters=args.max_waiters, seed=args.seed)
    )
    print(report(figures))
    if args.json:
        print(json.dumps(figures))
    sys.exit(0 if passed(figures) else 1)


if __name__ == "__main__":
    main()
