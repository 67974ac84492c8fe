"""What the streaming routes of both APIs share.

A response that always closes its generator, and running a gateway chat to its first item
before any status line goes out.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from ..gateway import GpuWaiting
from ..llm import ChatChunk

__all__ = ["ChatStream", "ClosingStreamingResponse", "first_item", "items"]

ChatStream = AsyncGenerator[ChatChunk | GpuWaiting, None]


class ClosingStreamingResponse(StreamingResponse):
    """Closes its generator however the response ends, so a departed client frees the GPU."""

    def __init__(self, content: AsyncGenerator[str, None], *, media_type: str) -> None:
        super().__init__(content, media_type=media_type, headers={"Cache-Control": "no-cache"})
        self._generator = content

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Stream, then close the generator (a no-op when it ran to its end)."""
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._generator.aclose()


async def first_item(stream: ChatStream) -> ChatChunk | GpuWaiting | None:
    """Run the stream to its first item, so that early errors get a proper status code."""
    try:
        return await anext(stream)
    except StopAsyncIteration:
        return None
    except BaseException:
        await stream.aclose()
        raise


async def items(first: ChatChunk | GpuWaiting | None, stream: ChatStream) -> ChatStream:
    """The first item (already taken by :func:`first_item`), then the rest of the stream."""
    if first is None:
        return
    yield first
    async for item in stream:
        yield item
