"""Fencing tokens checked: the newest fence seen for one GPU refuses work under an older one.

A scope that issues fences (Redis) gives every grant a token larger than any before it. A
holder whose lease lapsed (stopped, cut off) may still send work; a newer holder's work
carries a newer token. Where gpuguard is the last hop before the GPU (the lease's own GPU
work, ``gpuguard serve`` in front of a shared GPU server), :class:`FenceBook` remembers the
newest token seen and refuses an older one with :class:`~gpuguard.StaleFence`. Equal or
newer tokens pass; work without a token (scopes that issue none) is not fenced.

Under a sharing policy several grants hold at once, each with its own token: a grant also
names its *floor*, the oldest token still holding when it was granted, and the book refuses
only tokens below the highest floor seen. A grant made beside an older one keeps that one
valid; a grant made after an older one lapsed (its bytes no longer counted) raises the floor
past it. Under the exclusive policy the floor is the token itself: the newest-wins rule.

GPU work a fenced lease runs carries its token onward: :func:`under_fence` runs it with the
token in a context variable, and an HTTP client of an LLM server sends
:func:`fence_headers` (``X-GPU-Fence: <gpu>:<token>``) with each request, so that a
``gpuguard serve`` behind this process can check it too.
"""

from __future__ import annotations

from collections.abc import Awaitable
from contextvars import ContextVar
from typing import TypeVar

from .._exceptions import StaleFence

__all__ = ["FENCE_HEADER", "FenceBook", "fence_headers", "under_fence"]

R = TypeVar("R")

FENCE_HEADER = "X-GPU-Fence"
"""The request header that carries the sender's GPU name and fencing token."""

_CURRENT: ContextVar[str | None] = ContextVar("gpuguard_fence", default=None)


async def under_fence(work: Awaitable[R], gpu: str, fence: int, floor: int | None = None) -> R:
    """Await ``work`` with ``gpu``'s fencing token ``fence`` as the one it carries onward.

    A ``floor`` below ``fence`` travels with it (``<gpu>:<token>:<floor>``).
    """
    value = f"{gpu}:{fence}" if floor is None or floor >= fence else f"{gpu}:{fence}:{floor}"
    token = _CURRENT.set(value)
    try:
        return await work
    finally:
        _CURRENT.reset(token)


def fence_headers() -> dict[str, str]:
    """``{FENCE_HEADER: "<gpu>:<token>"}`` inside fenced GPU work (:func:`under_fence`), else {}."""
    value = _CURRENT.get()
    return {} if value is None else {FENCE_HEADER: value}


class FenceBook:
    """The newest fencing token seen for one GPU (``gpu``), and the check against it."""

    def __init__(self, gpu: str) -> None:
        self.gpu = gpu
        self._newest: int | None = None
        self._floor: int | None = None

    @property
    def newest(self) -> int | None:
        """The newest token admitted so far (None before the first)."""
        return self._newest

    def admit(
        self, fence: int, *, operation: str, model: str | None = None, floor: int | None = None
    ) -> None:
        """Let work under ``fence`` go to the GPU, or raise :class:`StaleFence` if taken over.

        ``floor`` (default: ``fence``) is the oldest token still holding when ``fence`` was
        granted: from then on tokens below it are refused.
        """
        if self._floor is not None and fence < self._floor:
            raise StaleFence(
                operation=operation, model=model, gpu=self.gpu, fence=fence, newest=self._floor
            )
        floor = fence if floor is None else min(floor, fence)
        self._floor = floor if self._floor is None else max(self._floor, floor)
        self._newest = fence if self._newest is None else max(self._newest, fence)

    def __repr__(self) -> str:
        return f"<FenceBook {self.gpu!r} newest={self._newest}>"
