"""Retrieval for chat: the index's best passages, fitted into the context that is left.

The passages go into one system message before the conversation. When the model's context
size is known, they get only the room left after the conversation and the tokens reserved
for the answer; the lowest-ranked passages are dropped first.
"""

from __future__ import annotations

from collections.abc import Sequence

from .._exceptions import ConfigError
from ..llm import ChatMessage, LlmBackend
from ._context import Retriever

__all__ = ["ANSWER_RESERVE", "with_passages"]

ANSWER_RESERVE = 256
"""Tokens kept free for the answer when the request sets no ``max_tokens``."""


async def count_tokens(backend: LlmBackend, model: str, messages: Sequence[ChatMessage]) -> int:
    """The backend's count, or a cautious estimate (one token per 3 characters)."""
    counted = await backend.count_tokens(model, messages)
    if counted is not None:
        return counted
    return sum(len(m.content) // 3 + 4 for m in messages)


def _system(passages: Sequence[str]) -> ChatMessage:
    text = "\n\n".join(f"[{i}] {p}" for i, p in enumerate(passages, start=1))
    return ChatMessage("system", f"Answer using this context where it is relevant:\n\n{text}")


async def with_passages(
    messages: list[ChatMessage],
    question: str,
    *,
    retriever: Retriever | None,
    backend: LlmBackend,
    model: str,
    context_length: int | None,
    max_tokens: int | None,
) -> list[ChatMessage]:
    """``messages`` preceded by as many of the best passages for ``question`` as fit."""
    if retriever is None:
        raise ConfigError("retrieval was requested but this server has no index configured")
    passages = await retriever(question)
    if context_length is not None:
        budget = context_length - (max_tokens or ANSWER_RESERVE)
        while (
            passages and await count_tokens(backend, model, [_system(passages), *messages]) > budget
        ):
            passages = passages[:-1]  # best first: drop the lowest-ranked
    if not passages:
        return messages
    return [_system(passages), *messages]
