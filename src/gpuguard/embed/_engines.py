"""The local engines by name: the one place a sentence-transformers or fastembed engine is built.

Both :func:`~gpuguard.embed.create_embedder` (in the caller's process) and a worker's
:class:`~gpuguard.embed._process.EngineHost` (in the child) build their engine here, so a
setting means the same on either side of the process boundary.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .._exceptions import ConfigError
from ._local import LocalEmbedder
from .onnx import MANIFEST_NAME

__all__ = [
    "LOCAL_ENGINES",
    "EngineChoice",
    "choose_cpu_engine",
    "create_local_embedder",
    "resolve_device",
]

LOCAL_ENGINES = ("sentence-transformers", "fastembed")
"""The engines that run on this machine, and so can run in a worker process."""


@dataclass(frozen=True, slots=True)
class EngineChoice:
    """The engine ``auto`` stands for, the model to give it, and why, for the log."""

    engine: str
    model: str | None
    reason: str


def choose_cpu_engine(model: str | None, *, onnx_dirs: Sequence[Path] = ()) -> EngineChoice:
    """The CPU engine for ``model``: fastembed (ONNX Runtime) where it can run, else torch.

    fastembed runs the model where fastembed and onnxruntime are installed and an ONNX
    export of it is found: ``model`` itself, or the first of ``onnx_dirs``, made by
    :func:`~gpuguard.embed.export_onnx` (its vectors match sentence-transformers', so CPU
    and GPU batches stay interchangeable). Otherwise sentence-transformers runs ``model``.
    Nothing is exported or downloaded here.
    """
    candidates = [Path(model)] if model is not None else []
    candidates += onnx_dirs
    export = next((path for path in candidates if (path / MANIFEST_NAME).is_file()), None)
    if export is None:
        looked = ", ".join(str(path) for path in onnx_dirs) or "the model's own directory"
        return EngineChoice("sentence-transformers", model, f"no ONNX export found ({looked})")
    missing = [name for name in ("fastembed", "onnxruntime") if not _installed(name)]
    if missing:
        return EngineChoice(
            "sentence-transformers", model, f"{' and '.join(missing)} not installed"
        )
    return EngineChoice("fastembed", str(export), f"ONNX export at {export}")


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def resolve_device(engine: str, device: str) -> str:
    """``auto``: the GPU torch can use (CUDA, then Apple MPS), else the CPU.

    Asking torch imports it (over a second): this runs where the engine runs, in a worker
    process for the default GPU embedder. Without a GPU the "GPU" embedder still runs
    under the lease, so the guard's behaviour (and the demo) is the same on every machine.
    """
    if device != "auto":
        return device
    if engine != "sentence-transformers":
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    return "mps" if torch.backends.mps.is_available() else "cpu"


def create_local_embedder(engine: str, *, model: str | None, device: str) -> LocalEmbedder:
    """Build a local engine, its settings as for :func:`~gpuguard.embed.create_embedder`.

    ``device="auto"`` is resolved here (:func:`resolve_device`). The model loads on first
    use, not here. Raises :class:`ConfigError` for missing settings or an engine not in
    :data:`LOCAL_ENGINES`.
    """
    device = resolve_device(engine, device)
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
