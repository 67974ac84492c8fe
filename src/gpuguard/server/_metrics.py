"""Prometheus metrics for one app, in its own registry, fed by a subscriber of the bus.

Histograms and counters are updated from :class:`~gpuguard.GpuEvent` s as they arrive (a
background task) and, before each scrape, from whatever is still queued, so a scrape always
reflects every event published before it. Queue lengths and dropped events are read from the
guard at scrape time: the unlabelled families are the first GPU's, the families with a
``gpu`` label (the lease's name) give every GPU's policy, holders, line and memory.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from .._events import Event, GpuEvent, GpuStatus, Priority
from ..guard import GpuGuard, GpuSet

__all__ = ["GuardMetrics"]

_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)
_RELEASED = frozenset({GpuStatus.COMPLETED, GpuStatus.FAILED, GpuStatus.CANCELLED, GpuStatus.HUNG})


class GuardMetrics:
    """The metrics of a guard (and of every GPU of ``gpus``); :meth:`render` gives the text format.

    Events of every GPU feed the histograms and counters (the guards of a set share a bus).
    """

    def __init__(self, guard: GpuGuard, gpus: GpuSet | None = None) -> None:
        self.guard = guard
        self.registry = CollectorRegistry(auto_describe=True)
        self._wait = Histogram(
            "gpuguard_gpu_wait_seconds",
            "Time operations waited for the GPU before being granted it.",
            ["operation"],
            registry=self.registry,
            buckets=_BUCKETS,
        )
        self._hold = Histogram(
            "gpuguard_gpu_hold_seconds",
            "Time operations held the GPU.",
            ["operation"],
            registry=self.registry,
            buckets=_BUCKETS,
        )
        self._outcomes = Counter(
            "gpuguard_gpu_operations",
            "GPU operation transitions, by operation and status.",
            ["operation", "status"],
            registry=self.registry,
        )
        self._fallbacks = Counter(
            "gpuguard_gpu_fallbacks",
            "Bulk operations that ran on the CPU because the GPU was busy.",
            ["operation"],
            registry=self.registry,
        )
        self._hung = Counter(
            "gpuguard_gpu_hung",
            "Operations that held the GPU past their hold timeout and were cancelled.",
            ["operation"],
            registry=self.registry,
        )
        self.registry.register(_GuardStateCollector(guard))
        self.registry.register(_GpusCollector(gpus if gpus is not None else GpuSet.single(guard)))
        self._subscription = guard.events.subscribe(kinds={"gpu"})
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start observing events in the background (call inside the running loop)."""
        if self._task is None:
            self._task = asyncio.create_task(self._observe_forever(), name="gpuguard-metrics")

    async def aclose(self) -> None:
        """Stop observing."""
        self._subscription.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def render(self) -> bytes:
        """Every metric in the Prometheus text format, including events not yet observed."""
        for event in self._subscription.drain():
            self._observe(event)
        return generate_latest(self.registry)

    async def _observe_forever(self) -> None:
        async for event in self._subscription:
            self._observe(event)

    def _observe(self, event: Event) -> None:
        if not isinstance(event, GpuEvent):
            return
        operation = event.operation
        self._outcomes.labels(operation, str(event.status)).inc()
        if event.status is GpuStatus.STARTED:
            self._wait.labels(operation).observe(event.waited_s)
        elif event.status in _RELEASED:
            self._hold.labels(operation).observe(event.held_s)
        if event.status is GpuStatus.FALLBACK:
            self._fallbacks.labels(operation).inc()
        elif event.status is GpuStatus.HUNG:
            self._hung.labels(operation).inc()


class _GuardStateCollector(Collector):
    """Scrape-time state: queue length per priority, whether the GPU is held, dropped events."""

    def __init__(self, guard: GpuGuard) -> None:
        self._guard = guard

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        snapshot = self._guard.snapshot()
        queue = GaugeMetricFamily(
            "gpuguard_gpu_queue_length",
            "Operations waiting for the GPU, by declared priority.",
            labels=["priority"],
        )
        for priority in Priority:
            waiting = sum(1 for w in snapshot.waiters if w.priority is priority)
            queue.add_metric([str(priority)], waiting)
        yield queue
        yield GaugeMetricFamily(
            "gpuguard_gpu_held",
            "1 while an operation holds the GPU.",
            value=int(snapshot.holder is not None),
        )
        yield CounterMetricFamily(
            "gpuguard_events_dropped",
            "Events dropped because a subscriber's queue was full.",
            value=snapshot.dropped_events,
        )


class _GpusCollector(Collector):
    """Scrape-time state per GPU (label ``gpu``): its policy, holders, line and memory."""

    def __init__(self, gpus: GpuSet) -> None:
        self._gpus = gpus

    def collect(self) -> Iterator[GaugeMetricFamily]:
        policy = GaugeMetricFamily(
            "gpuguard_gpu_policy",
            "1 for the policy in force on each GPU's lease.",
            labels=["gpu", "policy"],
        )
        families = {
            name: GaugeMetricFamily(f"gpuguard_gpu_{name}", text, labels=["gpu"])
            for name, text in _PER_GPU.items()
        }
        for guard in self._gpus:
            snapshot = guard.snapshot()
            gpu = snapshot.guard
            policy.add_metric([gpu, snapshot.policy], 1)
            families["holders"].add_metric([gpu], len(snapshot.holders))
            families["waiting"].add_metric([gpu], snapshot.queue_length)
            memory = snapshot.memory
            if memory is not None:  # a sharing policy that can read its GPU
                families["budget_bytes"].add_metric([gpu], memory.budget_bytes)
                families["free_bytes"].add_metric([gpu], memory.free_bytes)
                families["committed_bytes"].add_metric([gpu], memory.committed_bytes)
        yield policy
        yield from families.values()


_PER_GPU = {
    "holders": "Operations holding each GPU's lease.",
    "waiting": "Operations waiting for each GPU's lease.",
    "budget_bytes": "GPU memory the budget policy shares (the GPU less the headroom).",
    "free_bytes": "GPU memory free, as the driver reports it.",
    "committed_bytes": "GPU memory the budget policy counts as taken or promised.",
}
