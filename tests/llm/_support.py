"""Helpers shared by the backend tests."""

from __future__ import annotations

import socket
from collections.abc import AsyncGenerator

from gpuguard.llm import ChatChunk, ChatMessage

HELLO = [ChatMessage("system", "be brief"), ChatMessage("user", "hello there")]


async def collect(stream: AsyncGenerator[ChatChunk, None]) -> list[ChatChunk]:
    return [chunk async for chunk in stream]


def text(chunks: list[ChatChunk]) -> str:
    return "".join(chunk.content for chunk in chunks)


def closed_port_url() -> str:
    """The URL of a local port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
