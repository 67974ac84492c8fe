"""Test helpers that users' own tests can use too: in-memory fakes and GPU-interval recording.

The fakes live where the product uses them (``gpuguard.llm.fake``, ``gpuguard.embed.hashing``,
for the ``fake`` backend and the ``hash`` embedding engine); this package re-exports them.

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

from .._intervals import GpuInterval, IntervalRecorder
from ..embed.hashing import HashEmbedder
from ..llm.fake import FakeBackend

__all__ = ["FakeBackend", "GpuInterval", "HashEmbedder", "IntervalRecorder"]
