"""The half of the embedded llama.cpp backend that runs inside its worker process.

:class:`LlamaHost` is built by the worker (``gpuguard.llm._llama_host:LlamaHost``), so the
model is loaded in the child and its memory (VRAM included) belongs to that process. Errors
are raised as plain library exceptions; the parent maps them to the error tree.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

__all__ = ["LlamaHost"]


class LlamaHost:
    """One ``llama_cpp.Llama``, loaded when the worker starts."""

    def __init__(self, model_path: str, n_gpu_layers: int, n_ctx: int, embedding: bool) -> None:
        import llama_cpp

        self._llama: Any = llama_cpp.Llama(
            model_path=model_path,
            n_gpu_layers=n_gpu_layers,
            n_ctx=n_ctx,
            embedding=embedding,
            verbose=False,
        )

    def chat(self, options: dict[str, Any]) -> Iterator[Any]:
        """``create_chat_completion(stream=True)``: the worker streams its chunks."""
        chunks: Iterator[Any] = self._llama.create_chat_completion(**options)
        return chunks

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text."""
        answer = self._llama.create_embedding(list(texts))
        return [[float(x) for x in row["embedding"]] for row in answer["data"]]

    def close(self) -> None:
        """Free the model before the process exits."""
        self._llama.close()
