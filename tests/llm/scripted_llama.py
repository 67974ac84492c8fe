"""A scripted stand-in for ``llama_cpp.Llama``, imported by the worker process.

The model file is the script (JSON): what to record, how long to load, when to stall, fail
or crash while generating.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class Llama:
    """Loads and streams as its model file says."""

    metadata: dict[str, str] = {}  # noqa: RUF012 - no chat template: the prompt is the text

    def __init__(self, *, model_path: str, vocab_only: bool = False, **options: Any) -> None:
        self.script: dict[str, Any] = json.loads(Path(model_path).read_text())
        self.last_n_tokens_size = int(options.get("last_n_tokens_size", 64))  # as llama_cpp
        if vocab_only:  # the backend's tokenizer, in the test process: no script
            return
        if "options_log" in self.script:
            record = {"model_path": model_path, **options}
            Path(self.script["options_log"]).write_text(json.dumps(record))
        if "hold_lock" in self.script:
            # Held for as long as this load runs: a test can see whether a load is still alive.
            with open(self.script["hold_lock"], "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                self._load_slowly()

    def _load_slowly(self) -> None:
        deadline = time.monotonic() + float(self.script.get("load_s", 0))
        release = Path(self.script.get("release", "/nonexistent"))
        while time.monotonic() < deadline and not release.exists():
            time.sleep(0.02)

    def create_chat_completion(self, **options: Any) -> Iterator[dict[str, Any]]:
        yield {"choices": [{"delta": {"role": "assistant"}, "finish_reason": None}]}
        produced = 0
        while True:
            if self.script.get("stall_after") == produced:
                time.sleep(3600)
            if self.script.get("fail_after") == produced:
                raise RuntimeError("llama_decode returned -1")
            if self.script.get("crash_after") == produced:
                os._exit(9)
            produced += 1
            if produced == self.script.get("length"):
                yield {"choices": [{"delta": {}, "finish_reason": "length"}], "model": "m"}
                return
            delta = {"content": f"t{produced} "}
            yield {"choices": [{"delta": delta, "finish_reason": None}], "model": "m"}

    def tokenize(self, text: bytes, add_bos: bool = True, special: bool = False) -> list[int]:
        """One token per word."""
        return list(range(len(text.split()) + add_bos))

    def create_embedding(self, texts: list[str]) -> dict[str, Any]:
        return {"data": [{"embedding": [1.0, float(len(text))]} for text in texts]}

    def close(self) -> None:
        """Nothing to free."""
