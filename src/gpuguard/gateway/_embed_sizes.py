"""How the gateway schedules one embedding request: by its size, in one table.

==========  ===========================================  ==========================================
size        when                                         lease
==========  ===========================================  ==========================================
query       at most ``query_max_texts`` texts and at     ``hold``, interactive (like a chat: a
            most ``query_max_chars`` characters in all   person waits for it)
medium      neither a query nor bulk                     ``hold``, normal
bulk        more than ``bulk_above_texts`` texts or      ``try_hold`` per batch, background; a batch
            more than ``bulk_above_chars`` characters    runs on the CPU when the GPU is busy
==========  ===========================================  ==========================================

So a search query goes ahead of queued loads, and a request the size of an indexing job
never makes a chat wait for more than one batch.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .._events import Priority
from .._exceptions import ConfigError

if TYPE_CHECKING:
    from ..embed._protocol import Vectors

__all__ = ["EmbedSize", "Embedded", "EmbeddingSizes"]


class EmbedSize(enum.Enum):
    """The size class of an embedding request; ``priority`` is its lease priority."""

    QUERY = ("query", Priority.INTERACTIVE)
    MEDIUM = ("medium", Priority.NORMAL)
    BULK = ("bulk", Priority.BACKGROUND)

    def __init__(self, label: str, priority: Priority) -> None:
        self.label = label
        self.priority = priority


@dataclass(frozen=True, slots=True)
class EmbeddingSizes:
    """The thresholds of the table above (texts per request, characters per request)."""

    query_max_texts: int = 8
    query_max_chars: int = 4_000
    bulk_above_texts: int = 256
    bulk_above_chars: int = 200_000

    def __post_init__(self) -> None:
        if (
            min(
                self.query_max_texts,
                self.query_max_chars,
                self.bulk_above_texts,
                self.bulk_above_chars,
            )
            < 1
        ):
            raise ConfigError("embedding size thresholds must be >= 1")
        if (
            self.query_max_texts > self.bulk_above_texts
            or self.query_max_chars > self.bulk_above_chars
        ):
            raise ConfigError(
                "a query cannot also be bulk: query_max_texts must be <= bulk_above_texts "
                "and query_max_chars <= bulk_above_chars"
            )

    def classify(self, texts: Sequence[str]) -> EmbedSize:
        """The size class of a request embedding ``texts``."""
        chars = sum(len(text) for text in texts)
        if len(texts) > self.bulk_above_texts or chars > self.bulk_above_chars:
            return EmbedSize.BULK
        if len(texts) <= self.query_max_texts and chars <= self.query_max_chars:
            return EmbedSize.QUERY
        return EmbedSize.MEDIUM


@dataclass(frozen=True, slots=True)
class Embedded:
    """The answer to one embedding request.

    ``load_ns`` is the time this request spent loading the embedding model (0 when it was
    loaded already), in nanoseconds as Ollama reports it.
    """

    vectors: Vectors
    size: EmbedSize
    load_ns: int
