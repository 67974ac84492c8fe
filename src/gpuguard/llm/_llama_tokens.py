"""Counting tokens for the embedded llama.cpp backend, with the model's own tokenizer.

The tokenizer is a vocab-only ``llama_cpp.Llama`` read in this process (no weights, no GPU
memory), so counting never needs the GPU lease or the worker process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._exceptions import BackendUnavailable, ModelLoadFailed
from ..guard import in_thread
from ._protocol import ChatMessage

__all__ = ["KIND", "LlamaTokenizer", "import_llama_cpp", "llama_cpp_missing"]

KIND = "llama-cpp"


def llama_cpp_missing(model: str | None = None) -> BackendUnavailable:
    """The error for an install without llama-cpp-python, saying how to add it."""
    return BackendUnavailable(
        "llama-cpp: llama-cpp-python is not installed (pip install 'gpuguard[llamacpp]')",
        backend=KIND,
        model=model,
    )


def import_llama_cpp() -> Any:
    """The ``llama_cpp`` module, or :func:`llama_cpp_missing` raised."""
    try:
        import llama_cpp
    except ImportError as exc:
        raise llama_cpp_missing() from exc
    return llama_cpp


class LlamaTokenizer:
    """The tokenizer of the GGUF at ``path``, read on first use, counted off the event loop.

    One thread at a time reads or uses it: two chats counting at once must not load the
    vocabulary twice side by side (llama.cpp's loader is not safe to run concurrently, and
    a second copy is memory for nothing), nor call into one ``Llama`` from two threads.
    """

    def __init__(self, path: Path, *, n_ctx: int, model: str) -> None:
        self._path = path
        self._n_ctx = n_ctx
        self._model = model
        self._llama: Any = None
        self._turn = asyncio.Lock()

    async def prompt_tokens(self, messages: Sequence[ChatMessage]) -> int:
        """Tokens of the prompt llama-cpp-python builds for ``messages``."""
        async with self._turn:
            return await in_thread(_prompt_tokens, await self._vocabulary(), messages)

    async def text_tokens(self, text: str) -> int:
        """Tokens of ``text`` alone (a generated answer)."""
        async with self._turn:
            return await in_thread(_text_tokens, await self._vocabulary(), text)

    async def aclose(self) -> None:
        """Free the tokenizer, if it was read."""
        llama, self._llama = self._llama, None
        if llama is not None:
            await in_thread(llama.close)

    async def _vocabulary(self) -> Any:
        if self._llama is None:
            self._llama = await in_thread(self._read)
        return self._llama

    def _read(self) -> Any:
        llama_cpp = import_llama_cpp()
        try:
            return llama_cpp.Llama(
                model_path=str(self._path),
                n_gpu_layers=0,
                n_ctx=self._n_ctx,
                verbose=False,
                vocab_only=True,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelLoadFailed(
                f"llama-cpp: cannot read the tokenizer of {self._path}: {exc}",
                backend=KIND,
                model=self._model,
            ) from exc


def _prompt_tokens(llama: Any, messages: Sequence[ChatMessage]) -> int:
    """Tokens of the prompt llama-cpp-python builds: the GGUF's chat template, tokenized."""
    template = (getattr(llama, "metadata", None) or {}).get("tokenizer.chat_template")
    if not template:
        text = "\n".join(m.content for m in messages)
        return len(llama.tokenize(text.encode("utf-8"), add_bos=True, special=True))
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    def special(token: int) -> str:
        return (
            "" if token < 0 else llama.detokenize([token], special=True).decode("utf-8", "replace")
        )

    formatter = Jinja2ChatFormatter(
        template=template,
        eos_token=special(llama.token_eos()),
        bos_token=special(llama.token_bos()),
    )
    wire: list[Any] = [m.to_dict() for m in messages]
    prompt = formatter(messages=wire)
    return len(
        llama.tokenize(
            prompt.prompt.encode("utf-8"), add_bos=not prompt.added_special, special=True
        )
    )


def _text_tokens(llama: Any, text: str) -> int:
    return len(llama.tokenize(text.encode("utf-8"), add_bos=False, special=False)) if text else 0
