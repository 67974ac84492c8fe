"""Ollama's chat turns as the gateway's: tool calls get the ids OpenAI-style backends need.

Ollama's tool calls carry no ids; each gets ``call_<turn>_<n>``, and a tool turn answers the
oldest open call of its ``tool_name`` (or the oldest open call where it names none). Images
are refused by name: the gateway's chat carries text only.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .._exceptions import InvalidRequest
from ..llm import ChatMessage

__all__ = ["NO_IMAGES", "OllamaFunctionCall", "OllamaMessage", "OllamaToolCall", "conversation"]

#: Why images are refused: the gateway's chat carries text only, whatever the backend.
NO_IMAGES = "are not supported: this server's chat takes text only"


class OllamaFunctionCall(BaseModel):
    """The function an assistant turn called; ``arguments`` is an object, as Ollama sends it."""

    name: str = Field(min_length=1, max_length=64)
    arguments: dict[str, Any] = Field(default_factory=dict)


class OllamaToolCall(BaseModel):
    """One tool call of an earlier assistant turn."""

    model_config = ConfigDict(extra="ignore")

    function: OllamaFunctionCall


class OllamaMessage(BaseModel):
    """One chat turn as Ollama clients send it; a tool turn may name its ``tool_name``."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    images: list[str] | None = None
    tool_calls: list[OllamaToolCall] | None = None
    tool_name: str | None = None


def conversation(messages: list[OllamaMessage]) -> list[ChatMessage]:
    """Ollama's turns as the gateway's, tool calls in OpenAI's shape.

    Ollama's tool calls carry no ids and OpenAI-style backends need them: each call gets
    ``call_<turn>_<n>``, and a tool turn answers the oldest open call of its ``tool_name``
    (or the oldest open call where it names none).
    """
    open_calls: list[tuple[str, str]] = []
    turns = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if message.images:
            raise InvalidRequest(f"{where}.images", NO_IMAGES)
        if message.tool_calls and message.role != "assistant":
            raise InvalidRequest(f"{where}.tool_calls", "belong to assistant turns only")
        if message.role == "tool":
            call_id = _answered(open_calls, message.tool_name, where)
            turns.append(ChatMessage("tool", message.content, tool_call_id=call_id))
            continue
        named = [(f"call_{index}_{n}", call) for n, call in enumerate(message.tool_calls or ())]
        open_calls.extend((call_id, call.function.name) for call_id, call in named)
        calls = tuple(
            {
                "id": call_id,
                "type": "function",
                "function": {
                    "name": call.function.name,
                    "arguments": json.dumps(call.function.arguments),
                },
            }
            for call_id, call in named
        )
        turns.append(ChatMessage(message.role, message.content, tool_calls=calls))
    return turns


def _answered(open_calls: list[tuple[str, str]], tool_name: str | None, where: str) -> str:
    """Take the open call a tool turn answers off ``open_calls``; return its id."""
    for position, (call_id, name) in enumerate(open_calls):
        if tool_name is None or name == tool_name:
            del open_calls[position]
            return call_id
    wanted = f" of {tool_name!r}" if tool_name else ""
    raise InvalidRequest(f"{where}.role", f"'tool' answers no earlier tool call{wanted}")
