"""The exclusive policy: at most one GPU operation at a time.

The safe default, above all on unified-memory machines, where a second model load beside
the first is what makes memory explode.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from .._tickets import GpuBudget, Grant, Ticket

__all__ = ["EXCLUSIVE", "Exclusive"]


class Exclusive:
    """Admit a ticket only while nobody holds the GPU."""

    name: Final = "exclusive"

    def admits(self, holders: Sequence[Grant], ticket: Ticket) -> bool:
        """True only when ``holders`` is empty."""
        return not holders

    def need(self, ticket: Ticket) -> int | None:
        """What ``ticket`` declared, if anything (the policy itself counts no memory)."""
        return ticket.memory_bytes

    def memory(self, holders: Sequence[Grant]) -> GpuBudget | None:
        """``None``: the exclusive policy does not count memory."""
        return None

    def __repr__(self) -> str:
        return "<Exclusive>"


EXCLUSIVE: Final = Exclusive()
"""The one exclusive policy (it has no state)."""
