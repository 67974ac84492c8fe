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
    """One ``llama_cpp.Llama``, loaded when the worker starts.

    ``repeat_last_n`` (how far back the repeat penalty looks) is the model's
    ``last_n_tokens_size`` in llama-cpp-python, read each time a generation builds its
    sampler: a chat that asks for it sets it for its own generation, and the next chat
    finds the loaded value again.

    ``main_gpu`` pins the model to that GPU (``split_mode`` none: every layer on it);
    ``None`` leaves llama.cpp's default placement.
    """

    def __init__(
        self,
        model_path: str,
        n_gpu_layers: int,
        n_ctx: int,
        embedding: bool,
        main_gpu: int | None = None,
    ) -> None:
        import llama_cpp

        pinned: dict[str, Any] = {}
        if main_gpu is not None:
            pinned = {"main_gpu": main_gpu, "split_mode": llama_cpp.LLAMA_SPLIT_MODE_NONE}
        self._llama: Any = llama_cpp.Llama(
            model_path=model_path,
            n_gpu_layers=n_gpu_layers,
            n_ctx=n_ctx,
            embedding=embedding,
            verbose=False,
            **pinned,
        )
        self._last_n = self._llama.last_n_tokens_size

    def chat(self, options: dict[str, Any]) -> Iterator[Any]:
        """``create_chat_completion(stream=True)``: the worker streams its chunks."""
        arguments = dict(options)
        last_n = arguments.pop("repeat_last_n", None)
        if last_n is not None and last_n < 0:
            last_n = self._llama.n_ctx()  # -1: the whole context, as in llama.cpp
        self._llama.last_n_tokens_size = self._last_n if last_n is None else last_n
        chunks: Iterator[Any] = self._llama.create_chat_completion(**arguments)
        return chunks

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text."""
        answer = self._llama.create_embedding(list(texts))
        return [[float(x) for x in row["embedding"]] for row in answer["data"]]

    def close(self) -> None:
        """Free the model before the process exits."""
        self._llama.close()
