"""Request bodies of the OpenAI-compatible routes, and the response shapes they return."""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..llm import ChatChunk, ChatMessage

__all__ = [
    "ChatCompletionRequest",
    "ChatMessageIn",
    "EmbeddingRequest",
    "TextPart",
    "chunk_payload",
    "completion_payload",
    "new_completion_id",
]

MAX_MESSAGES = 256
MAX_EMBEDDING_INPUTS = 2048


class TextPart(BaseModel):
    """One part of a multi-part message; only text is supported."""

    type: Literal["text"]
    text: str


class ChatMessageIn(BaseModel):
    """One chat turn as OpenAI clients send it."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]

    def to_message(self) -> ChatMessage:
        """The gateway's message type (a developer turn counts as a system turn)."""
        text = (
            self.content
            if isinstance(self.content, str)
            else "".join(part.text for part in self.content)
        )
        return ChatMessage("system" if self.role == "developer" else self.role, text)


class StreamOptions(BaseModel):
    """``stream_options``: only ``include_usage`` is honoured."""

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """``POST /v1/chat/completions``; unknown OpenAI fields are accepted and ignored.

    ``retrieval`` (gpuguard's own, sent by the openai client through ``extra_body``) puts the
    index's best passages for the last user message into a system message first.
    """

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=256)
    messages: list[ChatMessageIn] = Field(min_length=1, max_length=MAX_MESSAGES)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    retrieval: bool = False

    @property
    def token_limit(self) -> int | None:
        """``max_completion_tokens`` (the newer name) or ``max_tokens``."""
        return self.max_completion_tokens or self.max_tokens

    def last_user_text(self) -> str:
        """The text of the last user turn ('' when there is none)."""
        users = [m.to_message().content for m in self.messages if m.role == "user"]
        return users[-1] if users else ""


class EmbeddingRequest(BaseModel):
    """``POST /v1/embeddings``."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=256)
    input: str | list[str] = Field(min_length=1, max_length=MAX_EMBEDDING_INPUTS)
    encoding_format: Literal["float", "base64"] = "float"

    @property
    def texts(self) -> list[str]:
        """The inputs as a list."""
        return [self.input] if isinstance(self.input, str) else list(self.input)


def new_completion_id() -> str:
    """A fresh ``chatcmpl-...`` id."""
    return f"chatcmpl-{uuid.uuid4().hex}"


def chunk_payload(
    completion_id: str,
    model: str,
    *,
    delta: dict[str, str],
    finish_reason: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One ``chat.completion.chunk``; ``extra`` adds top-level fields the openai client ignores."""
    payload: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }
    if extra:
        payload.update(extra)
    return payload


def completion_payload(
    completion_id: str, model: str, text: str, last: ChatChunk | None
) -> dict[str, Any]:
    """A whole ``chat.completion`` built from the answer and its last chunk."""
    usage = (last.usage if last is not None else None) or {}
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": (last.finish_reason if last is not None else None) or "stop",
            }
        ],
        "usage": {
            "prompt_tokens": usage.get("prompt_tokens", 0),
            "completion_tokens": usage.get("completion_tokens", 0),
            "total_tokens": usage.get("total_tokens", 0),
        },
    }
