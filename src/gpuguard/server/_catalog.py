"""The models a server offers by name: configured ones (with aliases) and the backend's own.

A configured model has a public name, any aliases, and the id the backend knows it by
(for llama.cpp, its GGUF file). Requests may use any of them; the backend always gets its
own id. Models the backend lists without configuration are offered under their own id.

Embedding models answer to the names users type (:func:`embedder_aliases`): the full one,
its last part, Ollama's tag for the same model (``all-minilm`` for all-MiniLM-L6-v2) and each
of those with ``:latest``. What each model can do is said in the words of each API
(:data:`CHAT`, :data:`EMBEDDINGS`; Ollama's ``completion``, ``embedding``), and a chat that
names an embedding model is refused by :func:`refuse_chat_with_embedder`.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .._exceptions import EmbedderUnavailable, InvalidRequest
from ..embed._bundled import resolve_model
from ..embed._protocol import Embedder
from ..gateway import ModelGateway

__all__ = [
    "CHAT",
    "EMBEDDINGS",
    "OLLAMA_TAGS",
    "ModelCatalog",
    "ModelEntry",
    "canonical",
    "embedder_aliases",
    "embedders_of",
    "refuse_chat_with_embedder",
    "weights_size",
]

CHAT = "chat"
"""What a model that answers ``/v1/chat/completions`` can do, as ``/v1/models`` says it."""
EMBEDDINGS = "embeddings"
"""What a model that answers ``/v1/embeddings`` can do, as ``/v1/models`` says it."""

#: Ollama's library tag of well-known embedding models, by their Hugging Face name (lower case).
OLLAMA_TAGS = {
    "all-minilm-l6-v2": "all-minilm",
    "nomic-embed-text-v1.5": "nomic-embed-text",
    "mxbai-embed-large-v1": "mxbai-embed-large",
    "bge-m3": "bge-m3",
}

_WEIGHTS = ("*.safetensors", "*.bin", "*.onnx", "*.gguf")


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


def canonical(name: str) -> str:
    """``llama3.2`` and ``llama3.2:latest`` name the same model in Ollama: the tagged form."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def embedder_aliases(*embedders: Embedder | None) -> dict[str, str]:
    """Every name an embedding request may use for these embedders, mapped to the full one.

    An embedder answers to its full name (``sentence-transformers/all-MiniLM-L6-v2``), its
    last part (``all-MiniLM-L6-v2``), Ollama's tag for it (``all-minilm``, :data:`OLLAMA_TAGS`)
    and each of them with ``:latest``.
    """
    aliases: dict[str, str] = {}
    for embedder in embedders:
        if embedder is not None:
            short = embedder.name.rsplit("/", 1)[-1]
            tag = OLLAMA_TAGS.get(short.lower())
            for alias in (embedder.name, short, *([tag] if tag else [])):
                aliases.setdefault(alias, embedder.name)
                aliases.setdefault(canonical(alias), embedder.name)
    return aliases


def embedders_of(gateway: ModelGateway) -> list[tuple[Embedder, bool]]:
    """The gateway's distinct embedders (the GPU one first) and whether each is loaded."""
    pair = gateway.embedders
    found: dict[str, tuple[Embedder, bool]] = {}
    if gateway.gpu_embedder is not None:
        found[gateway.gpu_embedder.name] = (gateway.gpu_embedder, bool(pair and pair.gpu_ready))
    cpu = gateway.cpu_embedder
    if cpu is not None and cpu.name not in found:
        found[cpu.name] = (cpu, cpu.loaded)
    return list(found.values())


def refuse_chat_with_embedder(name: str, gateway: ModelGateway, catalog: ModelCatalog) -> None:
    """Raise :class:`InvalidRequest` (a 400 naming ``model``) if ``name`` only embeds.

    Clients that list every model (Open WebUI) offer the embedder for chats too; the answer
    says what it is for instead of a 404 naming whatever the backend calls it. A name that is
    also a chat model of this server (the current model, a configured one: a server such as
    Foundry Local or Ollama serves one model for both) chats.
    """
    if catalog.entry(name) is not None or catalog.backend_id(name) == gateway.model:
        return
    full = embedder_aliases(gateway.gpu_embedder, gateway.cpu_embedder).get(name)
    if full is not None:
        raise InvalidRequest(
            "model",
            f"{name!r} is the embedding model {full!r}: it embeds (POST /v1/embeddings, "
            "/api/embed) and cannot chat; GET /v1/models says what each model can do",
            model=name,
        )


@functools.cache
def weights_size(name: str) -> int:
    """The bytes of an embedding model's weights on disk (0 where they cannot be found).

    Ollama's ``size`` is the model's file size; this is the same for a local model: its
    weight files in the directory it loads from (the first kind of weights found).
    """
    try:
        source = Path(resolve_model(name).source)
    except EmbedderUnavailable:  # the default model, with no copy here
        return 0
    try:
        if not source.is_dir():
            return source.stat().st_size if source.is_file() else 0
        for pattern in _WEIGHTS:
            files = list(source.rglob(pattern))
            if files:
                return sum(file.stat().st_size for file in files)
    except OSError:
        pass
    return 0
