"""OpenAI's streamed ``chat.completion.chunk`` objects as :class:`~gpuguard.llm.ChatChunk` values.

One decoder for both sources of them: the SSE frames of the OpenAI-compatible servers and
the chunks llama-cpp-python's ``create_chat_completion(stream=True)`` yields in the worker.
No third-party import, so the embedded backend needs no httpx.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._protocol import ChatChunk

__all__ = ["decode_chunk"]


def decode_chunk(event: Mapping[str, Any], *, usage: dict[str, int] | None) -> ChatChunk | None:
    """The piece of the answer ``event`` carries, or ``None`` when it carries nothing.

    ``usage`` rides on the chunk: a server's own ``event["usage"]``, or ``None`` where the
    caller counts the tokens itself. A chunk without choices is a usage-only chunk (some
    servers end with one). Nothing is the opening role-only delta, or an incomplete UTF-8
    sequence llama.cpp holds back.
    """
    choices = event.get("choices") or []
    if not choices:
        return ChatChunk(content="", model=event.get("model"), usage=usage) if usage else None
    choice = choices[0]
    delta = choice.get("delta") or {}
    content = delta.get("content") or ""
    tool_calls = tuple(delta.get("tool_calls") or ())
    logprobs = choice.get("logprobs")
    if not (content or tool_calls or logprobs or usage) and choice.get("finish_reason") is None:
        return None
    return ChatChunk(
        content=content,
        finish_reason=choice.get("finish_reason"),
        model=event.get("model"),
        usage=usage,
        tool_calls=tool_calls,
        logprobs=logprobs,
    )
