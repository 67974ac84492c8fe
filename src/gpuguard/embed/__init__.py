"""Embedding engines behind one protocol, and bulk embedding with per-batch CPU fallback."""

from ._protocol import Embedder, Vectors

__all__ = ["Embedder", "Vectors"]
