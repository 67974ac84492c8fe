"""The one interface every admission policy implements."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from .._tickets import Grant, Ticket

__all__ = ["Policy"]


class Policy(Protocol):
    """Decides whether a ticket may be granted beside the grants that hold now."""

    @property
    def name(self) -> str:
        """How snapshots, logs and settings name the policy (``exclusive``)."""

    def admits(self, holders: Sequence[Grant], ticket: Ticket) -> bool:
        """True if ``ticket`` may start now beside ``holders`` (every current grant)."""
