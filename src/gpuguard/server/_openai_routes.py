"""The OpenAI-compatible API: chat and text completions (streamed or not), embeddings, models."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncGenerator, Callable
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.responses import StreamingResponse

from .._exceptions import GpuGuardError, ModelNotFound, UnsupportedParameter
from ..gateway import GpuWaiting, ModelGateway, ModelInfo
from ..llm import ChatChunk, ChatMessage, ChatOptions
from ._access import Access
from ._catalog import (
    CHAT,
    EMBEDDINGS,
    embedder_aliases,
    embedders_of,
    refuse_chat_with_embedder,
)
from ._context import ServerContext, get_context
from ._dimensions import shorten
from ._errors import error_body, error_responses, kind_of
from ._openai_payloads import Answer, chunk_payload, new_id, text_chunk_payload
from ._openai_schemas import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from ._retrieval import with_passages
from ._streaming import ChatStream, ClosingStreamingResponse, first_item, items

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["openai"])

Context = Annotated[ServerContext, Depends(get_context)]
Payload = Callable[[ChatChunk], dict[str, Any]]

_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "No model by that name or alias"}
}


@router.get("/models")
async def list_models(context: Context) -> dict[str, Any]:
    """The chat models and the embedding models.

    Each entry's extra ``gpuguard`` field says what the model can do (``capabilities``:
    ``chat`` or ``embeddings``), whether it is loaded, and its aliases.
    """
    return {"object": "list", "data": await _model_entries(context)}


@router.get("/models/{model_id:path}", responses=_NOT_FOUND)
async def get_model(model_id: str, context: Context) -> dict[str, Any]:
    """One model, by its name or an alias."""
    gateway = context.gateway
    embedder = embedder_aliases(gateway.gpu_embedder, gateway.cpu_embedder).get(model_id)
    wanted = embedder or context.models.public_name(context.models.backend_id(model_id))
    for entry in await _model_entries(context):
        if entry["id"] == wanted:
            return entry
    raise ModelNotFound(f"no model named {model_id!r}", backend="gpuguard", model=model_id)


@router.post(
    "/chat/completions", response_model=None, responses={**_NOT_FOUND, **error_responses(401)}
)
async def chat_completions(
    body: ChatCompletionRequest, context: Context, request: Request
) -> JSONResponse | StreamingResponse:
    """Answer a chat, holding the GPU for the whole answer.

    Errors found before the first token (unknown model, unsupported parameter, a prompt
    longer than the context, full queue) get their own status code; once a stream has
    started, an error goes out as a final ``{"error": ...}`` frame. ``"retrieval": true``
    reads the index, so it needs the server's token even where chat is open.
    """
    body.refuse_unknown()
    if body.retrieval:
        access: Access = request.app.state.access
        access.require(request, '"retrieval": true')
    gateway = context.gateway
    refuse_chat_with_embedder(body.model, gateway, context.models)
    model = context.models.backend_id(body.model)
    messages = body.chat_messages()
    if body.retrieval:
        messages = await with_passages(
            messages,
            body.last_user_text(),
            retriever=context.retriever,
            backend=context.gateway.backend,
            model=model,
            context_length=_context_length(context, body.model, model),
            max_tokens=body.token_limit,
        )
    stream, first = await _start(context.gateway, messages, model, body.options())
    completion_id = new_id()
    if body.stream:

        def payload(chunk: ChatChunk) -> dict[str, Any]:
            delta: dict[str, Any] = {"content": chunk.content} if chunk.content else {}
            if chunk.tool_calls:
                delta["tool_calls"] = [dict(call) for call in chunk.tool_calls]
            return chunk_payload(
                completion_id,
                body.model,
                delta=delta,
                finish_reason=chunk.finish_reason,
                logprobs=chunk.logprobs,
            )

        opening = chunk_payload(completion_id, body.model, delta={"role": "assistant"})
        return _stream(_sse_frames(completion_id, body, first, stream, payload, opening))
    answer = await _collect(first, stream)
    return JSONResponse(answer.chat_payload(completion_id, body.model, with_logprobs=body.logprobs))


@router.post("/completions", response_model=None, responses=_NOT_FOUND)
async def completions(
    body: CompletionRequest, context: Context
) -> JSONResponse | StreamingResponse:
    """The legacy text completion: the prompt is sent as one user turn of a chat."""
    body.refuse_unknown()
    gateway = context.gateway
    refuse_chat_with_embedder(body.model, gateway, context.models)
    model = context.models.backend_id(body.model)
    messages = [ChatMessage("user", body.text)]
    stream, first = await _start(context.gateway, messages, model, body.options())
    completion_id = new_id("cmpl")
    if body.stream:

        def payload(chunk: ChatChunk) -> dict[str, Any]:
            return text_chunk_payload(completion_id, body.model, chunk.content, chunk.finish_reason)

        return _stream(_sse_frames(completion_id, body, first, stream, payload, None))
    answer = await _collect(first, stream)
    return JSONResponse(answer.text_payload(completion_id, body.model))


@router.post("/embeddings", responses=_NOT_FOUND)
async def embeddings(body: EmbeddingRequest, context: Context) -> dict[str, Any]:
    """Embed the inputs with the configured embedder, scheduled by the request's size.

    Token arrays are decoded to their texts first, as ``[embeddings] token_arrays`` says
    (``cl100k_base`` ids by default, OpenAI's meaning).
    ``dimensions`` keeps the first N values of each vector and renormalises them (as
    OpenAI's shortened embeddings do); more dimensions than the model has is a 400.
    """
    gateway = context.gateway
    known = set(embedder_aliases(gateway.gpu_embedder, gateway.cpu_embedder))
    if body.model not in known:
        raise ModelNotFound(
            f"unknown embedding model {body.model!r}; this server has {sorted(known)}",
            backend="gpuguard",
            model=body.model,
        )
    texts = body.texts
    if texts is None:
        ids = body.token_ids
        texts = await gateway.decode_tokens(ids)
        tokens = sum(len(array) for array in ids)
    else:
        tokens = sum(len(text.split()) for text in texts)
    vectors = shorten((await gateway.embed_request(texts)).vectors, body.dimensions)
    data = [
        {"object": "embedding", "index": i, "embedding": _encode(row, body.encoding_format)}
        for i, row in enumerate(vectors)
    ]
    return {
        "object": "list",
        "data": data,
        "model": body.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


async def _model_entries(context: ServerContext) -> list[dict[str, Any]]:
    infos: dict[str, ModelInfo] = {}
    for info in await context.gateway.models():
        infos.setdefault(context.models.public_name(info.id), info)
    owner = context.gateway.backend.kind
    entries = []
    for name in context.models.public_names(info.id for info in infos.values()):
        found = infos.get(name)
        configured = context.models.entry(name)
        flags: dict[str, Any] = {
            "capabilities": [CHAT],
            "loaded": bool(found and found.loaded),
            "current": bool(found and found.current),
            "vram_bytes": found.vram_bytes if found else None,
        }
        if configured is not None:
            flags["aliases"] = list(configured.aliases)
            flags["context_size"] = configured.context_size
        entries.append(
            {"id": name, "object": "model", "created": 0, "owned_by": owner, "gpuguard": flags}
        )
    return entries + _embedder_entries(context.gateway, {str(entry["id"]) for entry in entries})


def _embedder_entries(gateway: ModelGateway, listed: set[str]) -> list[dict[str, Any]]:
    """The embedding models not listed already, each with every name it answers to."""
    aliases = embedder_aliases(gateway.gpu_embedder, gateway.cpu_embedder)
    entries = []
    for embedder, loaded in embedders_of(gateway):
        if embedder.name in listed:
            continue
        others = [alias for alias, full in aliases.items() if full == embedder.name != alias]
        flags = {"capabilities": [EMBEDDINGS], "loaded": loaded, "aliases": others}
        entry = {"id": embedder.name, "object": "model", "created": 0, "owned_by": "gpuguard"}
        entries.append({**entry, "gpuguard": flags})
    return entries


def _context_length(context: ServerContext, name: str, model: str) -> int | None:
    entry = context.models.entry(name)
    if entry is not None and entry.context_size is not None:
        return entry.context_size
    return context.gateway.backend.context_length(model)


async def _start(
    gateway: ModelGateway, messages: list[ChatMessage], model: str, options: ChatOptions
) -> tuple[ChatStream, ChatChunk | GpuWaiting | None]:
    """Start a chat and run it to its first item, so that early errors get a status code."""
    if options.n > 1:
        raise UnsupportedParameter("n", "> 1 is not supported: ask for one answer per request")
    stream = gateway.chat(messages, model=model, options=options)
    return stream, await first_item(stream)


def _stream(frames: AsyncGenerator[str, None]) -> StreamingResponse:
    return ClosingStreamingResponse(frames, media_type="text/event-stream")


async def _sse_frames(
    completion_id: str,
    body: ChatCompletionRequest | CompletionRequest,
    first: ChatChunk | GpuWaiting | None,
    stream: ChatStream,
    payload: Payload,
    opening: dict[str, Any] | None,
) -> AsyncGenerator[str, None]:
    answer = Answer()
    try:
        if opening is not None:
            yield _frame(opening)
        async for item in items(first, stream):
            if isinstance(item, GpuWaiting):
                yield _frame(_waiting(completion_id, body.model, item))
                continue
            answer.add(item)
            if item.finish_reason is not None:
                item = ChatChunk(
                    content=item.content,
                    finish_reason=answer.finish,
                    tool_calls=item.tool_calls,
                    logprobs=item.logprobs,
                )
            if item.content or item.tool_calls or item.logprobs or item.finish_reason:
                yield _frame(payload(item))
        if body.stream_options is not None and body.stream_options.include_usage:
            usage = payload(ChatChunk(content=""))
            usage["choices"] = []
            usage["usage"] = answer.usage()
            yield _frame(usage)
    except GpuGuardError as exc:
        yield _frame(error_body(kind_of(exc), str(exc), context=None))
    finally:
        await stream.aclose()
    yield "data: [DONE]\n\n"


def _waiting(completion_id: str, model: str, item: GpuWaiting) -> dict[str, Any]:
    notice = {
        "status": item.status,
        "message": item.message,
        "holder": item.holder,
        "queue_length": item.queue_length,
    }
    return chunk_payload(completion_id, model, delta={"content": ""}, extra={"gpuguard": notice})


async def _collect(first: ChatChunk | GpuWaiting | None, stream: ChatStream) -> Answer:
    answer = Answer()
    try:
        async for item in items(first, stream):
            if isinstance(item, ChatChunk):
                answer.add(item)
    finally:
        await stream.aclose()
    return answer


def _frame(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


def _encode(row: NDArray[np.float32], encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(row.astype("<f4").tobytes()).decode("ascii")
    values: list[float] = row.tolist()
    return values
