"""What the streaming routes of both APIs share.

A response that always closes its generator (and ends a stalled reader's stream with an
error frame), and running a gateway chat to its first item before any status line goes out.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncGenerator

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from ..gateway import GpuWaiting
from ..llm import ChatChunk
from ._errors import ErrorKind, error_body
from ._stalls import ReaderStalled

__all__ = ["ChatStream", "ClosingStreamingResponse", "first_item", "items"]

ChatStream = AsyncGenerator[ChatChunk | GpuWaiting, None]


_STALLED = ErrorKind(408, "timeout", "reader_stalled")


class ClosingStreamingResponse(StreamingResponse):
    """Closes its generator however the response ends, so a departed client frees the GPU.

    A reader that takes nothing for ``server.stalled_reader_s`` (:mod:`._stalls`) loses its
    stream: the generator is closed first (the work stops, the GPU is freed), then the stream
    ends with an error frame in the stream's own format.
    """

    def __init__(self, content: AsyncGenerator[str, None], *, media_type: str) -> None:
        super().__init__(content, media_type=media_type, headers={"Cache-Control": "no-cache"})
        self._generator = content

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Stream, then close the generator (a no-op when it ran to its end)."""
        try:
            await super().__call__(scope, receive, send)
        except ReaderStalled as stalled:
            await self._generator.aclose()
            frame = _stall_frame(self.media_type or "", str(stalled))
            with contextlib.suppress(ReaderStalled):
                await send({"type": "http.response.body", "body": frame, "more_body": False})
        finally:
            await self._generator.aclose()


def _stall_frame(media_type: str, message: str) -> bytes:
    """The last frame of a stalled stream: SSE for the OpenAI API, NDJSON for Ollama's."""
    if media_type.startswith("text/event-stream"):
        payload = json.dumps(error_body(_STALLED, message, context=None))
        return f"data: {payload}\n\ndata: [DONE]\n\n".encode()
    return (json.dumps({"error": message}) + "\n").encode()


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
