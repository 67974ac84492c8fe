"""Ollama through its native API (``/api/...``).

Quirks handled: load is ``POST /api/generate`` without a prompt; unload is the same with
``keep_alive: 0`` and is asynchronous, so :meth:`OllamaBackend.unload` polls ``/api/ps``
until the model is gone; every request carries ``keep_alive`` (otherwise a chat would reset
it to Ollama's 5-minute default and the model would vanish behind the gateway's back);
chat errors can arrive as an NDJSON line under status 200; 503 "server busy" is
:class:`~gpuguard.BackendBusy`; ``llama3.2`` and ``llama3.2:latest`` name the same model.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import aclosing
from typing import Any

import httpx

from .._exceptions import BackendProtocolError, ModelLoadFailed
from ._http import HttpClient, iter_ndjson, poll_until
from ._protocol import BackendHealth, ChatChunk, ChatMessage, LoadedModel
from ._timeouts import Timeouts

__all__ = ["DEFAULT_OLLAMA_URL", "OllamaBackend"]

DEFAULT_OLLAMA_URL = "http://127.0.0.1:11434"


def _canonical(model: str) -> str:
    """``llama3.2`` -> ``llama3.2:latest``, as Ollama names models in ``/api/ps``."""
    return model if ":" in model.rsplit("/", 1)[-1] else f"{model}:latest"


class OllamaBackend:
    """An Ollama server.

    ``keep_alive`` (seconds, or a duration such as ``"30m"``; ``-1`` keeps the model
    loaded until :meth:`unload`) is sent with every request.
    """

    kind = "ollama"

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

    def _protocol_error(self, what: str, model: str | None) -> BackendProtocolError:
        return BackendProtocolError(
            f"ollama: {what}", backend=self.kind, model=model, url=self._http.base_url
        )

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
            raise self._protocol_error(
                f"unexpected /api/tags answer {answer!r:.200}", None
            ) from exc

    async def _running(self) -> list[Mapping[str, Any]]:
        answer = await self._http.json(
            "GET", "/api/ps", operation="loaded", timeout=self._timeouts.request_s
        )
        models = answer.get("models") if isinstance(answer, Mapping) else None
        if not isinstance(models, list):
            raise self._protocol_error(f"unexpected /api/ps answer {answer!r:.200}", None)
        return models

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
            raise ModelLoadFailed(
                f"ollama: {operation} of {model!r} answered {answer!r:.200}",
                backend=self.kind,
                model=model,
                url=self._http.base_url,
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
        await poll_until(
            gone,
            timeout=timeout,
            interval=self._timeouts.poll_interval_s,
            on_timeout=lambda: ModelLoadFailed(
                f"ollama: {model!r} was still in /api/ps {timeout}s after unloading it",
                backend=self.kind,
                model=model,
                url=self._http.base_url,
            ),
        )

    def _chunk(self, event: Any, model: str) -> ChatChunk:
        if not isinstance(event, Mapping):
            raise self._protocol_error(f"chat stream sent {event!r:.200}", model)
        message = event.get("message") or {}
        done = bool(event.get("done"))
        usage = None
        if done and "eval_count" in event:
            usage = {
                "prompt_tokens": int(event.get("prompt_eval_count", 0)),
                "completion_tokens": int(event["eval_count"]),
            }
        return ChatChunk(
            content=str(message.get("content") or ""),
            finish_reason=str(event.get("done_reason") or "stop") if done else None,
            model=event.get("model"),
            usage=usage,
        )

    async def chat(
        self,
        model: str,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> AsyncGenerator[ChatChunk, None]:
        """Stream ``POST /api/chat`` (NDJSON); closing the iterator stops generation."""
        options: dict[str, Any] = {}
        if max_tokens is not None:
            options["num_predict"] = max_tokens
        if temperature is not None:
            options["temperature"] = temperature
        body = {
            "model": model,
            "messages": [m.to_dict() for m in messages],
            "stream": True,
            "keep_alive": self._keep_alive,
            "options": options,
        }
        lines = self._http.stream_lines("/api/chat", operation="chat", model=model, json_body=body)
        async with aclosing(lines), aclosing(iter_ndjson(lines)) as events:
            async for line in events:
                event = self._http.decode_event(line, operation="chat", model=model)
                yield self._chunk(event, model)

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
            raise self._protocol_error(
                f"unexpected /api/embed answer {answer!r:.200}", model
            ) from exc
        if len(vectors) != len(texts):
            raise self._protocol_error(f"{len(vectors)} embeddings for {len(texts)} texts", model)
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

    async def manage_stream(
        self, path: str, body: Mapping[str, Any], *, operation: str, model: str
    ) -> AsyncGenerator[Mapping[str, Any], None]:
        """POST a streaming model-management request and yield its progress objects.

        For ``/api/pull`` and ``/api/create``; an ``{"error": ...}`` line raises.
        """
        lines = self._http.stream_lines(
            path, operation=operation, model=model, json_body={**body, "stream": True}
        )
        async with aclosing(lines), aclosing(iter_ndjson(lines)) as events:
            async for line in events:
                event = self._http.decode_event(line, operation=operation, model=model)
                if not isinstance(event, Mapping):
                    raise self._protocol_error(f"{operation} sent {event!r:.200}", model)
                yield event

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    def __repr__(self) -> str:
        return f"OllamaBackend(base_url={self.base_url!r}, keep_alive={self._keep_alive!r})"
