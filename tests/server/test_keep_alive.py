"""Idle keep-alive connections are closed by the client, never by the server first."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import httpx

from .conftest import Live


async def read_response(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return head + await reader.readexactly(length)


async def test_an_idle_connection_outlives_the_client_pools_keep_alive(live: Live) -> None:
    """httpx (so the openai client) keeps an idle connection 5 s. A server that closes it at
    that same moment races the pool: a request the pool hands that connection is lost
    before its first byte (``ReadError``). The server must wait longer than the pool."""
    expiry = httpx.Limits().keepalive_expiry
    assert expiry is not None
    url = urlsplit(live.url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    request = f"GET /health HTTP/1.1\r\nHost: {url.netloc}\r\n\r\n".encode()
    try:
        writer.write(request)
        assert (await read_response(reader)).startswith(b"HTTP/1.1 200")
        try:
            closed = await asyncio.wait_for(reader.read(1), expiry + 0.5) == b""
        except TimeoutError:
            closed = False
        assert not closed, f"the server closed an idle connection within {expiry} s"
        writer.write(request)  # the pool may still use it
        assert (await read_response(reader)).startswith(b"HTTP/1.1 200")
    finally:
        writer.close()
