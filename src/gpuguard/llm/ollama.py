"""Ollama through its native API (``/api/...``).

Quirks handled: load is ``POST /api/generate`` without a prompt; unload is the same with
``keep_alive: 0`` and is asynchronous, so :meth:`OllamaBackend.unload` polls ``/api/ps``
until the model is gone; every request carries ``keep_alive`` (otherwise a chat would reset
it to Ollama's 5-minute default and the model would vanish behind the gateway's back);
chat errors can arrive as an NDJSON line under status 200; 503 "server busy" is
:class:`~gpuguard.BackendBusy`; abort closes the requests in flight, then unloads;
``llama3.2`` and ``llama3.2:latest`` name the same model.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import aclosing
from dataclasses import replace
from typing import Any

import httpx

from .._exceptions import BackendProtocolError, ModelLoadFailed, UnsupportedParameter
from ._framing import iter_ndjson
from ._http import HttpClient
from ._protocol import (
    BackendHealth,
    ChatChunk,
    ChatMessage,
    ChatOptions,
    LoadedModel,
    checked_options,
    complete_usage,
)
from ._timeouts import Timeouts

__all__ = ["DEFAULT_OLLAMA_URL", "OPTION_NAMES", "OllamaBackend", "chat_request"]

DEFAULT_OLLAMA_URL = "http://127.0.0.1:11434"


#: ChatOptions fields that go into Ollama's ``options`` object, under Ollama's names (the
#: server's Ollama routes read ``options`` with the same table, the other way round).
OPTION_NAMES = {
    "max_tokens": "num_predict",
    "temperature": "temperature",
    "top_p": "top_p",
    "seed": "seed",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "top_k": "top_k",
    "min_p": "min_p",
    "typical_p": "typical_p",
    "repeat_penalty": "repeat_penalty",
    "repeat_last_n": "repeat_last_n",
    "mirostat": "mirostat",
    "mirostat_tau": "mirostat_tau",
    "mirostat_eta": "mirostat_eta",
    "n_keep": "num_keep",
}


def _format(response_format: Mapping[str, Any]) -> str | dict[str, Any]:
    """OpenAI's ``response_format`` as Ollama's ``format``: ``"json"`` or a JSON schema."""
    if response_format.get("type") == "json_schema":
        spec = response_format.get("json_schema") or {}
        return dict(spec.get("schema") or {})
    return "json"


def _message(message: ChatMessage) -> dict[str, Any]:
    """A turn in Ollama's shape: tool-call arguments are objects, not JSON strings."""
    wire: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        wire["tool_calls"] = [
            {
                "function": {
                    "name": call["function"]["name"],
                    "arguments": json.loads(call["function"].get("arguments") or "{}"),
                }
            }
            for call in message.tool_calls
        ]
    return wire


def chat_request(
    model: str, messages: Sequence[ChatMessage], options: ChatOptions, keep_alive: int | str
) -> dict[str, Any]:
    """The ``POST /api/chat`` body for ``options`` (already checked against what Ollama takes)."""
    asked = options.to_dict()
    settings = {wire: asked[name] for name, wire in OPTION_NAMES.items() if name in asked}
    if "stop" in asked:
        settings["stop"] = asked["stop"]
    body: dict[str, Any] = {
        "model": model,
        "messages": [_message(m) for m in messages],
        "stream": True,
        "keep_alive": keep_alive,
        "options": settings,
    }
    response_format = asked.get("response_format")
    if response_format is not None and response_format.get("type") != "text":
        body["format"] = _format(response_format)
    if "tools" in asked:
        body["tools"] = asked["tools"]
    return body


def _tool_deltas(calls: Any, first_index: int) -> tuple[dict[str, Any], ...]:
    """Ollama's whole tool calls as OpenAI streaming deltas (one delta per call)."""
    deltas = []
    for offset, call in enumerate(calls if isinstance(calls, list) else []):
        function = call.get("function") or {}
        arguments = function.get("arguments")
        deltas.append(
            {
                "index": first_index + offset,
                "id": f"call_{first_index + offset}",
                "type": "function",
                "function": {
                    "name": str(function.get("name", "")),
                    "arguments": arguments
                    if isinstance(arguments, str)
                    else json.dumps(arguments or {}),
                },
            }
        )
    return tuple(deltas)


