"""The shapes Ollama's API answers with: timestamps, nanosecond durations, NDJSON lines.

``/api/chat`` puts text under ``message.content`` and ``/api/generate`` under
``response``; everything else about their answers is the same, so one :class:`Shape`
names the difference and the rest is shared.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from .._exceptions import BackendProtocolError
from ..gateway import GpuWaiting
from ..llm import ChatChunk
from ._errors import is_ollama_path
from ._openai_payloads import Answer

__all__ = [
    "CHAT",
    "FOREVER",
    "GENERATE",
    "JsonBodies",
    "Shape",
    "Timing",
    "answer_item",
    "created_at",
    "digest",
    "line",
    "ollama_tool_calls",
    "waiting_fields",
]

#: Where Ollama puts ``expires_at`` for a model kept loaded "forever" (now + the largest
#: Go duration, about 292 years).
FOREVER = dt.timedelta(microseconds=(2**63 - 1) // 1000)


def created_at(now: dt.datetime | None = None) -> str:
    """An RFC 3339 UTC timestamp, as Ollama writes ``created_at``."""
    moment = now if now is not None else dt.datetime.now(dt.UTC)
    return moment.isoformat().replace("+00:00", "Z")


def digest(name: str) -> str:
    """A stable stand-in for a model's digest (64 hex digits, like Ollama's sha256)."""
    return hashlib.sha256(name.encode()).hexdigest()


def line(payload: dict[str, Any]) -> str:
    """One NDJSON line: compact JSON (no inner newline), then a newline."""
    return json.dumps(payload, separators=(",", ":")) + "\n"


def waiting_fields(notice: GpuWaiting) -> dict[str, Any]:
    """The "Waiting for GPU..." notice (or its end) as an extra field Ollama clients ignore."""
    return {
        "gpuguard": {
            "status": notice.status,
            "message": notice.message,
            "holder": notice.holder,
            "queue_length": notice.queue_length,
        }
    }


@dataclass(frozen=True, slots=True)
class Shape:
    """Where one route puts generated text."""

    route: str

    def text(self, content: str, tool_calls: list[dict[str, Any]]) -> dict[str, Any]:
        """The text field(s) of one answer object (and a chat's tool calls, if any)."""
        if self.route == "chat":
            message: dict[str, Any] = {"role": "assistant", "content": content}
            if tool_calls:
                message["tool_calls"] = tool_calls
            return {"message": message}
        return {"response": content}

    def payload(
        self,
        model: str,
        content: str,
        *,
        done: bool,
        tool_calls: list[dict[str, Any]] | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """One answer object (a stream line, or the whole non-streamed answer)."""
        return {
            "model": model,
            "created_at": created_at(),
            **self.text(content, tool_calls or []),
            "done": done,
            **extra,
        }


CHAT = Shape("chat")
GENERATE = Shape("generate")


@dataclass(slots=True)
class Timing:
    """Durations of one answer in nanoseconds, and its token counts.

    Waiting for the GPU happens inside the gateway's chat, before the first token: it
    counts in ``prompt_eval_duration``. Loading the model (when the chat had to) counts in
    ``load_duration`` (:meth:`record_load`), and not in ``prompt_eval_duration``.
    """

    started_ns: int = field(default_factory=time.perf_counter_ns)
    first_token_ns: int | None = None
    chunks: int = 0
    last: ChatChunk | None = None
    load_ns: int = 0

    def record_load(self, took_ns: int) -> None:
        """Note a model load this answer waited for."""
        self.load_ns += took_ns

    def record(self, chunk: ChatChunk) -> None:
        """Note one chunk of the answer."""
        if chunk.content:
            if self.first_token_ns is None:
                self.first_token_ns = time.perf_counter_ns()
            self.chunks += 1
        self.last = chunk

    def final_fields(self) -> dict[str, Any]:
        """``done_reason``, the counts and the durations of the final answer object."""
        now = time.perf_counter_ns()
        first = self.first_token_ns if self.first_token_ns is not None else now
        usage = (self.last.usage if self.last is not None else None) or {}
        reason = (self.last.finish_reason if self.last is not None else None) or "stop"
        # Ollama ends an answer that calls tools with "stop", its calls in the message.
        reason = "stop" if reason == "tool_calls" else reason
        return {
            "done_reason": reason,
            "total_duration": now - self.started_ns,
            "load_duration": self.load_ns,
            "prompt_eval_count": int(usage.get("prompt_tokens", 0)),
            "prompt_eval_duration": max(0, first - self.started_ns - self.load_ns),
            "eval_count": int(usage.get("completion_tokens", self.chunks)),
            "eval_duration": now - first,
        }


def answer_item(shape: Shape, model: str, item: ChatChunk | GpuWaiting) -> dict[str, Any] | None:
    """The stream line for one gateway item (``None`` for a chunk with no text)."""
    if isinstance(item, GpuWaiting):
        return shape.payload(model, "", done=False, **waiting_fields(item))
    if not item.content:
        return None
    return shape.payload(model, item.content, done=False)


def ollama_tool_calls(answer: Answer, *, backend: str, model: str) -> list[dict[str, Any]]:
    """The tool calls gathered in ``answer`` in Ollama's shape: ``arguments`` an object.

    Raises :class:`BackendProtocolError` where the backend's arguments are not a JSON object.
    """
    calls = []
    for index in sorted(answer.tool_calls):
        function = answer.tool_calls[index]["function"]
        try:
            arguments = json.loads(function["arguments"] or "{}")
        except json.JSONDecodeError:
            arguments = None
        if not isinstance(arguments, dict):
            raise BackendProtocolError(
                f"the arguments of tool call {function['name']!r} are not a JSON object",
                backend=backend,
                model=model,
            )
        calls.append({"function": {"name": function["name"], "arguments": arguments}})
    return calls


class JsonBodies:
    """Read every ``/api/`` request body as JSON, whatever its ``Content-Type``.

    Ollama does, and its own examples rely on it: ``curl -d '{...}'`` sends
    ``application/x-www-form-urlencoded``.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Declare the body JSON for Ollama paths, then pass the request on."""
        if scope["type"] == "http" and is_ollama_path(scope["path"]):
            headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            scope = {**scope, "headers": [*headers, (b"content-type", b"application/json")]}
        await self.app(scope, receive, send)
