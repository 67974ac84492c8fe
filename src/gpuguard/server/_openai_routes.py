"""The OpenAI-compatible API: chat completions (streamed or not), embeddings, models."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncGenerator
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from numpy.typing import NDArray
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from .._exceptions import ConfigError, GpuGuardError, ModelNotFound
from ..gateway import GpuWaiting, ModelGateway
from ..llm import ChatChunk, ChatMessage
from ._context import ServerContext, get_context
from ._errors import error_body, kind_of
from ._openai_schemas import (
    ChatCompletionRequest,
    EmbeddingRequest,
    chunk_payload,
    completion_payload,
    new_completion_id,
)

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["openai"])

Context = Annotated[ServerContext, Depends(get_context)]
ChatStream = AsyncGenerator[ChatChunk | GpuWaiting, None]


@router.get("/models")
async def list_models(context: Context) -> dict[str, Any]:
    """The backend's models, with gpuguard's loaded/current flags as an extra field."""
    models = await context.gateway.models()
    return {
        "object": "list",
        "data": [
            {
                "id": m.id,
                "object": "model",
                "created": 0,
                "owned_by": context.gateway.backend.kind,
                "gpuguard": {"loaded": m.loaded, "current": m.current},
            }
            for m in models
        ],
    }


@router.post("/chat/completions", response_model=None)
async def chat_completions(
    body: ChatCompletionRequest, context: Context
) -> JSONResponse | StreamingResponse:
    """Answer a chat, holding the GPU for the whole answer.

    Errors found before the first token (unknown model, full queue) get their own status
    code; once a stream has started, an error goes out as a final ``{"error": ...}`` frame.
    """
    messages = await _with_retrieval(body, context)
    stream = context.gateway.chat(
        messages, model=body.model, max_tokens=body.token_limit, temperature=body.temperature
    )
    first = await _first_item(stream)
    completion_id = new_completion_id()
    if body.stream:
        frames = _sse_frames(completion_id, body, first, stream)
        return _ClosingStreamingResponse(frames, media_type="text/event-stream")
    return JSONResponse(await _collect(completion_id, body.model, first, stream))


@router.post("/embeddings")
async def embeddings(body: EmbeddingRequest, context: Context) -> dict[str, Any]:
    """Embed the inputs with the configured embedder (on the GPU under the lease if any)."""
    gateway = context.gateway
    known = _embedder_names(gateway)
    if body.model not in known:
        raise ModelNotFound(
            f"unknown embedding model {body.model!r}; this server has {sorted(known)}",
            backend="gpuguard",
            model=body.model,
        )
    vectors = await gateway.embed(body.texts)
    data = [
        {"object": "embedding", "index": i, "embedding": _encode(row, body.encoding_format)}
        for i, row in enumerate(vectors)
    ]
    tokens = sum(len(text.split()) for text in body.texts)
    return {
        "object": "list",
        "data": data,
        "model": body.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


class _ClosingStreamingResponse(StreamingResponse):
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


async def _with_retrieval(body: ChatCompletionRequest, context: Context) -> list[ChatMessage]:
    messages = [m.to_message() for m in body.messages]
    if not body.retrieval:
        return messages
    if context.retriever is None:
        raise ConfigError("retrieval was requested but this server has no index configured")
    passages = await context.retriever(body.last_user_text())
    if not passages:
        return messages
    context_text = "\n\n".join(f"[{i}] {p}" for i, p in enumerate(passages, start=1))
    system = ChatMessage(
        "system", f"Answer using this context where it is relevant:\n\n{context_text}"
    )
    return [system, *messages]


async def _first_item(stream: ChatStream) -> ChatChunk | GpuWaiting | None:
    """Run the stream to its first item, so that early errors get a proper status code."""
    try:
        return await anext(stream)
    except StopAsyncIteration:
        return None
    except BaseException:
        await stream.aclose()
        raise


async def _items(first: ChatChunk | GpuWaiting | None, stream: ChatStream) -> ChatStream:
    if first is None:
        return
    yield first
    async for item in stream:
        yield item


async def _sse_frames(
    completion_id: str,
    body: ChatCompletionRequest,
    first: ChatChunk | GpuWaiting | None,
    stream: ChatStream,
) -> AsyncGenerator[str, None]:
    model = body.model
    last: ChatChunk | None = None
    try:
        yield _frame(chunk_payload(completion_id, model, delta={"role": "assistant"}))
        async for item in _items(first, stream):
            if isinstance(item, GpuWaiting):
                notice = {
                    "status": "waiting",
                    "message": item.message,
                    "holder": item.holder,
                    "queue_length": item.queue_length,
                }
                payload = chunk_payload(
                    completion_id, model, delta={"content": ""}, extra={"gpuguard": notice}
                )
            else:
                last = item
                payload = chunk_payload(
                    completion_id,
                    model,
                    delta={"content": item.content} if item.content else {},
                    finish_reason=item.finish_reason,
                )
            yield _frame(payload)
        if body.stream_options is not None and body.stream_options.include_usage:
            yield _frame(_usage_payload(completion_id, model, last))
    except GpuGuardError as exc:
        yield _frame(error_body(kind_of(exc), str(exc), context=None))
    finally:
        await stream.aclose()
    yield "data: [DONE]\n\n"


async def _collect(
    completion_id: str, model: str, first: ChatChunk | GpuWaiting | None, stream: ChatStream
) -> dict[str, Any]:
    parts: list[str] = []
    last: ChatChunk | None = None
    try:
        async for item in _items(first, stream):
            if isinstance(item, ChatChunk):
                parts.append(item.content)
                last = item
    finally:
        await stream.aclose()
    return completion_payload(completion_id, model, "".join(parts), last)


def _usage_payload(completion_id: str, model: str, last: ChatChunk | None) -> dict[str, Any]:
    usage = (last.usage if last is not None else None) or {}
    payload = chunk_payload(completion_id, model, delta={})
    payload["choices"] = []
    payload["usage"] = {
        key: usage.get(key, 0) for key in ("prompt_tokens", "completion_tokens", "total_tokens")
    }
    return payload


def _frame(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


def _embedder_names(gateway: ModelGateway) -> set[str]:
    names = set()
    for embedder in (gateway.gpu_embedder, gateway.cpu_embedder):
        if embedder is not None:
            names.update({embedder.name, embedder.name.rsplit("/", 1)[-1]})
    return names


def _encode(row: NDArray[np.float32], encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(row.astype("<f4").tobytes()).decode("ascii")
    values: list[float] = row.tolist()
    return values
