"""How a streamed answer's lines are cut into events: SSE ``data`` frames, NDJSON lines.

A :data:`Framing` takes the lines of a response and yields the text of each JSON event;
:meth:`~gpuguard.llm._http.HttpClient.stream_events` decodes them.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable

__all__ = ["Framing", "iter_ndjson", "iter_sse_data"]

#: Lines in, the text of each event out.
Framing = Callable[[AsyncIterator[str]], AsyncGenerator[str, None]]


async def iter_sse_data(lines: AsyncIterator[str]) -> AsyncGenerator[str, None]:
    """Yield the ``data`` payload of each server-sent event, stopping at ``[DONE]``.

    Multi-line data fields are joined with newlines, as the SSE standard says; comments
    (``:``) and other fields (``event``, ``id``, ``retry``) are skipped.
    """
    data: list[str] = []
    async for raw in lines:
        line = raw.rstrip("\r")
        if line == "":
            if data:
                payload = "\n".join(data)
                data.clear()
                if payload.strip() == "[DONE]":
                    return
                yield payload
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        if field == "data":
            data.append(value[1:] if value.startswith(" ") else value)
    if data and "\n".join(data).strip() != "[DONE]":
        yield "\n".join(data)


async def iter_ndjson(lines: AsyncIterator[str]) -> AsyncGenerator[str, None]:
    """Yield each non-blank line of an NDJSON stream."""
    async for line in lines:
        if line.strip():
            yield line
