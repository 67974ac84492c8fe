"""Bulk embedding's GPU/CPU bookkeeping: a ``fallback`` event per CPU batch, a log line per switch.

The log says "GPU busy, falling back to CPU embeddings" once per switch from GPU to CPU (and
once per switch back), with counts, not once per batch; the bus gets an event for every
batch that ran on the CPU instead of the GPU.
"""

from __future__ import annotations

import logging

from .._events import GpuEvent, GpuStatus, Priority
from ._batches import Device
from ._lease import LeaseGuard

__all__ = ["FALLBACK_MESSAGE", "MODEL_LOADING_REASON", "DeviceSwitches", "report_fallback"]

logger = logging.getLogger("gpuguard.embed")

FALLBACK_MESSAGE = "GPU busy, falling back to CPU embeddings"
MODEL_LOADING_REASON = "the GPU embedding model is still loading"
"""Why a batch fell back while the GPU model waited for, or held, the lease to load."""


class DeviceSwitches:
    """Where the GPU-bound batches of one bulk run went, as the log and the bus hear of it.

    ``operation`` names the run and ``model`` the GPU model in every line and event.
    """

    def __init__(self, guard: LeaseGuard, operation: str, model: str) -> None:
        self._guard = guard
        self._operation = operation
        self._model = model
        self._on_cpu = False  # whether the last GPU-bound batch had to fall back
        self._since_switch = 0  # GPU-bound batches on the current device since the last switch

    def note(self, device: Device, index: int, texts: int, why: str) -> None:
        """Count batch ``index`` of ``texts`` texts; log a switch; report a CPU batch's ``why``."""
        on_cpu = device == "cpu"
        if on_cpu != self._on_cpu:
            before, self._since_switch = self._since_switch, 0
            if on_cpu:
                logger.info(
                    "%s (%s: %s; %d batch(es) on the GPU before)",
                    FALLBACK_MESSAGE,
                    self._operation,
                    why,
                    before,
                )
            else:
                logger.info(
                    "GPU free again, back to GPU embeddings (%s; %d batch(es) on the CPU before)",
                    self._operation,
                    before,
                )
            self._on_cpu = on_cpu
        self._since_switch += 1
        if on_cpu:
            report_fallback(
                self._guard,
                self._operation,
                model=self._model,
                detail=f"batch {index} ({texts} texts) embedded on the CPU: {why}",
            )


def report_fallback(guard: LeaseGuard, operation: str, *, model: str | None, detail: str) -> None:
    """Publish a ``fallback`` event: ``operation`` ran on the CPU because the GPU was busy."""
    current = guard.current
    guard.events.publish(
        GpuEvent(
            guard=guard.name,
            operation=operation,
            model=model,
            status=GpuStatus.FALLBACK,
            timestamp=guard.clock.time(),
            lease_id=0,
            priority=Priority.BACKGROUND,
            holder=None if current is None else current.label,
            detail=detail,
        )
    )
