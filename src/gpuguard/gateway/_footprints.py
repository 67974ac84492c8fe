"""Measuring what a model load takes on the GPU, for the budget policy to count.

The gateway reads this process's GPU memory before and after each load it makes (under
the lease: no other load or unload runs meanwhile) and hands the difference to a
:class:`Footprints` book (:class:`gpuguard.devices.FootprintBook` in production), which the
budget policy reads as the model's footprint from then on. Each load logs the prediction
beside the measurement once. A GPU that cannot be read, or a load that took nothing in this
process (an engine in another process, a model already resident), is logged and remembers
nothing: a measurement never fails a load.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from .._exceptions import DevicesUnavailable

__all__ = ["FootprintMeter", "Footprints"]

logger = logging.getLogger("gpuguard.gateway")

MIB = 1024 * 1024


class Footprints(Protocol):
    """Where measured footprints are kept, and what was predicted for a model."""

    def get(self, key: str, /) -> int | None:
        """The footprint counted for model ``key`` (configured or measured), if any."""

    def predicted(self, model: str) -> int | None:
        """The prediction for ``model`` before it was measured, if one can be made."""

    def remember(self, model: str, used_bytes: int) -> None:
        """Keep ``used_bytes`` as what loading ``model`` takes."""


@dataclass(frozen=True, slots=True)
class FootprintMeter:
    """``book`` keeps what loads take; ``read`` is this process's GPU memory now (bytes).

    ``read`` may raise :class:`~gpuguard.DevicesUnavailable`.
    """

    book: Footprints
    read: Callable[[], int]

    async def measure(self, model: str, load: Callable[[], Awaitable[None]]) -> None:
        """Run ``load`` (loading ``model``), measuring and remembering what it took."""
        before = self._read_quietly(model)
        await load()
        after = None if before is None else self._read_quietly(model)
        if before is None or after is None:
            return
        self._note(model, after - before)

    def _read_quietly(self, model: str) -> int | None:
        try:
            return self.read()
        except DevicesUnavailable as exc:
            logger.warning(
                "the load of %r is not measured: the GPU cannot be read (%s)", model, exc
            )
            return None

    def _note(self, model: str, used: int) -> None:
        predicted = self.book.predicted(model)
        guess = "no prediction" if predicted is None else f"predicted {predicted / MIB:.0f} MiB"
        if used <= 0:
            logger.info(
                "loaded %r (%s): it took no GPU memory in this process (the engine runs in "
                "another process, or the model was resident): footprint not measured",
                model,
                guess,
            )
            return
        logger.info("loaded %r: %s, measured %.0f MiB", model, guess, used / MIB)
        self.book.remember(model, used)
