"""Response shapes of the OpenAI-compatible routes, and the answer they are built from."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from ..llm import ChatChunk, complete_usage

__all__ = ["Answer", "chunk_payload", "new_id", "text_chunk_payload"]


def new_id(prefix: str = "chatcmpl") -> str:
    """A fresh ``chatcmpl-...`` (or ``cmpl-...``) id."""
    return f"{prefix}-{uuid.uuid4().hex}"


def chunk_payload(
    completion_id: str,
    model: str,
    *,
    delta: dict[str, Any],
    finish_reason: str | None = None,
    logprobs: Any = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One ``chat.completion.chunk``; ``extra`` adds top-level fields the openai client ignores."""
    payload: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}
        ],
    }
    if extra:
        payload.update(extra)
    return payload


def text_chunk_payload(
    completion_id: str, model: str, text: str, finish_reason: str | None
) -> dict[str, Any]:
    """One streamed ``text_completion`` piece."""
    return {
        "id": completion_id,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}],
    }


@dataclass(slots=True)
class Answer:
    """A whole answer gathered from its chunks: text, tool calls, logprobs, usage, finish."""

    parts: list[str] = field(default_factory=list)
    tool_calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    logprobs: list[Any] = field(default_factory=list)
    finish_reason: str | None = None
    reported_usage: dict[str, int] | None = None

    def add(self, chunk: ChatChunk) -> None:
        """Fold one chunk in (tool-call deltas are merged by their ``index``)."""
        self.parts.append(chunk.content)
        for delta in chunk.tool_calls:
            call = self.tool_calls.setdefault(
                int(delta.get("index", 0)),
                {"id": "", "type": "function", "function": {"name": "", "arguments": ""}},
            )
            call["id"] = delta.get("id") or call["id"]
            function = delta.get("function") or {}
            call["function"]["name"] += function.get("name") or ""
            call["function"]["arguments"] += function.get("arguments") or ""
        if chunk.logprobs:
            self.logprobs.extend(chunk.logprobs.get("content") or ())
        if chunk.finish_reason is not None:
            self.finish_reason = chunk.finish_reason
        if chunk.usage:
            self.reported_usage = chunk.usage

    @property
    def text(self) -> str:
        """The answer's text."""
        return "".join(self.parts)

    @property
    def finish(self) -> str:
        """``stop``, ``length`` or ``tool_calls``."""
        if self.tool_calls and self.finish_reason in (None, "stop"):
            return "tool_calls"
        return self.finish_reason or "stop"

    def usage(self) -> dict[str, int]:
        """OpenAI's usage object; ``total_tokens`` is always there."""
        usage = self.reported_usage or {}
        prompt = int(usage.get("prompt_tokens", 0))
        completion = int(usage.get("completion_tokens", 0))
        return complete_usage(prompt, completion)

    def chat_payload(
        self, completion_id: str, model: str, *, with_logprobs: bool
    ) -> dict[str, Any]:
        """A whole ``chat.completion``."""
        message: dict[str, Any] = {"role": "assistant", "content": self.text}
        if self.tool_calls:
            message["tool_calls"] = [self.tool_calls[i] for i in sorted(self.tool_calls)]
            message["content"] = self.text or None
        return {
            "id": completion_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": {"content": self.logprobs} if with_logprobs else None,
                    "finish_reason": self.finish,
                }
            ],
            "usage": self.usage(),
        }

    def text_payload(self, completion_id: str, model: str) -> dict[str, Any]:
        """A whole ``text_completion``."""
        return {
            "id": completion_id,
            "object": "text_completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {"index": 0, "text": self.text, "logprobs": None, "finish_reason": self.finish}
            ],
            "usage": self.usage(),
        }
