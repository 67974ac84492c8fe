"""The models kept loaded on the GPU: which, since when used, and how each is unloaded."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Collection, Iterator
from dataclasses import dataclass

from .._events import Priority
from ..guard import Lease

__all__ = ["Resident", "ResidentModels", "Unload"]


Unload = Callable[[Lease, str], Awaitable[None]]
"""Unloads a resident model as work of the lease, publishing the reason given."""


class ResidentModels(Collection[str]):
    """The models this process keeps loaded on the GPU, with when each was last used.

    The gateway adds a model when it loads and drops it when it unloads; the budget policy
    reads the same object (``Budget(resident=...)``) and counts each by its footprint.
    """

    def __init__(self) -> None:
        self._uses: dict[str, int] = {}
        self._counter = itertools.count()

    def add(self, model: str) -> None:
        """``model`` is loaded (and used now)."""
        self._uses[model] = next(self._counter)

    def used(self, model: str) -> None:
        """``model`` served a request now (if it is loaded)."""
        if model in self._uses:
            self.add(model)

    def discard(self, model: str) -> None:
        """``model`` is no longer loaded."""
        self._uses.pop(model, None)

    def last_used(self, model: str) -> int:
        """``model``'s rank in recency: lower was used longer ago (-1: not loaded)."""
        return self._uses.get(model, -1)

    def __contains__(self, model: object) -> bool:
        return model in self._uses

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._uses))

    def __len__(self) -> int:
        return len(self._uses)

    def __repr__(self) -> str:
        return f"<ResidentModels {sorted(self._uses)!r}>"


@dataclass(frozen=True, slots=True)
class Resident:
    """A model kept loaded that may be unloaded to make room.

    ``priority`` is its chats' lease priority and ``last_used`` its rank in recency (lower:
    used longer ago); both order the unloads. ``unload`` frees it under a lease.
    """

    name: str
    priority: Priority
    last_used: int
    unload: Unload
