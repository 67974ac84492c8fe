"""Test helpers that users' own tests can use too: in-memory fakes and GPU-interval recording.

Protocol doubles of servers that cannot run here (Foundry Local, Ollama) live in submodules
(:mod:`gpuguard.testing.foundry_double`, :mod:`gpuguard.testing.ollama_double`).
"""

from ._fake_backend import FakeBackend
from ._fake_embedder import HashEmbedder
from ._intervals import GpuInterval, IntervalRecorder

__all__ = ["FakeBackend", "GpuInterval", "HashEmbedder", "IntervalRecorder"]
