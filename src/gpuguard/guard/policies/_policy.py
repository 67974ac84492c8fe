"""The one interface every admission policy implements."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from .._tickets import GpuBudget, Grant, Ticket

__all__ = ["Policy"]


class Policy(Protocol):
    """Decides whether a ticket may be granted beside the grants that hold now."""

    @property
    def name(self) -> str:
        """How snapshots, logs and settings name the policy (``exclusive``)."""

    def admits(self, holders: Sequence[Grant], ticket: Ticket) -> bool:
        """True if ``ticket`` may start now beside ``holders`` (every current grant)."""

    def need(self, ticket: Ticket) -> int | None:
        """The GPU memory the policy counts for ``ticket`` (``None``: unknown)."""

    def memory(self, holders: Sequence[Grant]) -> GpuBudget | None:
        """The GPU's memory as counted beside ``holders``; ``None`` if the policy counts none."""
