"""Test helpers that users' own tests can use too: in-memory fakes and GPU-interval recording.

Protocol doubles of servers that cannot run here (Foundry Local, Ollama) live in submodules
(:mod:`gpuguard.testing.foundry_double`, :mod:`gpuguard.testing.ollama_double`), imported
explicitly because they need starlette and uvicorn. Each is a real HTTP server on a free
local port, in a background thread, recording its GPU work into an :class:`IntervalRecorder`
you can share with a GPU embedder::

    recorder = IntervalRecorder()
    with FoundryDouble(generation="0.10", recorder=recorder, token_latency_s=0.002) as double:
        backend = FoundryLocalBackend(double.base_url)
        ...
    assert recorder.overlaps() == []
"""

from ._fake_backend import FakeBackend
from ._fake_embedder import HashEmbedder
from ._intervals import GpuInterval, IntervalRecorder

__all__ = ["FakeBackend", "GpuInterval", "HashEmbedder", "IntervalRecorder"]
