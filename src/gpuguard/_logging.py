"""Every gpuguard log record made safe where records are made: one line, no secrets.

gpuguard's modules log through plain ``logging.getLogger("gpuguard....")`` loggers and never
configure handlers (a library must not). So that no handler, ours or the application's, can
write a forged line or a password, :func:`install` wraps the logging module's record factory:
for records of the ``gpuguard`` logger tree only, each argument (and a message that is not a
constant format) is passed through :func:`~gpuguard._redact.redact` and
:func:`~gpuguard._redact.escape_control` before any handler formats it. Numbers stay numbers,
so ``%d``/``%.3f`` formats keep working; tracebacks (``exc_info``) are left as they are.
Installing twice is harmless; a record factory installed later by the application is
chained, not replaced, as long as it calls the one it found.
"""

from __future__ import annotations

import logging
from typing import Any

from ._redact import escape_control, redact

__all__ = ["install", "safe_log_value"]

_LOGGER_TREE = "gpuguard"


def safe_log_value(value: object) -> object:
    """``value`` fit for a log line: numbers as they are, anything else as safe text."""
    if value is None or isinstance(value, bool | int | float):
        return value
    return escape_control(redact(str(value)))


def install() -> None:
    """Wrap the current log record factory so that gpuguard's records are made safe."""
    current = logging.getLogRecordFactory()
    if getattr(current, "_gpuguard_safe", False):
        return

    def make_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = current(*args, **kwargs)
        name = record.name
        if name == _LOGGER_TREE or name.startswith(_LOGGER_TREE + "."):
            _make_safe(record)
        return record

    make_record._gpuguard_safe = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(make_record)


def _make_safe(record: logging.LogRecord) -> None:
    args = record.args
    if isinstance(args, tuple):
        record.args = tuple(safe_log_value(arg) for arg in args)
    elif isinstance(args, dict):
        record.args = {key: safe_log_value(value) for key, value in args.items()}
    if not args:
        # A message logged without arguments may itself carry a caller's value.
        record.msg = safe_log_value(record.msg)
