"""One entry point that turns configuration strings into an :class:`Embedder`."""

from __future__ import annotations

from typing import cast

from .._exceptions import ConfigError
from ._engines import LOCAL_ENGINES, create_local_embedder, resolve_device
from ._process import ProcessEmbedder
from ._protocol import Embedder

__all__ = ["ENGINES", "create_embedder"]

ENGINES = ("sentence-transformers", "fastembed", "remote", "hash")
"""The engine names :func:`create_embedder` knows."""


def create_embedder(
    engine: str,
    *,
    model: str | None = None,
    device: str = "cpu",
    url: str | None = None,
    api: str = "openai",
    process: bool = False,
) -> Embedder:
    """Build an embedder from settings.

    * ``sentence-transformers``: ``model`` is a local directory or the default model's name
      (``None``: the bundled all-MiniLM-L6-v2).
    * ``fastembed``: ``model`` is a directory made by :func:`~gpuguard.embed.export_onnx`,
      or a model of fastembed's catalogue already in its cache.
    * ``remote``: ``url`` and ``model`` are required; ``api`` is ``openai`` or ``ollama``.
    * ``hash``: the deterministic test embedder (no model; ``device`` is only a label).

    ``process=True`` runs a local engine (``sentence-transformers``, ``fastembed``) in a
    worker process (:class:`~gpuguard.embed.ProcessEmbedder`) so that its work can be
    killed; the engine is still built here first, so a bad setting fails at once. The
    other engines have no local work to isolate and ignore it.

    ``device="auto"`` is the GPU torch can use, else the CPU (:func:`resolve_device`); in a
    worker process it is resolved there, so that this process never imports torch for it.

    Raises :class:`ConfigError` for an unknown engine or missing settings, and
    :class:`~gpuguard.EmbedderUnavailable` for a device this machine does not have.
    """
    if engine in LOCAL_ENGINES and process:
        # The settings are checked here; the device, if "auto", is probed in the worker.
        checked = "cpu" if device == "auto" else device
        local = create_local_embedder(engine, model=model, device=checked)
        return ProcessEmbedder(engine, name=local.name, model=model, device=device)
    device = resolve_device(engine, device)
    if engine in LOCAL_ENGINES:
        return create_local_embedder(engine, model=model, device=device)
    if engine == "remote":
        from .remote import RemoteApi, RemoteEmbedder

        if url is None or model is None:
            raise ConfigError("the remote engine needs url= and model=")
        if api not in ("openai", "ollama"):
            raise ConfigError(f"unknown remote embedding API {api!r}; use 'openai' or 'ollama'")
        return RemoteEmbedder(url, model=model, api=cast(RemoteApi, api))
    if engine == "hash":
        from .hashing import HashEmbedder

        return HashEmbedder(name=model or "hash-embedder", device=device)
    raise ConfigError(f"unknown embedding engine {engine!r}; expected one of {', '.join(ENGINES)}")
