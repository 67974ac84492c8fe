"""The models a server offers by name: configured ones (with aliases) and the backend's own.

A configured model has a public name, any aliases, and the id the backend knows it by
(for llama.cpp, its GGUF file). Requests may use any of them; the backend always gets its
own id. Models the backend lists without configuration are offered under their own id.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ..embed._protocol import Embedder

__all__ = ["ModelCatalog", "ModelEntry", "embedder_aliases"]


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """One configured model: its public name, backend id, aliases and limits."""

    name: str
    backend_id: str
    aliases: tuple[str, ...] = ()
    context_size: int | None = None
    prewarm: bool = False


@dataclass(frozen=True, slots=True)
class ModelCatalog:
    """Name and alias lookup over the configured models."""

    entries: tuple[ModelEntry, ...] = ()
    _by_name: Mapping[str, ModelEntry] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        by_name: dict[str, ModelEntry] = {}
        for entry in self.entries:
            for name in (entry.name, *entry.aliases):
                by_name[name] = entry
        object.__setattr__(self, "_by_name", by_name)

    def entry(self, name: str) -> ModelEntry | None:
        """The configured model called ``name`` (by name or alias), if any."""
        return self._by_name.get(name)

    def backend_id(self, name: str) -> str:
        """The id the backend knows ``name`` by (``name`` itself when not configured)."""
        entry = self._by_name.get(name)
        return entry.backend_id if entry is not None else name

    def public_name(self, backend_id: str) -> str:
        """The configured name of a backend model (its id when not configured)."""
        for entry in self.entries:
            if entry.backend_id == backend_id:
                return entry.name
        return backend_id

    def public_names(self, backend_ids: Iterable[str]) -> list[str]:
        """Configured names first, then the backend's other models, without repeats."""
        names = [entry.name for entry in self.entries]
        names += [self.public_name(model) for model in backend_ids]
        return list(dict.fromkeys(names))


def embedder_aliases(*embedders: Embedder | None) -> dict[str, str]:
    """Every name an embedding request may use for these embedders, mapped to the full one.

    An embedder answers to its full name (``sentence-transformers/all-MiniLM-L6-v2``) and to
    its last part (``all-MiniLM-L6-v2``).
    """
    aliases: dict[str, str] = {}
    for embedder in embedders:
        if embedder is not None:
            for alias in (embedder.name, embedder.name.rsplit("/", 1)[-1]):
                aliases.setdefault(alias, embedder.name)
    return aliases