def _canonical(model: str) -> str:
    """``llama3.2`` -> ``llama3.2:latest``, as Ollama names models in ``/api/ps``."""
    return model if ":" in model.rsplit("/", 1)[-1] else f"{model}:latest"


class OllamaBackend:
    """An Ollama server.

    ``keep_alive`` (seconds, or a duration such as ``"30m"``; ``-1`` keeps the model
    loaded until :meth:`unload`) is sent with every request.
    """

    kind = "ollama"
    chat_parameters = frozenset({*OPTION_NAMES, "stop", "response_format", "tools", "tool_choice"})
    """Forwarded as ``options``, ``format`` and ``tools``; ``tool_choice`` only as ``auto``."""

    def __init__(
        self,
        base_url: str = DEFAULT_OLLAMA_URL,
        *,
        keep_alive: int | str = -1,
        api_key: str | None = None,
        timeouts: Timeouts | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._timeouts = timeouts if timeouts is not None else Timeouts()
        self._keep_alive = keep_alive
        self._http = HttpClient(
            base_url,
            backend=self.kind,
            timeouts=self._timeouts,
            api_key=api_key,
            transport=transport,
        )

    @property
    def base_url(self) -> str:
        """The server's base URL."""
        return self._http.base_url

    @property
    def supports_embeddings(self) -> bool:
        """Ollama embeds through ``/api/embed``."""
        return True

    async def health(self) -> BackendHealth:
        """``GET /api/version`` with the short health timeout."""
        return await self._http.probe("/api/version")

    async def list_models(self) -> list[str]:
        """The pulled models (``GET /api/tags``)."""
        answer = await self._http.json(
            "GET", "/api/tags", operation="list", timeout=self._timeouts.request_s
        )
        try:
            return [str(entry["name"]) for entry in answer["models"]]
        except (KeyError, TypeError) as exc:
            raise self._http.errors.fault(
                BackendProtocolError, f"unexpected /api/tags answer {answer!r:.200}"
            ) from exc

    async def _running(self) -> list[Mapping[str, Any]]:
        return await self._http.listing("/api/ps", "models", operation="loaded")

    async def loaded_models(self) -> list[LoadedModel]:
        """The models in memory (``GET /api/ps``), with ``size_vram``."""
        return [
            LoadedModel(
                id=str(entry["name"]),
                vram_bytes=entry.get("size_vram"),
                details={"size": entry.get("size"), "expires_at": entry.get("expires_at")},
            )
            for entry in await self._running()
        ]

    async def _is_loaded(self, model: str) -> bool:
        wanted = _canonical(model)
        return any(_canonical(str(entry.get("name"))) == wanted for entry in await self._running())

    async def _generate(
        self, model: str, keep_alive: int | str, operation: str, timeout: float
    ) -> None:
        answer = await self._http.json(
            "POST",
            "/api/generate",
            operation=operation,
            timeout=timeout,
            model=model,
            json_body={"model": model, "keep_alive": keep_alive, "stream": False},
        )
        if not isinstance(answer, Mapping) or not answer.get("done"):
            raise self._http.errors.fault(
                ModelLoadFailed, f"{operation} of {model!r} answered {answer!r:.200}", model=model
            )

    async def load(self, model: str) -> None:
        """``POST /api/generate`` without a prompt: loads and returns when ready."""
        await self._generate(model, self._keep_alive, "load", self._timeouts.load_s)

    async def unload(self, model: str) -> None:
        """``keep_alive: 0``, then wait until ``/api/ps`` no longer lists the model."""
        await self._generate(model, 0, "unload", self._timeouts.request_s)

        async def gone() -> bool:
            return not await self._is_loaded(model)

        timeout = self._timeouts.unload_s
        await self._http.poll_until(
            gone,
            timeout=timeout,
            on_timeout=lambda: self._http.errors.fault(
                ModelLoadFailed,
                f"{model!r} was still in /api/ps {timeout}s after unloading it",
                model=model,
            ),
        )

    async def abort(self, model: str) -> None:
        """Close the requests in flight, then unload ``model``; never raises.

        Ollama stops generating for a client that has gone; the unload (``keep_alive: 0``)
        then waits until ``/api/ps`` drops the model, within ``Timeouts.abort_s``.
        """
        await self._http.cancel_requests()
        await self._http.best_effort(self.unload(model), operation="abort", model=model)

    def _chunk(self, event: Mapping[str, Any], tools_seen: int) -> ChatChunk:
        message = event.get("message") or {}
        done = bool(event.get("done"))
        tool_calls = _tool_deltas(message.get("tool_calls"), tools_seen)
        usage = None
        finish = None
        if done:
            if "eval_count" in event:
                usage = complete_usage(
                    int(event.get("prompt_eval_count", 0)), int(event["eval_count"])
                )
            finish = "tool_calls" if tools_seen else str(event.get("done_reason") or "stop")
        return ChatChunk(
            content=str(message.get("content") or ""),
            finish_reason=finish,
            model=event.get("model"),
            usage=usage,
            tool_calls=tool_calls,
        )

    async def chat(
        self,
        model: str,
        messages: Sequence[ChatMessage],
        options: ChatOptions | None = None,
    ) -> AsyncGenerator[ChatChunk, None]:
        """Stream ``POST /api/chat`` (NDJSON); closing the iterator stops generation."""
        options = checked_options(options, self.chat_parameters, backend=self.kind, model=model)
        if options.tool_choice not in (None, "auto"):
            raise UnsupportedParameter(
                "tool_choice",
                "other than 'auto' is not supported by the ollama backend",
                backend=self.kind,
                model=model,
            )
        body = chat_request(model, messages, options, self._keep_alive)
        events = self._http.stream_events(
            "/api/chat", iter_ndjson, operation="chat", model=model, json_body=body
        )
        tools_seen = 0
        async with aclosing(events):
            async for event in events:
                chunk = self._chunk(event, tools_seen)
                tools_seen += len(chunk.tool_calls)
                if chunk.tool_calls and chunk.finish_reason is not None:
                    chunk = replace(chunk, finish_reason="tool_calls")
                yield chunk

    async def count_tokens(self, model: str, messages: Sequence[ChatMessage]) -> int | None:
        """Ollama has no tokenize route."""
        return None

    def context_length(self, model: str) -> int | None:
        """Set per model in the settings (Ollama's ``num_ctx``)."""
        return None

    async def embeddings(self, model: str, texts: Sequence[str]) -> list[list[float]]:
        """``POST /api/embed``."""
        answer = await self._http.json(
            "POST",
            "/api/embed",
            operation="embeddings",
            timeout=self._timeouts.request_s,
            model=model,
            json_body={"model": model, "input": list(texts), "keep_alive": self._keep_alive},
        )
        try:
            vectors = [[float(x) for x in row] for row in answer["embeddings"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise self._http.errors.fault(
                BackendProtocolError, f"unexpected /api/embed answer {answer!r:.200}", model=model
            ) from exc
        if len(vectors) != len(texts):
            raise self._http.errors.fault(
                BackendProtocolError,
                f"{len(vectors)} embeddings for {len(texts)} texts",
                model=model,
            )
        return vectors

    # --- model management: Ollama's own routes, not part of LlmBackend ------------------
    async def manage(
        self, method: str, path: str, body: Mapping[str, Any], *, operation: str, model: str
    ) -> Any:
        """Send one model-management request and return its JSON answer (or ``None``).

        For ``/api/show``, ``/api/delete`` and ``/api/copy``.
        """
        return await self._http.json(
            method,
            path,
            operation=operation,
            timeout=self._timeouts.request_s,
            model=model,
            json_body=dict(body),
        )

    def manage_stream(
        self, path: str, body: Mapping[str, Any], *, operation: str, model: str
    ) -> AsyncGenerator[Mapping[str, Any], None]:
        """POST a streaming model-management request and yield its progress objects.

        For ``/api/pull`` and ``/api/create``; an ``{"error": ...}`` line raises.
        """
        return self._http.stream_events(
            path, iter_ndjson, operation=operation, model=model, json_body={**body, "stream": True}
        )

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    def __repr__(self) -> str:
        return f"OllamaBackend(base_url={self.base_url!r}, keep_alive={self._keep_alive!r})"
