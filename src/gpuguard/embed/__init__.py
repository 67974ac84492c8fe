"""Embedding engines behind one protocol, and bulk embedding with per-batch CPU fallback.

Engines: :class:`SentenceTransformerEmbedder`, :class:`FastEmbedEmbedder` (ONNX Runtime),
:class:`RemoteEmbedder` (OpenAI-compatible or Ollama), :class:`HashEmbedder` (no model, for
tests and demos), built from settings by :func:`create_embedder`; :class:`ProcessEmbedder`
runs a local engine in a worker process so that its work can be killed.
:func:`create_embedder_pair` builds both roles with one model where they share a device;
:class:`EmbedderPair` holds the GPU and CPU embedders and refuses a dimension mismatch;
:class:`BulkEmbedder` streams batches through the GPU when it is free and the CPU when it is
not.

The protocol, the pair and bulk embedding need only numpy; each engine is imported on first
use, so ``import gpuguard.embed`` never needs torch, onnxruntime or httpx.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_getattr
from ._batches import BulkStats, EmbeddedBatch
from ._bulk import BulkEmbedder, BulkRun
from ._bundled import DEFAULT_MODEL, bundled_model_path
from ._engines import EngineChoice, choose_cpu_engine
from ._factory import ENGINES, create_embedder
from ._fallback import FALLBACK_MESSAGE, report_fallback
from ._lease import LeaseGuard
from ._pair import EmbedderPair
from ._process import ProcessEmbedder
from ._protocol import Embedder
from ._shared import SharedModelEmbedder, create_embedder_pair

if TYPE_CHECKING:
    from ._protocol import Vectors
    from .hashing import HashEmbedder
    from .onnx import FastEmbedEmbedder, export_onnx
    from .remote import RemoteEmbedder
    from .sentence_transformers import SentenceTransformerEmbedder

__all__ = [
    "DEFAULT_MODEL",
    "ENGINES",
    "FALLBACK_MESSAGE",
    "BulkEmbedder",
    "BulkRun",
    "BulkStats",
    "EmbeddedBatch",
    "Embedder",
    "EmbedderPair",
    "EngineChoice",
    "FastEmbedEmbedder",
    "HashEmbedder",
    "LeaseGuard",
    "ProcessEmbedder",
    "RemoteEmbedder",
    "SentenceTransformerEmbedder",
    "SharedModelEmbedder",
    "Vectors",
    "bundled_model_path",
    "choose_cpu_engine",
    "create_embedder",
    "create_embedder_pair",
    "export_onnx",
    "report_fallback",
]

_LAZY = {
    "FastEmbedEmbedder": ".onnx",
    "export_onnx": ".onnx",
    "HashEmbedder": ".hashing",
    "RemoteEmbedder": ".remote",
    "SentenceTransformerEmbedder": ".sentence_transformers",
    "Vectors": "._protocol",
}


__getattr__ = lazy_getattr(__name__, _LAZY, globals())


def __dir__() -> list[str]:
    return sorted(__all__)
