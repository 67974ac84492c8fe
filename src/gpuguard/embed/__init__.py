"""Embedding engines behind one protocol, and bulk embedding with per-batch CPU fallback.

Engines: :class:`SentenceTransformerEmbedder`, :class:`FastEmbedEmbedder` (ONNX Runtime),
:class:`RemoteEmbedder` (OpenAI-compatible or Ollama), built from settings by
:func:`create_embedder`. :class:`EmbedderPair` holds the GPU and CPU embedders and refuses
a dimension mismatch; :class:`BulkEmbedder` streams batches through the GPU when it is free
and the CPU when it is not. Heavy libraries (torch, onnxruntime) load only when used.
"""

from ._bulk import (
    FALLBACK_MESSAGE,
    BulkEmbedder,
    BulkRun,
    BulkStats,
    EmbeddedBatch,
    report_fallback,
)
from ._bundled import DEFAULT_MODEL, bundled_model_path
from ._factory import ENGINES, create_embedder
from ._lease import LeaseGuard
from ._pair import EmbedderPair
from ._protocol import Embedder, Vectors
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
    "FastEmbedEmbedder",
    "LeaseGuard",
    "RemoteEmbedder",
    "SentenceTransformerEmbedder",
    "Vectors",
    "bundled_model_path",
    "create_embedder",
    "export_onnx",
    "report_fallback",
]
