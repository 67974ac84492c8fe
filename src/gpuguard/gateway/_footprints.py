"""Measuring what model loads and embedding batches take on the GPU, for the budget to count.

The gateway reads this process's GPU memory, on the GPU the work runs on, before and after
each load it makes (under the lease: no other load or unload runs meanwhile) and hands the
difference to a :class:`Footprints` book (:class:`gpuguard.devices.FootprintBook` in
production), which the budget policy reads as the model's footprint from then on. Each load
logs the prediction beside the measurement once. A GPU that cannot be read, or a load that
took nothing in this process (an engine in another process, a model already resident), is
logged and remembers nothing: a measurement never fails a load.

An embedding batch on the GPU is measured the same way (:meth:`FootprintMeter.batch`): what
the batch added over the memory before it, the largest seen kept as the model's batch
footprint, and declared by every later batch of that model (:class:`MeteredGuard`): the
model's footprint plus its batch's (a configured ``vram_mb`` is the whole figure). A GPU
that cannot be read is logged once per GPU and measures nothing: a measurement never fails
a batch.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Protocol

from .._events import Priority
from .._exceptions import DevicesUnavailable
from ..guard import DEFAULT, GpuGuard, Hold, HolderInfo, Lease, Timeout

__all__ = ["FootprintMeter", "Footprints", "MeteredGuard"]

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

    def measured_batch(self, model: str) -> int | None:
        """What one embedding batch of ``model`` was measured to add, if known."""

    def batch_need(self, model: str) -> int | None:
        """What one embedding batch of ``model`` needs on the GPU (``None``: not known)."""

    def remember_batch(self, model: str, used_bytes: int) -> None:
        """Keep ``used_bytes`` as what one embedding batch of ``model`` adds."""


@dataclass(frozen=True, slots=True)
class FootprintMeter:
    """Measures loads and batches: ``book`` keeps what they take, ``read`` reads the GPU.

    ``read(gpu)`` is this process's GPU memory on GPU ``gpu`` (its NVML index) now, in
    bytes; it may raise :class:`~gpuguard.DevicesUnavailable`.
    """

    book: Footprints
    read: Callable[[int], int]
    _silent: set[int] = field(default_factory=set, init=False, repr=False, compare=False)

    async def measure(
        self, model: str, load: Callable[[], Awaitable[None]], *, gpu: int = 0
    ) -> None:
        """Run ``load`` (loading ``model`` on GPU ``gpu``), measuring and remembering it."""
        before = self._read_for_load(model, gpu)
        await load()
        after = None if before is None else self._read_for_load(model, gpu)
        if before is None or after is None:
            return
        self._note(model, after - before)

    @asynccontextmanager
    async def batch(self, model: str, *, gpu: int = 0) -> AsyncIterator[None]:
        """Measure the body, one embedding batch of ``model`` on GPU ``gpu``, as its batch.

        What the batch added is kept when it is more than any batch of ``model`` added
        before (a smaller one never lowers it: the engine's allocator keeps what the
        largest batch reserved). A body that raises is not measured.
        """
        before = self._read_for_batch(model, gpu)
        yield
        after = None if before is None else self._read_for_batch(model, gpu)
        if before is None or after is None:
            return
        known = self.book.measured_batch(model)
        if after - before > (0 if known is None else known):
            logger.info("an embedding batch of %r measured %.0f MiB", model, (after - before) / MIB)
            self.book.remember_batch(model, after - before)

    def _read_for_load(self, model: str, gpu: int) -> int | None:
        try:
            return self.read(gpu)
        except DevicesUnavailable as exc:
            logger.warning(
                "the load of %r is not measured: GPU %d cannot be read (%s)", model, gpu, exc
            )
            return None

    def _read_for_batch(self, model: str, gpu: int) -> int | None:
        try:
            memory = self.read(gpu)
        except DevicesUnavailable as exc:
            if gpu not in self._silent:
                self._silent.add(gpu)
                logger.warning(
                    "embedding batches of %r on GPU %d are not measured: it cannot be read (%s)",
                    model,
                    gpu,
                    exc,
                )
            return None
        self._silent.discard(gpu)
        return memory

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


class MeteredGuard:
    """One GPU's guard as GPU embedding uses it: each batch declared and measured.

    A batch's lease (:meth:`batch_hold` for an embedding request, :meth:`try_hold` for bulk
    embedding's batches) declares what ``meter``'s book knows a batch of its model needs
    (:meth:`Footprints.batch_need`), and the batch is measured on GPU ``gpu``
    (:meth:`FootprintMeter.batch`). ``hold``, which embedding takes for its model's loads,
    passes through: a load is measured as a load. Without a meter (no GPU to read) every
    lease passes through.
    """

    def __init__(self, guard: GpuGuard, gpu: int, meter: FootprintMeter | None) -> None:
        self.name = guard.name
        self.events = guard.events
        self.clock = guard.clock
        self.guard, self.gpu, self._meter = guard, gpu, meter

    @property
    def current(self) -> HolderInfo | None:
        """The operation holding the GPU, or None."""
        return self.guard.current

    def hold(
        self,
        operation: str,
        *,
        model: str | None = None,
        priority: Priority = Priority.NORMAL,
        hold_timeout: Timeout = DEFAULT,
    ) -> AbstractAsyncContextManager[Lease]:
        """The guard's own :meth:`~gpuguard.GpuGuard.hold` (a model load's)."""
        return self.guard.hold(operation, model=model, priority=priority, hold_timeout=hold_timeout)

    def batch_hold(
        self,
        operation: str,
        *,
        model: str,
        priority: Priority,
        wait_timeout: Timeout,
        hold_timeout: Timeout,
    ) -> AbstractAsyncContextManager[Lease]:
        """:meth:`~gpuguard.GpuGuard.hold` for one batch of ``model``, declared and measured."""
        hold = self.guard.hold(
            operation,
            model=model,
            priority=priority,
            wait_timeout=wait_timeout,
            hold_timeout=hold_timeout,
            memory_bytes=self._need(model),
        )
        return self._measured(hold, model)

    def try_hold(
        self,
        operation: str,
        *,
        model: str | None = None,
        priority: Priority = Priority.BACKGROUND,
        hold_timeout: Timeout = DEFAULT,
    ) -> AbstractAsyncContextManager[Lease]:
        """:meth:`~gpuguard.GpuGuard.try_hold` for one batch of ``model``, declared and measured."""
        hold = self.guard.try_hold(
            operation,
            model=model,
            priority=priority,
            hold_timeout=hold_timeout,
            memory_bytes=None if model is None else self._need(model),
        )
        return hold if model is None else self._measured(hold, model)

    def _need(self, model: str) -> int | None:
        return None if self._meter is None else self._meter.book.batch_need(model)

    @asynccontextmanager
    async def _measured(self, hold: Hold, model: str) -> AsyncIterator[Lease]:
        measured = nullcontext() if self._meter is None else self._meter.batch(model, gpu=self.gpu)
        async with hold as lease, measured:
            yield lease

    def __repr__(self) -> str:
        return f"<MeteredGuard {self.name!r} gpu={self.gpu}>"
