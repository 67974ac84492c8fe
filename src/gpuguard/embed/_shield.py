"""Keep GPU work inside its lease even when the task that started it is cancelled."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

__all__ = ["finish_even_if_cancelled"]

R = TypeVar("R")


async def finish_even_if_cancelled(work: Awaitable[R]) -> R:
    """Await ``work``; if cancelled meanwhile, let it finish first, then re-raise."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        if not task.cancelled():
            task.exception()  # mark it retrieved: the cancellation is what matters now
        raise
