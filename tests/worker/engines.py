"""Engines that tests run inside a worker process (imported there by name)."""

from __future__ import annotations

import ctypes
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path


class Engine:
    """Echoes, counts, fails, crashes or hangs on request."""

    def __init__(self, marker: str | None = None) -> None:
        self.produced = 0
        self.closed = False
        if marker is not None:
            Path(marker).write_text(str(os.getpid()))

    def echo(self, value: object) -> object:
        return value

    def env(self, name: str) -> str | None:
        return os.environ.get(name)

    def pid(self) -> int:
        return os.getpid()

    def fail(self) -> None:
        raise ValueError("bad input")

    def count(self, n: int | None = None) -> Iterator[int]:
        i = 0
        while n is None or i < n:
            self.produced += 1
            yield i
            i += 1

    def count_until_closed(self, marker: str) -> Iterator[int]:
        """Count for ever; ``marker`` appears once the iterator has been closed."""
        try:
            yield from self.count()
        finally:
            Path(marker).touch()

    def how_many(self) -> int:
        return self.produced

    def hang(self) -> Iterator[str]:
        yield "started"
        time.sleep(3600)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def block_until(self, started: str, release: str, finished: str) -> None:
        Path(started).touch()
        while not Path(release).exists():
            time.sleep(0.01)
        Path(finished).touch()

    def crash(self) -> None:
        print("dying now", file=sys.stderr, flush=True)
        os._exit(3)

    def segfault(self) -> None:
        ctypes.string_at(0)

    def unpicklable(self) -> object:
        return lambda: None

    def hold_gil(self, marker: str, seconds: int) -> None:
        """Sleep in C *with* the GIL held (a PyDLL call): no other Python thread here runs."""
        Path(marker).write_text(str(os.getpid()))
        ctypes.PyDLL(None).sleep(seconds)

    def close(self) -> None:
        self.closed = True


def build(marker: str | None = None) -> Engine:
    return Engine(marker)


def build_slowly(marker: str) -> Engine:
    Path(marker).write_text(str(os.getpid()))
    time.sleep(3600)
    return Engine()


def build_failing() -> Engine:
    raise RuntimeError("no model here")
