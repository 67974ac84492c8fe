"""The embedded backend's tokenizer: read once, used by one thread at a time."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from gpuguard.llm import _llama_tokens
from gpuguard.llm._llama_tokens import LlamaTokenizer


class _Vocabulary:
    """A vocab-only ``Llama`` that notices two threads inside it at once."""

    loads = 0
    inside = 0
    overlapped = False
    lock = threading.Lock()
    release = threading.Event()

    def __init__(self, **_: Any) -> None:
        self._enter()
        try:
            type(self).loads += 1
        finally:
            self._leave()
        self.metadata: dict[str, str] = {}

    @classmethod
    def _enter(cls) -> None:
        with cls.lock:
            cls.inside += 1
            cls.overlapped |= cls.inside > 1
        cls.release.wait(timeout=5)

    @classmethod
    def _leave(cls) -> None:
        with cls.lock:
            cls.inside -= 1

    def tokenize(self, text: bytes, **_: Any) -> list[int]:
        self._enter()
        try:
            return list(text)
        finally:
            self._leave()

    def close(self) -> None:
        pass


async def test_concurrent_counts_load_the_vocabulary_once_and_never_overlap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(
        _llama_tokens, "import_llama_cpp", lambda: SimpleNamespace(Llama=_Vocabulary)
    )
    tokenizer = LlamaTokenizer(Path("model.gguf"), n_ctx=64, model="tiny")
    counts = asyncio.gather(*(tokenizer.text_tokens("abc") for _ in range(4)))
    await asyncio.sleep(0)
    _Vocabulary.release.set()  # each call was free to start its thread: none may overlap
    assert await counts == [3, 3, 3, 3]
    assert _Vocabulary.loads == 1
    assert _Vocabulary.overlapped is False
    await tokenizer.aclose()
