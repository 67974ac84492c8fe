"""Databases that stop answering: loopback TCP listeners that accept and then stall."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field


def mysql_greeting() -> bytes:
    """A well-formed MySQL 5.7 handshake (protocol 10, mysql_native_password)."""
    capabilities = 0x0008 | 0x0200 | 0x8000 | 0x80000  # with db, 4.1, secure conn, plugin
    payload = (
        b"\x0a5.7.0-stall\x00"
        + (7).to_bytes(4, "little")
        + b"abcdefgh\x00"
        + (capabilities & 0xFFFF).to_bytes(2, "little")
        + b"\x21"
        + b"\x02\x00"
        + (capabilities >> 16).to_bytes(2, "little")
        + b"\x15"
        + b"\x00" * 10
        + b"ijklmnopqrst\x00"
        + b"mysql_native_password\x00"
    )
    return len(payload).to_bytes(3, "little") + b"\x00" + payload


@dataclass
class Stalling:
    """A listener on 127.0.0.1: ``accepted`` once a client connected, ``closed`` once it left."""

    port: int
    accepted: asyncio.Event = field(default_factory=asyncio.Event)
    closed: asyncio.Event = field(default_factory=asyncio.Event)


@asynccontextmanager
async def stalling_server(greeting: bytes = b"") -> AsyncIterator[Stalling]:
    """Accept, send ``greeting`` (maybe nothing), then never say another word."""
    state: Stalling | None = None
    clients: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert state is not None
        clients.append(writer)
        state.accepted.set()
        if greeting:
            writer.write(greeting)
            await writer.drain()
        try:
            while await reader.read(65536):  # read whatever comes, answer nothing
                pass
        except ConnectionError:
            pass
        state.closed.set()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    state = Stalling(server.sockets[0].getsockname()[1])
    try:
        yield state
    finally:
        server.close()
        for writer in clients:
            writer.close()
        await server.wait_closed()
