"""A PostgreSQL server double on a loopback port that asks for a cleartext password.

It speaks just enough of the protocol (version 3) to take a password: it refuses SSL and
GSS encryption, reads the startup message, asks ``AuthenticationCleartextPassword`` and
records whatever password arrives, then fails the login. A client with no password to give
closes the connection instead: ``passwords`` stays empty.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field

_SSL_REQUEST = 80877103
_GSSENC_REQUEST = 80877104
_AUTH_CLEARTEXT = b"R" + (8).to_bytes(4, "big") + (3).to_bytes(4, "big")


@dataclass
class FakePostgres:
    """Where it listens, what logged in (startup parameters) and which passwords came."""

    port: int
    startups: list[dict[str, str]] = field(default_factory=list)
    passwords: list[str] = field(default_factory=list)
    asked: asyncio.Event = field(default_factory=asyncio.Event)


async def _read_startup(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    """The startup message's body, after answering 'N' to every encryption request."""
    while True:
        length = int.from_bytes(await reader.readexactly(4), "big")
        body = await reader.readexactly(length - 4)
        if int.from_bytes(body[:4], "big") in (_SSL_REQUEST, _GSSENC_REQUEST):
            writer.write(b"N")
            await writer.drain()
            continue
        return body


def _parameters(body: bytes) -> dict[str, str]:
    words = body[4:].split(b"\x00")
    return {
        words[i].decode(): words[i + 1].decode() for i in range(0, len(words) - 1, 2) if words[i]
    }


@asynccontextmanager
async def fake_postgres() -> AsyncIterator[FakePostgres]:
    """Run the double on 127.0.0.1 (a free port) for the block."""
    state: FakePostgres | None = None

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert state is not None
        with suppress(asyncio.IncompleteReadError, ConnectionError):
            state.startups.append(_parameters(await _read_startup(reader, writer)))
            writer.write(_AUTH_CLEARTEXT)
            await writer.drain()
            state.asked.set()
            kind = await reader.readexactly(1)
            length = int.from_bytes(await reader.readexactly(4), "big")
            payload = await reader.readexactly(length - 4)
            if kind == b"p":
                state.passwords.append(payload.rstrip(b"\x00").decode())
            error = b"SFATAL\x00C28P01\x00Mpassword authentication failed\x00\x00"
            writer.write(b"E" + (len(error) + 4).to_bytes(4, "big") + error)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    state = FakePostgres(server.sockets[0].getsockname()[1])
    try:
        yield state
    finally:
        server.close()
        await server.wait_closed()
