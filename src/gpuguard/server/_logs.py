"""The server's recent log lines, kept in memory for ``GET /admin/logs`` and the web page.

:class:`LogRing` is a :mod:`logging` handler with a bounded deque: the oldest line is
dropped when it is full, so it never grows. Each record is formatted once, with its
secrets masked, when it is emitted. The lines are shown to callers, so a record marked
:func:`~gpuguard._redact.operator_only` is kept with its public words, never the
operator's detail (a driver's "connection refused" would make the server a port scanner).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

from .._redact import PUBLIC_MESSAGE, escape_control, redact

__all__ = ["LogLine", "LogRing"]


@dataclass(frozen=True, slots=True)
class LogLine:
    """One log record as shown: when, how bad, which logger, what (secrets masked)."""

    seq: int
    timestamp: float
    level: str
    logger: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


class LogRing(logging.Handler):
    """Keeps the last ``capacity`` records of the loggers it is attached to.

    Attach it with :meth:`attach` (to the ``gpuguard`` logger by default) and remove it with
    :meth:`detach`; :meth:`lines` filters by minimum level, logger prefix and text.
    """

    def __init__(self, capacity: int = 1000, *, level: int = logging.INFO) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        super().__init__(level)
        self._lines: deque[LogLine] = deque(maxlen=capacity)
        self._seq = 0
        self._guard = threading.Lock()  # records arrive from worker threads too
        self._attached: list[tuple[logging.Logger, int]] = []

    def emit(self, record: logging.LogRecord) -> None:
        """Keep ``record`` (the :mod:`logging` machinery calls this)."""
        try:
            public = getattr(record, PUBLIC_MESSAGE, None)
            if public is not None:
                message = escape_control(str(public))
            else:
                message = record.getMessage()
                if record.exc_info and record.exc_info[1] is not None:
                    error = record.exc_info[1]
                    message = f"{message}: {type(error).__name__}: {error}"
            line = redact(message)
        except Exception:
            self.handleError(record)
            return
        with self._guard:
            self._seq += 1
            self._lines.append(
                LogLine(self._seq, record.created, record.levelname, record.name, line)
            )

    def lines(
        self,
        *,
        level: int = logging.NOTSET,
        logger: str = "",
        contains: str = "",
        after: int = 0,
        limit: int | None = None,
    ) -> list[LogLine]:
        """The kept lines, oldest first: the last ``limit`` of those that match.

        A line matches at ``level`` or worse, from a logger under ``logger``, containing
        ``contains`` (case-insensitive), and newer than sequence number ``after``.
        """
        needle = contains.lower()
        with self._guard:
            kept = list(self._lines)
        chosen = [
            line
            for line in kept
            if line.seq > after
            and logging.getLevelName(line.level) >= level
            and (not logger or line.logger == logger or line.logger.startswith(f"{logger}."))
            and (not needle or needle in line.message.lower())
        ]
        if limit is not None:
            chosen = chosen[max(0, len(chosen) - limit) :] if limit > 0 else []
        return chosen

    def attach(self, *names: str) -> None:
        """Start collecting the records of the loggers ``names`` (default ``gpuguard``).

        A logger that lets less through than this handler's level (a fresh one lets only
        warnings through) is opened to it until :meth:`detach`.
        """
        for name in names or ("gpuguard",):
            target = logging.getLogger(name)
            self._attached.append((target, target.level))
            target.addHandler(self)
            if target.getEffectiveLevel() > self.level:
                target.setLevel(self.level)

    def detach(self) -> None:
        """Stop collecting and restore the loggers' levels (the kept lines stay readable)."""
        for target, level in reversed(self._attached):
            target.removeHandler(self)
            target.setLevel(level)
        self._attached.clear()

    def __repr__(self) -> str:
        return f"<LogRing kept={len(self._lines)}/{self._lines.maxlen}>"
