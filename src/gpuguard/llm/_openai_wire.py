"""The OpenAI wire format shared by Foundry Local, llama-server, vLLM and LM Studio.

Streamed chat completions (SSE), embeddings, the model list, and the base class.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from typing import Any

import httpx

from .._exceptions import BackendError, BackendProtocolError, BackendUnavailable
from ._framing import iter_sse_data
from ._http import HttpClient
from ._http_errors import Failure
from ._openai_chunks import decode_chunk
from ._protocol import (
    OPENAI_CHAT_PARAMETERS,
    ChatChunk,
    ChatMessage,
    ChatOptions,
    checked_options,
)
from ._timeouts import Timeouts

__all__ = [
    "OpenAIServerBase",
    "chat_body",
    "create_embeddings",
    "list_model_ids",
    "stream_chat",
]


def chat_body(model: str, messages: Sequence[ChatMessage], options: ChatOptions) -> dict[str, Any]:
    """A streaming ``/v1/chat/completions`` request body carrying every asked-for option.

    It asks for the usage chunk at the end (``stream_options.include_usage``).
    """
    return {
        "model": model,
        "messages": [m.to_dict() for m in messages],
        "stream": True,
        "stream_options": {"include_usage": True},
        **options.to_dict(),
    }


async def stream_chat(
    http: HttpClient,
    model: str,
    messages: Sequence[ChatMessage],
    options: ChatOptions,
) -> AsyncGenerator[ChatChunk, None]:
    """Stream ``POST /v1/chat/completions``; an error data frame raises mid-stream.

    Closing this iterator closes the HTTP connection, which stops generation.
    """
    body = chat_body(model, messages, options)
    events = http.stream_events(
        "/v1/chat/completions", iter_sse_data, operation="chat", model=model, json_body=body
    )
    async with aclosing(events):
        async for event in events:
            chunk = decode_chunk(event, usage=event.get("usage"))
            if chunk is not None:
                yield chunk


async def create_embeddings(
    http: HttpClient, model: str, texts: Sequence[str], *, timeout: float
) -> list[list[float]]:
    """``POST /v1/embeddings``, returning the vectors in input order."""
    answer = await http.json(
        "POST",
        "/v1/embeddings",
        operation="embeddings",
        timeout=timeout,
        model=model,
        json_body={"model": model, "input": list(texts)},
    )
    try:
        rows = sorted(answer["data"], key=lambda row: row.get("index", 0))
        vectors = [[float(x) for x in row["embedding"]] for row in rows]
    except (KeyError, TypeError, ValueError) as exc:
        raise http.errors.fault(
            BackendProtocolError, f"unexpected embeddings answer {answer!r:.200}", model=model
        ) from exc
    if len(vectors) != len(texts):
        raise http.errors.fault(
            BackendProtocolError, f"{len(vectors)} embeddings for {len(texts)} texts", model=model
        )
    return vectors


async def list_model_ids(http: HttpClient, path: str = "/v1/models") -> list[str]:
    """The ``id`` of every entry of an OpenAI-style ``{"data": [...]}`` model list."""
    answer = await http.json("GET", path, operation="list", timeout=http.timeouts.request_s)
    try:
        return [str(entry["id"]) for entry in answer["data"]]
    except (KeyError, TypeError) as exc:
        raise http.errors.fault(
            BackendProtocolError, f"unexpected model list {answer!r:.200}"
        ) from exc


class OpenAIServerBase:
    """What every OpenAI-compatible backend shares.

    The HTTP client, streamed chat, embeddings and closing; subclasses add health, the
    model list and load/unload.

    The client is made by :meth:`_connect`; :meth:`_client` returns it (Foundry Local
    overrides it to discover its endpoint first).
    """

    kind = "openai"
    chat_parameters: frozenset[str] = OPENAI_CHAT_PARAMETERS
    """The options forwarded to the server (see :class:`~gpuguard.llm.ChatOptions`)."""

    def __init__(
        self,
        *,
        api_key: str | None,
        timeouts: Timeouts | None,
        transport: httpx.AsyncBaseTransport | None,
    ) -> None:
        self._api_key = api_key
        self._timeouts = timeouts if timeouts is not None else Timeouts()
        self._transport = transport
        self._http: HttpClient | None = None

    def _connect(self, base_url: str) -> HttpClient:
        self._http = HttpClient(
            base_url,
            backend=self.kind,
            timeouts=self._timeouts,
            api_key=self._api_key,
            classify=self._classify,
            transport=self._transport,
        )
        return self._http

    def _classify(self, failure: Failure) -> type[BackendError] | None:
        """Server-specific error rules; ``None`` applies the defaults."""
        return None

    async def _client(self) -> HttpClient:
        if self._http is None:
            raise BackendUnavailable(
                f"{self.kind}: no endpoint configured", backend=self.kind, url=None
            )
        return self._http

    @property
    def base_url(self) -> str | None:
        """The server's base URL (``None`` until discovered)."""
        return self._http.base_url if self._http is not None else None

    @property
    def supports_embeddings(self) -> bool:
        """OpenAI-compatible servers answer ``/v1/embeddings`` (if the model can embed)."""
        return True

    async def chat(
        self,
        model: str,
        messages: Sequence[ChatMessage],
        options: ChatOptions | None = None,
    ) -> AsyncGenerator[ChatChunk, None]:
        """Stream an answer from ``/v1/chat/completions``; closing stops generation."""
        options = checked_options(options, self.chat_parameters, backend=self.kind, model=model)
        chunks = stream_chat(await self._client(), model, messages, options)
        async with aclosing(chunks):
            async for chunk in chunks:
                yield chunk

    async def count_tokens(self, model: str, messages: Sequence[ChatMessage]) -> int | None:
        """A remote server's tokenizer is not reachable through the OpenAI API."""
        return None

    def context_length(self, model: str) -> int | None:
        """Unknown through the OpenAI API (set it per model in the settings)."""
        return None

    async def abort(self, model: str) -> None:
        """Close the requests in flight, then :meth:`_stop_work` within ``Timeouts.abort_s``.

        Never raises; a backend that has not reached its server yet has nothing to stop.
        """
        if self._http is None:
            return
        await self._http.cancel_requests()
        await self._http.best_effort(self._stop_work(model), operation="abort", model=model)

    async def _stop_work(self, model: str) -> None:
        """What the server can do beyond seeing its client leave; a plain server: nothing."""

    async def embeddings(self, model: str, texts: Sequence[str]) -> list[list[float]]:
        """Embed ``texts`` through ``/v1/embeddings``."""
        http = await self._client()
        return await create_embeddings(http, model, texts, timeout=self._timeouts.request_s)

    async def aclose(self) -> None:
        """Close the connection pool."""
        if self._http is not None:
            await self._http.aclose()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r})"
