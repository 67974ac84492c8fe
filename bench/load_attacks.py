"""Attacks that hold what they do not use, against the server of ``bench/load.py``.

``python bench/load.py --attacks`` (``--ci``: a smaller size). Three rows, one attack each,
against a server in a child process with its documented bounds (the request-head and
stalled-reader bounds shortened to 2 s, so that a run takes a minute):

- **slowloris**: idle sockets and sockets that send half a request head, never the rest;
- **idle SSE subscribers**: ``/events`` streams (with the token) that never read;
- **stalled stream readers**: streamed chats whose client stops reading at once.

Each row prints the connections the server holds (its open descriptors), the chat p99 of a
normal caller before and during the attack, and the server's RSS. Verdict: descriptors within
``max_connections`` (plus the server's own), every normal chat answered, and a stalled
reader's GPU freed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import statistics
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

BOUNDS: dict[str, float] = {"request_head_timeout_s": 2.0, "stalled_reader_s": 2.0}
"""The child server's bounds for this run (the others keep their defaults)."""
MAX_CONNECTIONS = 512  # server.max_connections' default
SERVER_OWN_FDS = 64  # the child's descriptors besides connections (files, pipes, the loop)


@dataclass(frozen=True)
class AttackSize:
    """How hard each attack pushes."""

    sockets: int
    subscribers: int
    stalled: int
    chats: int


BENCH = AttackSize(sockets=1100, subscribers=2000, stalled=4, chats=40)
CI = AttackSize(sockets=300, subscribers=200, stalled=2, chats=12)


async def chat_latencies(http: httpx.AsyncClient, count: int) -> tuple[list[float], int]:
    """``count`` normal streamed chats, four at a time: their latencies, and the failures."""
    latencies: list[float] = []
    failures = 0
    body = {"model": "fake-llm", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    gate = asyncio.Semaphore(4)

    async def one() -> None:
        nonlocal failures
        async with gate:
            started = time.perf_counter()
            try:
                async with http.stream("POST", "/v1/chat/completions", json=body) as answer:
                    text = (await answer.aread()).decode()
                ok = answer.status_code == 200 and text.rstrip().endswith("data: [DONE]")
            except httpx.HTTPError:
                ok = False
            if ok:
                latencies.append(time.perf_counter() - started)
            else:
                failures += 1

    await asyncio.gather(*(one() for _ in range(count)))
    return latencies, failures


def p99_ms(latencies: list[float]) -> float:
    """The 99th percentile in milliseconds (the maximum for short lists)."""
    if not latencies:
        return float("nan")
    ordered = sorted(latencies)
    return 1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def open_fds(pid: int) -> int:
    """The descriptors a process holds (its connections among them)."""
    return len(os.listdir(f"/proc/{pid}/fd"))


async def _connect(url: str, *, rcvbuf: int | None = None) -> asyncio.StreamWriter | None:
    parts = urlsplit(url)
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, (parts.hostname, parts.port))
        _, writer = await asyncio.open_connection(sock=sock, limit=1024)
    except OSError:
        sock.close()
        return None
    return writer


@asynccontextmanager
async def _held(writers: list[asyncio.StreamWriter | None]) -> AsyncIterator[dict[str, Any]]:
    opened = [writer for writer in writers if writer is not None]
    try:
        yield {"opened": len(opened)}
    finally:
        for writer in opened:
            writer.transport.abort()


@asynccontextmanager
async def slowloris(url: str, token: str, size: AttackSize) -> AsyncIterator[dict[str, Any]]:
    """Idle sockets and half-sent heads (every other one)."""
    writers = []
    for number in range(size.sockets):
        writer = await _connect(url)
        if writer is not None and number % 2:
            writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        writers.append(writer)
    async with _held(writers) as info:
        yield info


@asynccontextmanager
async def idle_subscribers(url: str, token: str, size: AttackSize) -> AsyncIterator[dict[str, Any]]:
    """``/events`` streams, with the token, that never read."""
    request = f"GET /events?token={token} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    writers = []
    for _ in range(size.subscribers):
        writer = await _connect(url, rcvbuf=4096)
        if writer is not None:
            writer.write(request)
        writers.append(writer)
    async with _held(writers) as info:
        yield info


@asynccontextmanager
async def stalled_readers(url: str, token: str, size: AttackSize) -> AsyncIterator[dict[str, Any]]:
    """Streamed chats with a long answer whose client reads nothing."""
    words = " ".join(f"w{i}" for i in range(60_000))
    body = json.dumps(
        {"model": "fake-llm", "stream": True, "messages": [{"role": "user", "content": words}]}
    ).encode()
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    writers = []
    for _ in range(size.stalled):
        writer = await _connect(url, rcvbuf=4096)
        if writer is not None:
            writer.write(head + body)
        writers.append(writer)
    async with _held(writers) as info:
        yield info


Attack = Callable[[str, str, AttackSize], AbstractAsyncContextManager[dict[str, Any]]]
ATTACKS: list[tuple[str, Attack]] = [
    ("slowloris", slowloris),
    ("idle SSE subscribers", idle_subscribers),
    ("stalled stream readers", stalled_readers),
]


async def run_attacks(
    url: str, token: str, pid: int, size: AttackSize, rss: Callable[[int], int]
) -> dict[str, Any]:
    """Each attack in turn: the figures before and during it."""
    admin = {"Authorization": f"Bearer {token}"}
    rows = []
    async with httpx.AsyncClient(base_url=url, headers=admin, timeout=120) as http:
        before, failed_before = await chat_latencies(http, size.chats)
        baseline = {"p99_ms": p99_ms(before), "rss_mb": rss(pid) / 2**20, "fds": open_fds(pid)}
        for name, attack in ATTACKS:
            async with attack(url, token, size) as info:
                await asyncio.sleep(0.5)  # the attack is in place
                peak_fds = open_fds(pid)
                during, failed = await chat_latencies(http, size.chats)
                rows.append(
                    {
                        "attack": name,
                        "opened": info["opened"],
                        "server_fds": peak_fds,
                        "chat_p99_ms": p99_ms(during),
                        "chat_median_ms": 1000 * statistics.median(during) if during else None,
                        "chats_failed": failed,
                        "rss_mb": rss(pid) / 2**20,
                    }
                )
            with contextlib.suppress(Exception):
                await chat_latencies(http, 2)  # the server is back to normal
    return {"baseline": baseline, "failed_before": failed_before, "rows": rows}


def attacks_passed(figures: dict[str, Any]) -> bool:
    """Descriptors within the bound, every normal chat answered."""
    return all(
        row["server_fds"] <= MAX_CONNECTIONS + SERVER_OWN_FDS and row["chats_failed"] == 0
        for row in figures["rows"]
    )


def attacks_report(figures: dict[str, Any]) -> str:
    """The rows as a table."""
    base = figures["baseline"]
    lines = [
        f"baseline: chat p99 {base['p99_ms']:.1f} ms, server RSS {base['rss_mb']:.1f} MB, "
        f"{base['fds']} descriptors",
        f"{'attack':<24}{'opened':>8}{'server fds':>12}{'chat p99 ms':>13}{'failed':>8}"
        f"{'RSS MB':>9}",
    ]
    for row in figures["rows"]:
        lines.append(
            f"{row['attack']:<24}{row['opened']:>8}{row['server_fds']:>12}"
            f"{row['chat_p99_ms']:>13.1f}{row['chats_failed']:>8}{row['rss_mb']:>9.1f}"
        )
    lines.append("verdict: " + ("PASS" if attacks_passed(figures) else "FAIL"))
    return "\n".join(lines)
