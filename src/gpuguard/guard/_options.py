"""The guard's option types: the :data:`DEFAULT` sentinel, timeouts and ``on_hang``.

Kept apart from the guard so that the lease, the hung-lease handling and the front share one
definition and one check of what a valid timeout is.
"""

from __future__ import annotations

import enum
from typing import Final, Literal

__all__ = ["DEFAULT", "DefaultType", "OnHang", "Timeout", "check_option", "check_timeout"]


class DefaultType(enum.Enum):
    """The type of :data:`DEFAULT`."""

    DEFAULT = "DEFAULT"

    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT: Final = DefaultType.DEFAULT
"""Sentinel: use the guard's configured value. ``None`` means "no limit"."""

Timeout = float | None | Literal[DefaultType.DEFAULT]

OnHang = Literal["quarantine", "release"]
"""What a hung holder does to the GPU: keep it until its work ends, or hand it on at once."""


def check_option(value: Timeout, name: str) -> None:
    """Reject an impossible timeout option at once (:data:`DEFAULT` is always valid)."""
    if value is not DEFAULT:
        check_timeout(value, name)


def check_timeout(value: float | None, name: str) -> float | None:
    """``value`` if it is a valid timeout (seconds >= 0, or ``None``), else ``ValueError``."""
    # ``not value >= 0`` also rejects NaN, which would never compare as due.
    if value is not None and not value >= 0:
        raise ValueError(f"{name} must be >= 0 seconds, or None for no limit")
    return value
