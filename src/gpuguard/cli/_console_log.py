"""The server's console: gpuguard's log records at INFO on stderr, as uvicorn and Ollama do.

A library never configures logging; the ``serve`` and ``demo`` commands are the application,
so they do, for as long as they run: one handler on the ``gpuguard`` logger,
``HH:MM:SS LEVEL message``, records made safe by :mod:`gpuguard._logging` before they get here.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["console_logging"]

_FORMAT = "%(asctime)s %(levelname)-7s %(message)s"


@contextmanager
def console_logging(level: int = logging.INFO) -> Iterator[None]:
    """Write the ``gpuguard`` loggers' records at ``level`` and above to stderr meanwhile."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(_FORMAT, datefmt="%H:%M:%S"))
    handler.setLevel(level)
    target = logging.getLogger("gpuguard")
    before = target.level
    target.addHandler(handler)
    if target.getEffectiveLevel() > level:
        target.setLevel(level)
    try:
        yield
    finally:
        target.removeHandler(handler)
        target.setLevel(before)
