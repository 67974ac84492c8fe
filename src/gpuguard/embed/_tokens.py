"""Token-array input: ids of an embedding model's own tokenizer, checked before decoding.

OpenAI's embeddings API accepts token arrays, meaning tokens of the embedding model's own
tokenizer (as vLLM does). Clients that tokenize for OpenAI's models (tiktoken, as LangChain's
``OpenAIEmbeddings`` does by default) send ids of another vocabulary: an id outside this
model's vocabulary is refused by name, and ids inside it would embed a different text, which
is why the refusal says where token arrays must come from.
"""

from __future__ import annotations

from collections.abc import Sequence

from .._exceptions import InvalidRequest, UnsupportedParameter

__all__ = ["TokenArrays", "check_token_ids", "no_tokenizer"]

TokenArrays = Sequence[Sequence[int]]
"""One or more inputs, each a sequence of token ids."""


def check_token_ids(model: str, vocab_size: int, arrays: TokenArrays) -> None:
    """Raise :class:`InvalidRequest` (naming ``input``) for the first id outside the vocabulary."""
    for array in arrays:
        for token in array:
            if not 0 <= token < vocab_size:
                raise InvalidRequest(
                    "input",
                    f"contains token id {token}, outside the vocabulary of {model!r} "
                    f"({vocab_size} tokens, ids 0 to {vocab_size - 1}): token arrays must use "
                    "this model's tokenizer (tiktoken ids from OpenAI models are not this "
                    "model's); send the text instead",
                )


def no_tokenizer(model: str) -> UnsupportedParameter:
    """The error for token arrays sent to an engine that has no tokenizer here."""
    return UnsupportedParameter(
        "input",
        f"as token arrays is not supported: the embedding engine of {model!r} has no "
        "tokenizer on this server; send the text instead",
    )
