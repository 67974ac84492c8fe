"""What the worker-process boundary costs: the same engines in a thread and in a worker.

Prints one table measured side by side in one run (rounds interleaved, best of rounds):

1. embedding throughput: all-MiniLM-L6-v2 (sentence-transformers) on this machine's CPU,
   ``--texts`` short texts in batches of 32, in-thread (:class:`SentenceTransformerEmbedder`)
   against the worker process (:class:`ProcessEmbedder`); target: the worker keeps >= 95%.
2. chat time to first token and tokens/s: llama.cpp on the generated tiny GGUF, in a thread
   (``Llama`` driven the way the in-thread backend did: a producer thread handing chunks to
   the loop) against the :class:`LlamaCppBackend` worker process; target: within 5%.
   Every streamed item after the opening role-only one is a token (the random model's
   tokens are mostly pieces of UTF-8 characters, so few carry visible text).

Also prints the round trip of an empty call to the worker (the boundary's fixed cost).

Usage: ``python bench/worker_boundary.py [--texts 2048] [--rounds 5] [--tokens 200]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from gpuguard.embed import Embedder, ProcessEmbedder, SentenceTransformerEmbedder
from gpuguard.llm import ChatMessage, LlamaCppBackend, write_tiny_gguf
from gpuguard.llm._llama_host import LlamaHost
from gpuguard.llm.llama_cpp_embedded import _to_chunk

BATCH = 32
ROUND_TRIPS = 200
TINY_CTX = 512
PROMPT = [ChatMessage("user", "Tell me a long story about a lighthouse keeper.")]
_END = object()


def texts(count: int) -> list[str]:
    return [f"Order {i} was shipped to customer {i % 97} in region {i % 7}." for i in range(count)]


async def embed_rate(embedder: Embedder, corpus: list[str]) -> float:
    """Texts per second, one batch of 32 at a time (as bulk embedding sends them)."""
    started = time.perf_counter()
    for start in range(0, len(corpus), BATCH):
        await embedder.embed(corpus[start : start + BATCH])
    return len(corpus) / (time.perf_counter() - started)


async def thread_chat(host: LlamaHost, options: dict[str, Any]) -> tuple[float, float, int]:
    """TTFT (s), tokens/s and token count with a producer thread feeding the loop."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()

    def produce() -> None:
        for item in host.chat(options):
            loop.call_soon_threadsafe(queue.put_nowait, item)
        loop.call_soon_threadsafe(queue.put_nowait, _END)

    started = time.perf_counter()
    worker = threading.Thread(target=produce)
    worker.start()
    stamps = []
    while (item := await queue.get()) is not _END:
        _to_chunk(item)
        stamps.append(time.perf_counter())
    worker.join()
    return timings(started, stamps)


async def worker_chat(
    backend: LlamaCppBackend, options: dict[str, Any]
) -> tuple[float, float, int]:
    """The same through the backend's worker process (its ``chat`` minus option mapping)."""
    started = time.perf_counter()
    stamps = []
    async for item in backend.worker.stream("chat", options):
        _to_chunk(item)
        stamps.append(time.perf_counter())
    return timings(started, stamps)


def timings(started: float, stamps: list[float]) -> tuple[float, float, int]:
    """Time to first token, and end-to-end tokens/s (bursts cannot inflate it)."""
    tokens = stamps[1:]  # the first item is the role-only opening delta
    return tokens[0] - started, len(tokens) / (tokens[-1] - started), len(tokens)


async def interleaved(
    rounds: int, first: Callable[[], Awaitable[Any]], second: Callable[[], Awaitable[Any]]
) -> tuple[list[Any], list[Any]]:
    a, b = [], []
    for _ in range(rounds):
        a.append(await first())
        b.append(await second())
    return a, b


async def main(args: argparse.Namespace) -> None:
    corpus = texts(args.texts)
    in_thread = SentenceTransformerEmbedder(device="cpu")
    in_worker = ProcessEmbedder("sentence-transformers", name=in_thread.name, device="cpu")
    await in_thread.load()
    await in_worker.load()
    await embed_rate(in_thread, corpus[:256])  # warm both up
    await embed_rate(in_worker, corpus[:256])
    thread_rates, worker_rates = await interleaved(
        args.rounds, lambda: embed_rate(in_thread, corpus), lambda: embed_rate(in_worker, corpus)
    )
    started = time.perf_counter()
    for _ in range(ROUND_TRIPS):
        await in_worker.worker.call("dimension")
    round_trip_ms = (time.perf_counter() - started) / ROUND_TRIPS * 1000
    await in_worker.aclose()
    await in_thread.aclose()

    with tempfile.TemporaryDirectory() as folder:
        gguf = write_tiny_gguf(Path(folder) / "tiny.gguf")
        host = LlamaHost(str(gguf), 0, TINY_CTX, False)
        backend = LlamaCppBackend(gguf, n_gpu_layers=0, n_ctx=TINY_CTX)
        await backend.load("tiny")
        options = {
            "messages": [m.to_dict() for m in PROMPT],
            "stream": True,
            "max_tokens": args.tokens,
            "temperature": 0.0,
        }
        await thread_chat(host, options)
        await worker_chat(backend, options)
        thread_runs, worker_runs = await interleaved(
            args.rounds * 2,
            lambda: thread_chat(host, options),
            lambda: worker_chat(backend, options),
        )
        await backend.aclose()
        host.close()

    # Best of the interleaved rounds: on a shared machine, other load only ever slows a round.
    rows = [
        ("embedding throughput (texts/s)", max(thread_rates), max(worker_rates), ">= 0.95"),
        (
            "chat time to first token (ms)",
            min(run[0] for run in thread_runs) * 1000,
            min(run[0] for run in worker_runs) * 1000,
            "<= 1.05",
        ),
        (
            "chat tokens/s (end to end)",
            max(run[1] for run in thread_runs),
            max(run[1] for run in worker_runs),
            ">= 0.95",
        ),
        (
            "  same, median of rounds",
            statistics.median(run[1] for run in thread_runs),
            statistics.median(run[1] for run in worker_runs),
            "",
        ),
    ]
    tokens = {run[2] for run in thread_runs + worker_runs}
    print(
        f"machine: {platform.node()} ({platform.machine()}, {os.cpu_count()} CPUs), "
        f"Python {platform.python_version()}; {args.texts} texts x {args.rounds} rounds, "
        f"chat {args.rounds * 2} rounds of {sorted(tokens)} tokens (tiny GGUF, CPU)"
    )
    header = f"{'metric':<32} {'in-thread':>10} {'worker':>10} {'worker/thread':>14}  target"
    print(header)
    print("-" * len(header))
    for name, thread_value, worker_value, target in rows:
        ratio = worker_value / thread_value
        print(f"{name:<32} {thread_value:>10.1f} {worker_value:>10.1f} {ratio:>14.3f}  {target}")
    print(f"round trip of an empty call to the worker: {round_trip_ms:.3f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=200)
    asyncio.run(main(parser.parse_args()))
