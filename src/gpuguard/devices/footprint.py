"""How much GPU memory a llama.cpp model will take, predicted from its GGUF header.

The estimate Ollama admits models by: the weights, plus the KV cache
(``2 x layers x kv_heads x head_dim x context x 2`` bytes: keys and values in float16), plus a
surcharge for one batch's activations and logits (``batch x (embedding + vocabulary) x 4``
bytes, float32). It reads the header and the tensor table only (the file is memory-mapped,
the weights are not read). A prediction, not a measurement: llama.cpp's compute buffers vary
with the build and the backend, so the budget policy keeps a headroom beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from .._exceptions import ConfigError

__all__ = ["DEFAULT_BATCH_TOKENS", "Footprint", "predict_gguf_footprint"]

DEFAULT_BATCH_TOKENS: Final = 512
"""llama.cpp's default batch (``n_batch``)."""

KV_BYTES: Final = 2
"""Bytes per cached key or value element (float16, llama.cpp's default cache type)."""


@dataclass(frozen=True, slots=True)
class Footprint:
    """A model's predicted GPU memory, in parts."""

    weights_bytes: int
    kv_cache_bytes: int
    batch_bytes: int
    context_tokens: int
    layers: int
    kv_heads: int
    head_dim: int

    @property
    def total_bytes(self) -> int:
        """What the budget policy should count for the model."""
        return self.weights_bytes + self.kv_cache_bytes + self.batch_bytes


def predict_gguf_footprint(
    path: str | Path,
    *,
    context_tokens: int | None = None,
    batch_tokens: int = DEFAULT_BATCH_TOKENS,
) -> Footprint:
    """Predict the memory of the GGUF model at ``path`` (needs the ``gguf`` package).

    ``context_tokens`` is the context it will be loaded with (``None``: the length it was
    trained for). A file that is not a GGUF model, or lacks the figures, raises
    :class:`~gpuguard.ConfigError` naming it.
    """
    if context_tokens is not None and context_tokens < 1:
        raise ValueError("context_tokens must be >= 1")
    if batch_tokens < 1:
        raise ValueError("batch_tokens must be >= 1")
    header = _read_header(Path(path))
    arch = str(header.field("general.architecture"))
    layers = int(header.field(f"{arch}.block_count"))
    heads = int(header.field(f"{arch}.attention.head_count"))
    kv_heads = int(header.field(f"{arch}.attention.head_count_kv", default=heads))
    embedding = int(header.field(f"{arch}.embedding_length"))
    head_dim = int(header.field(f"{arch}.attention.key_length", default=embedding // heads))
    ctx = context_tokens or int(header.field(f"{arch}.context_length"))
    vocab = int(header.field(f"{arch}.vocab_size", default=header.vocab_from_tokens()))
    return Footprint(
        weights_bytes=header.weights_bytes,
        kv_cache_bytes=2 * layers * kv_heads * head_dim * ctx * KV_BYTES,
        batch_bytes=batch_tokens * (embedding + vocab) * 4,
        context_tokens=ctx,
        layers=layers,
        kv_heads=kv_heads,
        head_dim=head_dim,
    )


_MISSING: Final = object()


class _Header:
    """The fields and tensor sizes of one GGUF file, named in errors by its path."""

    def __init__(self, path: Path, fields: dict[str, Any], weights_bytes: int) -> None:
        self.path = path
        self.fields = fields
        self.weights_bytes = weights_bytes

    def field(self, key: str, default: object = _MISSING) -> Any:
        found = self.fields.get(key)
        if found is not None:
            return found.contents()
        if default is _MISSING:
            raise ConfigError(f"{self.path.name}: the GGUF header has no {key}")
        return default

    def vocab_from_tokens(self) -> int:
        tokens = self.fields.get("tokenizer.ggml.tokens")
        return 0 if tokens is None else len(tokens.data)


def _read_header(path: Path) -> _Header:
    try:
        import gguf
    except ImportError as exc:
        raise ConfigError("predicting a GGUF footprint needs the gguf package") from exc
    try:
        reader = gguf.GGUFReader(str(path))
    except (OSError, ValueError, IndexError, KeyError) as exc:
        raise ConfigError(f"{path.name} is not a readable GGUF model ({exc})") from exc
    weights = sum(int(tensor.n_bytes) for tensor in reader.tensors)
    return _Header(path, dict(reader.fields), weights)
