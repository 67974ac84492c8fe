"""The local engines by name: the one place a sentence-transformers or fastembed engine is built.

Both :func:`~gpuguard.embed.create_embedder` (in the caller's process) and a worker's
:class:`~gpuguard.embed._process.EngineHost` (in the child) build their engine here, so a
setting means the same on either side of the process boundary.
"""

from __future__ import annotations

from pathlib import Path

from .._exceptions import ConfigError
from ._local import LocalEmbedder

__all__ = ["LOCAL_ENGINES", "create_local_embedder"]

LOCAL_ENGINES = ("sentence-transformers", "fastembed")
"""The engines that run on this machine, and so can run in a worker process."""


def create_local_embedder(engine: str, *, model: str | None, device: str) -> LocalEmbedder:
    """Build a local engine, its settings as for :func:`~gpuguard.embed.create_embedder`.

    The model loads on first use, not here. Raises :class:`ConfigError` for missing
    settings or an engine not in :data:`LOCAL_ENGINES`.
    """
    if engine == "sentence-transformers":
        from .sentence_transformers import SentenceTransformerEmbedder

        return SentenceTransformerEmbedder(model, device=device)
    if engine == "fastembed":
        from .onnx import FastEmbedEmbedder

        if model is not None and Path(model).is_dir():
            return FastEmbedEmbedder(model_path=model, device=device)
        if model is None:
            raise ConfigError("the fastembed engine needs model= (an export_onnx directory)")
        return FastEmbedEmbedder(model, device=device)
    raise ConfigError(f"the {engine!r} engine cannot run in a worker process")
