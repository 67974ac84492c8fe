"""Token-array input: what the ids mean, and ids of an embedding model's own tokenizer.

OpenAI's embeddings API accepts token arrays. Two readings are in use (:data:`TokenMeaning`):
OpenAI's, where the ids are ``cl100k_base`` tokens whatever the model (what OpenAI, LangChain's
``OpenAIEmbeddings`` and LlamaIndex send: :mod:`._openai_tokens`), and vLLM's, where they are
tokens of the embedding model's own tokenizer (decoded by the engine, checked here first).
Read with the wrong meaning, ids inside the vocabulary embed another text, so the meaning is
one setting of the server, and every refusal says which meaning it applied.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from .._exceptions import InvalidRequest, UnsupportedParameter

__all__ = ["TOKEN_MEANINGS", "TokenArrays", "TokenMeaning", "check_token_ids", "no_tokenizer"]

TokenArrays = Sequence[Sequence[int]]
"""One or more inputs, each a sequence of token ids."""

TokenMeaning = Literal["openai", "model"]
"""``openai``: ids of ``cl100k_base`` (OpenAI's embedders); ``model``: the model's own ids."""

TOKEN_MEANINGS: tuple[TokenMeaning, ...] = ("openai", "model")


def check_token_ids(model: str, vocab_size: int, arrays: TokenArrays) -> None:
    """Raise :class:`InvalidRequest` (naming ``input``) for the first id outside the vocabulary."""
    for array in arrays:
        for token in array:
            if not 0 <= token < vocab_size:
                raise InvalidRequest(
                    "input",
                    f"contains token id {token}, outside the vocabulary of {model!r} "
                    f"({vocab_size} tokens, ids 0 to {vocab_size - 1}): this server reads token "
                    "arrays as ids of the model's own tokenizer (embeddings.token_arrays = "
                    '"model"); send the text instead',
                )


def no_tokenizer(model: str) -> UnsupportedParameter:
    """The error for token arrays sent to an engine that has no tokenizer here."""
    return UnsupportedParameter(
        "input",
        f"as token arrays is not supported: the embedding engine of {model!r} has no "
        "tokenizer on this server; send the text instead",
    )
