"""A local embedding engine run in a worker process, so that its work can be killed.

The GPU embedder runs here by default: an encode stuck in CUDA, or one that outlives its
lease, is stopped by killing the process (the OS frees its VRAM); the next call starts a new
process and loads the model again. The CPU fallback embedder stays in-process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .._exceptions import ConfigError, EmbedderUnavailable, EmbeddingError
from ..worker import WorkerProcess
from ._engines import LOCAL_ENGINES, create_local_embedder
from ._on_device import ModelOnDevice
from ._tokens import check_token_ids

if TYPE_CHECKING:
    from ._protocol import Vectors

__all__ = ["EngineHost", "ProcessEmbedder"]

_HOST = "gpuguard.embed._process:EngineHost"


class EngineHost:
    """The child's half: builds the engine when the worker starts.

    ``device="auto"`` is resolved here; the model loads on the first call that needs it.
    """

    def __init__(self, engine: str, model: str | None, device: str) -> None:
        self._embedder = create_local_embedder(engine, model=model, device=device)

    def device(self) -> str:
        """Where the model runs: ``cuda``, ``mps`` or ``cpu`` (``auto`` resolved)."""
        return self._embedder.device

    def dimension(self) -> int:
        """Load the model (once) and return its vector size."""
        return self._embedder.load_blocking()

    def encode(self, texts: list[str]) -> Vectors:
        """Normalised vectors for a non-empty batch."""
        self._embedder.load_blocking()
        return self._embedder.embed_blocking(texts)

    def vocab_size(self) -> int:
        """The tokenizer's vocabulary size."""
        return self._embedder.vocab_size_blocking()

    def decode(self, ids: list[list[int]]) -> list[str]:
        """The texts of arrays of ids already checked against the vocabulary."""
        return self._embedder.decode_blocking(ids)

    def close(self) -> None:
        """Free the model before the process exits."""
        self._embedder.unload_blocking()


class ProcessEmbedder(ModelOnDevice):
    """Runs a local engine (``sentence-transformers``, ``fastembed``) in a worker process.

    ``name`` and ``device`` describe the model (as the in-process engine would);
    ``engine``, ``model`` and ``device`` are passed to
    :func:`~gpuguard.embed.create_embedder` in the child. ``device="auto"`` is resolved
    there (torch is asked only in the child): :attr:`device` says ``auto`` until the worker
    has started, then where the model runs. ``load_timeout_s`` bounds a load
    and ``embed_timeout_s`` (``None``: no limit) one batch; past either the process is
    killed. :meth:`abort` kills it at once.
    """

    def __init__(
        self,
        engine: str,
        *,
        name: str,
        model: str | None = None,
        device: str = "cpu",
        load_timeout_s: float = 600.0,
        embed_timeout_s: float | None = None,
    ) -> None:
        if engine not in LOCAL_ENGINES:
            raise ConfigError(
                f"only {', '.join(LOCAL_ENGINES)} run in a worker process, not {engine!r}"
            )
        if load_timeout_s <= 0 or (embed_timeout_s is not None and embed_timeout_s <= 0):
            raise ConfigError("load_timeout_s and embed_timeout_s must be positive")
        super().__init__(name=name, device=device)
        self._load_timeout_s = load_timeout_s
        self._embed_timeout_s = embed_timeout_s
        self._worker = WorkerProcess(_HOST, (engine, model, device), name=f"embedder:{name}")

    @property
    def worker(self) -> WorkerProcess:
        """The worker process the model runs in."""
        return self._worker

    async def probe_device(self) -> str:
        """Start the worker (without loading the model) and return where the model runs."""
        if self._device == "auto" or not self._worker.alive:
            self._device = await self._in_worker("device", "starting the engine")
        return self._device

    async def load(self) -> int:
        """Start the worker, load the model there, and return the dimension."""
        if self._dimension is not None and self._worker.alive:
            return self._dimension
        await self.probe_device()
        dimension: int = await self._in_worker("dimension", "loading")
        self._dimension = dimension
        return dimension

    async def _in_worker(self, method: str, doing: str) -> Any:
        """``method``'s answer, the worker started first, both within the load timeout."""
        deadline = asyncio.get_running_loop().time() + self._load_timeout_s
        try:
            async with asyncio.timeout_at(deadline):
                await self._worker.start()
            left = deadline - asyncio.get_running_loop().time()
            return await self._worker.call(method, timeout_s=max(left, 0.001))
        except TimeoutError as exc:
            raise EmbedderUnavailable(
                f"{doing} {self._name!r} on {self._device} took longer than "
                f"{self._load_timeout_s}s; the loading process was killed"
            ) from exc
        except EmbeddingError:
            raise
        except Exception as exc:
            raise self._load_failed(exc) from exc

    async def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed ``texts`` in the worker (starting it and loading the model if needed)."""
        await self.load()
        batch = list(texts)
        if not batch:
            return self._no_vectors()
        try:
            vectors: Vectors = await self._worker.call(
                "encode", batch, timeout_s=self._embed_timeout_s
            )
        except TimeoutError as exc:
            raise EmbeddingError(
                f"{self._name!r} on {self._device} took longer than {self._embed_timeout_s}s "
                f"to embed {len(batch)} text(s); the worker process was killed"
            ) from exc
        except EmbeddingError:
            raise
        except Exception as exc:  # the worker crashed or was killed meanwhile
            raise self._embed_failed(len(batch), exc) from exc
        return vectors

    async def decode(self, ids: Sequence[Sequence[int]]) -> list[str]:
        """Decode token arrays with the child's tokenizer (the ids are checked here first)."""
        await self.load()
        arrays = [list(array) for array in ids]
        vocab_size: int = await self._worker.call("vocab_size")
        check_token_ids(self._name, vocab_size, arrays)
        texts: list[str] = await self._worker.call("decode", arrays)
        return texts

    async def abort(self) -> None:
        """Kill the worker process (returns once it is reaped); the next call restarts it."""
        await self._worker.kill()

    async def aclose(self) -> None:
        """Stop the worker process, freeing the model and all its memory."""
        await self._worker.stop()
        self._dimension = None

    def __repr__(self) -> str:
        return f"ProcessEmbedder(name={self._name!r}, device={self._device!r}, {self._worker!r})"
