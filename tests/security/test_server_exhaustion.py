"""Holding the server's connections, event streams and GPU without doing anything.

Real sockets on loopback, bounded in count (a few dozen) and in time: every wait is for
evidence (a socket closed, the lease free) with an upper bound, and no figure is asserted
(speed lives in bench/load.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import httpx

from .conftest import Served, ServeFactory

PATIENCE_S = 20.0
"""The upper bound of every wait for evidence (never a measured figure)."""


@asynccontextmanager
async def raw(
    server: Served, *, rcvbuf: int | None = None
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A bare TCP connection to the server (``rcvbuf``: a small receive window)."""
    parts = urlsplit(server.url)
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (parts.hostname, parts.port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=1024)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def closed_by_server(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sent until it closed the connection (bounded by PATIENCE_S)."""
    received = b""
    async with asyncio.timeout(PATIENCE_S):
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(65536):
                received += chunk
    return received


async def is_closed_soon(reader: asyncio.StreamReader, within_s: float = 0.5) -> bool:
    """Whether the server has closed (or answers and closes) the connection already."""
    try:
        async with asyncio.timeout(within_s):
            with contextlib.suppress(ConnectionError):
                while await reader.read(65536):
                    pass
            return True
    except TimeoutError:
        return False


async def until(condition: Callable[[], bool]) -> None:
    """Wait for ``condition`` (state the server changes as it serves), at most PATIENCE_S.

    The server runs in this event loop, on sockets: it moves only while this waits.
    """
    for _ in range(int(PATIENCE_S / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the server never got there")


HALF_HEAD = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "


# --- 17. slowloris -----------------------------------------------------------------------------


async def test_idle_and_half_sent_sockets_cannot_crowd_out_a_request(serve: ServeFactory) -> None:
    cap = 12
    async with (
        serve(GPUGUARD_SERVER__MAX_CONNECTIONS=str(cap)) as server,
        contextlib.AsyncExitStack() as held,
    ):
        sockets = []
        for number in range(3 * cap):
            reader, writer = await held.enter_async_context(raw(server))
            if number % 2:
                writer.write(HALF_HEAD)  # a head that never ends
                await writer.drain()
            sockets.append(reader)
        # A normal caller still gets its answer: the longest-idle socket made room.
        async with httpx.AsyncClient(base_url=server.url, timeout=PATIENCE_S) as caller:
            assert (await caller.get("/health")).status_code == 200
        still_open = [reader for reader in sockets if not await is_closed_soon(reader, 0.05)]
        assert len(still_open) <= cap


async def test_a_connection_that_never_sends_its_head_is_closed(serve: ServeFactory) -> None:
    async with (
        serve(GPUGUARD_SERVER__REQUEST_HEAD_TIMEOUT_S="0.5") as server,
        raw(server) as (idle, _),
        raw(server) as (half, half_writer),
    ):
        half_writer.write(HALF_HEAD)
        await half_writer.drain()
        assert (await closed_by_server(idle)).startswith(b"HTTP/1.1 408")
        assert (await closed_by_server(half)).startswith(b"HTTP/1.1 408")


async def test_a_head_sent_a_byte_at_a_time_is_closed(serve: ServeFactory) -> None:
    async with (
        serve(GPUGUARD_SERVER__REQUEST_HEAD_TIMEOUT_S="0.5") as server,
        raw(server) as (reader, writer),
    ):
        closed = False
        for byte in HALF_HEAD + b"x" * 1000:  # each byte would restart a per-read timer
            writer.write(bytes([byte]))
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            if await is_closed_soon(reader, 0.05):
                closed = True
                break
        assert closed


async def test_when_every_connection_is_busy_a_new_one_is_told_to_retry(
    serve: ServeFactory,
) -> None:
    cap = 8
    env = {
        "GPUGUARD_SERVER__MAX_CONNECTIONS": str(cap),
        "GPUGUARD_SERVER__MAX_EVENT_SUBSCRIBERS": "100",
        "GPUGUARD_SERVER__MAX_EVENT_SUBSCRIBERS_PER_CLIENT": "100",
    }
    token = ""
    async with serve(**env) as server, contextlib.AsyncExitStack() as held:
        token = server.app.state.access.token
        for _ in range(cap):  # requests in flight: event streams
            reader, writer = await held.enter_async_context(raw(server))
            writer.write(f"GET /events?token={token} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
        reader, _ = await held.enter_async_context(raw(server))
        refused = await closed_by_server(reader)
        assert refused.startswith(b"HTTP/1.1 503")
        assert b"Retry-After: 1" in refused


async def test_a_body_that_stops_coming_is_answered_408(serve: ServeFactory) -> None:
    env = {"GPUGUARD_SERVER__STALLED_READER_S": "0.5"}
    async with serve(**env) as server, raw(server) as (reader, writer):
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"model": '
        )
        await writer.drain()
        answer = await closed_by_server(reader)
        assert answer.startswith(b"HTTP/1.1 408")
        assert b"request body" in answer


# --- 18. event subscribers ----------------------------------------------------------------


async def test_event_streams_are_capped_per_client(serve: ServeFactory) -> None:
    env = {"GPUGUARD_SERVER__MAX_EVENT_SUBSCRIBERS_PER_CLIENT": "2"}
    async with serve(**env) as server, contextlib.AsyncExitStack() as held:
        for _ in range(2):
            stream = await held.enter_async_context(server.http.stream("GET", "/events"))
            assert stream.status_code == 200
        refused = await server.http.get("/events")
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "5"
        assert "too many event streams" in refused.json()["error"]["message"]


async def test_a_closed_event_stream_gives_its_place_back(serve: ServeFactory) -> None:
    env = {"GPUGUARD_SERVER__MAX_EVENT_SUBSCRIBERS": "1"}
    async with serve(**env) as server:
        limit = server.app.state.subscribers
        async with server.http.stream("GET", "/events") as first:
            assert first.status_code == 200
            assert (await server.http.get("/events")).status_code == 503
        await until(lambda: limit.open == 0)
        async with server.http.stream("GET", "/events") as again:
            assert again.status_code == 200


async def test_an_event_subscriber_that_does_not_read_is_dropped(serve: ServeFactory) -> None:
    env = {"GPUGUARD_SERVER__STALLED_READER_S": "0.5"}
    async with serve(**env) as server, raw(server, rcvbuf=4096) as (reader, writer):
        token = server.app.state.access.token
        writer.write(f"GET /events?token={token} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        await reader.readuntil(b"\r\n\r\n")
        limit = server.app.state.subscribers
        gateway = server.app.state.context.gateway
        async with asyncio.timeout(PATIENCE_S):
            while limit.open:  # publish until the stream is full and the subscriber dropped
                await gateway.prewarm()  # each one a few GPU events


# --- 19. a streamed chat whose reader stopped ------------------------------------------------


async def test_a_chat_whose_reader_stops_loses_the_gpu(serve: ServeFactory) -> None:
    env = {"GPUGUARD_SERVER__STALLED_READER_S": "1"}
    async with serve(**env) as server, raw(server, rcvbuf=4096) as (reader, writer):
        words = " ".join(f"w{i}" for i in range(60_000))
        body = json.dumps(
            {"model": "fake-llm", "stream": True, "messages": [{"role": "user", "content": words}]}
        ).encode()
        head = (
            "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        writer.write(head.encode() + body)
        await writer.drain()
        guard = server.app.state.context.gateway.guard
        await until(lambda: guard.current is not None)  # the chat has the GPU...
        await until(lambda: guard.current is None)  # ...and loses it, though nobody reads
        # Another caller's chat is served at once.
        other = {"model": "fake-llm", "messages": [{"role": "user", "content": "hi"}]}
        assert (await server.http.post("/v1/chat/completions", json=other)).status_code == 200
        # The stalled reader, back, finds why its stream ended, and the end of the stream.
        received = b""
        async with asyncio.timeout(PATIENCE_S):
            while b"reader_stalled" not in received or not received.endswith(b"0\r\n\r\n"):
                chunk = await reader.read(65536)
                assert chunk, "the connection closed before the stream's end"
                received = received[-8192:] + chunk
        assert b"data: [DONE]" in received.partition(b"reader_stalled")[2]
