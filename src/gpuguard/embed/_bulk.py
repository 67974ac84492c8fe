"""Bulk embedding: batches stream through the GPU when it is free and the CPU when it is not.

For every batch the bulk embedder asks the guard for the GPU without waiting
(``try_hold`` at background priority, which never jumps the queue). If the GPU is held or
anyone is queued for it, that batch is embedded on the CPU and a ``fallback`` event is
published on the guard's bus; the next batch tries the GPU again, so bulk work returns to it
as soon as it frees. A chat therefore waits for at most one batch, never for a whole job.
The log and the bus hear of each switch and each CPU batch (:mod:`._fallback`). A GPU batch
runs as tracked work of its lease (:meth:`~gpuguard.Lease.run`): the lease is held until
the encode has really ended.

Texts are sorted by length within a window of a few batches before they are cut into the
batches the models see, so a batch pads little (:mod:`._window`); each of those batches
takes its own ``try_hold``. Batches come out in input order (the input cut into
``batch_size`` lists) whichever device embedded them, and memory stays bounded: at most
``max_in_flight`` batches exist between the input and the consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Sequence,
)
from dataclasses import dataclass
from types import TracebackType
from typing import Generic, TypeVar

from .._events import Priority
from .._exceptions import ConfigError, WouldBlock
from ..guard import DEFAULT, Timeout, run_to_end
from ._batches import BulkStats, Device, EmbeddedBatch
from ._fallback import MODEL_LOADING_REASON, DeviceSwitches
from ._lease import LeaseGuard
from ._pair import EmbedderPair
from ._protocol import CountsTokens, Embedder
from ._window import Window, windows

__all__ = ["BulkEmbedder", "BulkRun"]

T = TypeVar("T")


class BulkEmbedder:
    """Embeds streams of items batch by batch on the GPU, falling back to the CPU per batch.

    Args:
        pair: the GPU embedder (optional: without one every batch runs on the CPU) and the
            CPU embedder.
        guard: the GPU lease; required when ``pair`` has a GPU embedder.
        batch_size: items per batch.
        max_in_flight: bound on batches read from the input but not yet taken by the
            consumer (memory stays bounded whatever the corpus size).
        sort_window: how many batches' texts are sorted by length together before they
            are embedded (at most ``max_in_flight``; default half of it, at least 1). A
            wider window pads less; a window is embedded only once it is read whole.
        side_by_side: when True, a CPU worker takes batches from the same queue while the
            GPU worker does, instead of the CPU only standing in when the GPU is busy.
        hold_timeout: how long one GPU batch may hold the lease before it counts as hung
            (the embedding hold limit; the guard's default when omitted).
        more_gpus: further GPUs, each a guard and the pair whose GPU embedder runs there;
            every batch tries the GPUs in ``by_room`` order before the CPU, and each GPU
            has a worker of its own, so batches run on several GPUs at once.
        by_room: the guards' names, the GPU with the most room first, asked per batch
            (default: ``guard`` first, then ``more_gpus`` as given).
    """

    def __init__(
        self,
        pair: EmbedderPair,
        guard: LeaseGuard | None = None,
        *,
        batch_size: int = 32,
        max_in_flight: int = 64,
        sort_window: int | None = None,
        side_by_side: bool = False,
        hold_timeout: Timeout = DEFAULT,
        more_gpus: Sequence[tuple[LeaseGuard, EmbedderPair]] = (),
        by_room: Callable[[], Sequence[str]] | None = None,
    ) -> None:
        if pair.gpu is not None and guard is None:
            raise ConfigError("a GPU embedder needs a guard: GPU work always takes the lease")
        if any(more.gpu is None for _, more in more_gpus) or (more_gpus and pair.gpu is None):
            raise ConfigError("every GPU of bulk embedding needs a GPU embedder")
        if batch_size < 1 or max_in_flight < 1:
            raise ConfigError("batch_size and max_in_flight must be >= 1")
        window = max(1, max_in_flight // 2) if sort_window is None else sort_window
        if not 1 <= window <= max_in_flight:
            raise ConfigError("sort_window must be between 1 and max_in_flight")
        self.pair = pair
        self.guard = guard
        self.batch_size = batch_size
        self.max_in_flight = max_in_flight
        self.sort_window = window
        self.side_by_side = side_by_side
        self.hold_timeout = hold_timeout
        self.gpus: list[tuple[LeaseGuard, EmbedderPair]] = (
            [] if pair.gpu is None or guard is None else [(guard, pair), *more_gpus]
        )
        self._by_room = by_room

    def gpus_by_room(self) -> list[tuple[LeaseGuard, EmbedderPair]]:
        """The GPUs a batch tries, the one with the most room first."""
        if self._by_room is None or len(self.gpus) < 2:
            return list(self.gpus)
        rank = {name: place for place, name in enumerate(self._by_room())}
        return sorted(self.gpus, key=lambda gpu: rank.get(gpu[0].name, len(rank)))

    @property
    def name(self) -> str:
        """The model's name."""
        return self.pair.name

    def stream(
        self,
        items: Iterable[T] | AsyncIterable[T],
        *,
        text: Callable[[T], str],
        operation: str = "bulk-embedding",
        batch_size: int | None = None,
    ) -> BulkRun[T]:
        """Embed ``text(item)`` for every item; iterate the result for batches in input order.

        ``operation`` names the work in guard events and logs. Items travel with their
        vectors, so callers can attach anything (a source, a chunk number) to each text.
        A synchronous ``items`` is iterated on the event loop: pass an async iterable if
        producing items blocks (reading files, querying a database).
        """
        size = self.batch_size if batch_size is None else batch_size
        if size < 1:
            raise ConfigError("batch_size must be >= 1")
        return BulkRun(self, items, text, operation, size)

    def embed_batches(
        self,
        texts: Iterable[str] | AsyncIterable[str],
        *,
        operation: str = "bulk-embedding",
        batch_size: int | None = None,
    ) -> BulkRun[str]:
        """:meth:`stream` for plain texts: each batch's ``items`` are its texts."""
        return self.stream(texts, text=str, operation=operation, batch_size=batch_size)

    def __repr__(self) -> str:
        return (
            f"BulkEmbedder(pair={self.pair!r}, batch_size={self.batch_size}, "
            f"max_in_flight={self.max_in_flight}, sort_window={self.sort_window}, "
            f"side_by_side={self.side_by_side})"
        )


@dataclass(slots=True)
class _Work(Generic[T]):
    """One batch the models see: texts of similar length, at ``positions`` of its window."""

    index: int
    positions: list[int]
    items: list[T]
    texts: list[str]
    result: asyncio.Future[EmbeddedBatch[T]]


_Pending = tuple[Window[T], list[_Work[T]]]


class BulkRun(Generic[T]):
    """One pass of items through a :class:`BulkEmbedder`: an async iterator of batches.

    Use it as ``async with bulk.stream(...) as run: async for batch in run: ...`` so that the
    workers stop as soon as the block exits, even early; ``stats`` holds the running totals
    of the batches the models saw (sorted by length, as many as the batches that come out).
    """

    def __init__(
        self,
        bulk: BulkEmbedder,
        items: Iterable[T] | AsyncIterable[T],
        text: Callable[[T], str],
        operation: str,
        batch_size: int,
    ) -> None:
        self.stats = BulkStats()
        self._bulk = bulk
        self._items = items
        self._text = text
        self._operation = operation
        self._batch_size = batch_size
        self._gpu_loading: dict[int, asyncio.Task[None]] = {}  # by id() of the pair
        gpu, guard = bulk.pair.gpu, bulk.guard
        self._switches = (
            None if gpu is None or guard is None else DeviceSwitches(guard, operation, gpu.name)
        )
        self._batches = self._run()

    def __aiter__(self) -> AsyncIterator[EmbeddedBatch[T]]:
        return self._batches

    async def aclose(self) -> None:
        """Stop reading input and stop the workers (waiting for a running batch to end)."""
        await self._batches.aclose()

    async def __aenter__(self) -> BulkRun[T]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # --- the pipeline: one batcher, one or two workers, results in order -------------------

    async def _run(self) -> AsyncGenerator[EmbeddedBatch[T], None]:
        slots = asyncio.Semaphore(self._bulk.max_in_flight)
        order: asyncio.Queue[_Pending[T] | Exception | None] = asyncio.Queue()
        work: asyncio.Queue[_Work[T] | None] = asyncio.Queue()
        workers = [self._gpu_first_worker for _ in self._bulk.gpus]
        if not workers or self._bulk.side_by_side:
            workers.append(self._cpu_worker)
        tasks = [asyncio.create_task(self._batcher(slots, order, work, len(workers)))]
        tasks += [asyncio.create_task(worker(work)) for worker in workers]
        jobs: list[_Work[T]] = []
        try:
            while (pending := await order.get()) is not None:
                if isinstance(pending, Exception):
                    raise pending
                window, jobs = pending
                embedded = [(job.positions, await job.result) for job in jobs]
                for _, batch in embedded:
                    self.stats.add(batch)
                for batch in window.assemble(embedded):
                    slots.release()
                    yield batch
        finally:
            tasks += self._gpu_loading.values()
            for task in tasks:
                task.cancel()
            # A repeated cancel of the job must not abandon a batch still on the GPU.
            await run_to_end(asyncio.gather(*tasks, return_exceptions=True))
            _discard(jobs, order)

    async def _batcher(
        self,
        slots: asyncio.Semaphore,
        order: asyncio.Queue[_Pending[T] | Exception | None],
        work: asyncio.Queue[_Work[T] | None],
        n_workers: int,
    ) -> None:
        loop = asyncio.get_running_loop()
        first = 0
        try:
            read = windows(self._items, self._batch_size, self._bulk.sort_window, slots)
            async for slices in read:
                if first == 0:
                    await self._start_models()
                texts = [self._text(item) for part in slices for item in part]
                window = Window.sort(first, slices, texts, await self._lengths(texts))
                jobs = [
                    _Work(
                        first + number,
                        positions,
                        window.items_at(positions),
                        [window.texts[position] for position in positions],
                        loop.create_future(),
                    )
                    for number, positions in enumerate(window.embedding_batches(self._batch_size))
                ]
                order.put_nowait((window, jobs))
                for job in jobs:
                    work.put_nowait(job)
                first += len(slices)
        except Exception as exc:  # the input or a model load failed: the consumer raises it
            order.put_nowait(exc)
        finally:
            for _ in range(n_workers):
                work.put_nowait(None)
        order.put_nowait(None)

    async def _lengths(self, texts: list[str]) -> list[int]:
        """What a window is sorted by: the CPU model's token counts, else characters."""
        counter = self._bulk.pair.cpu
        counted = await counter.token_lengths(texts) if isinstance(counter, CountsTokens) else None
        return [len(text) for text in texts] if counted is None else counted

    async def _start_models(self) -> None:
        """Load the models at the first batch: a job with nothing to embed loads none.

        The GPU model loads in the background (it waits for the lease at normal priority,
        as model loads do); batches run on the CPU meanwhile instead of waiting for it.
        """
        await self._bulk.pair.start_cpu()
        for guard, pair in self._bulk.gpus:
            if not pair.gpu_ready:
                self._gpu_loading[id(pair)] = asyncio.create_task(pair.load_gpu(guard))

    async def _gpu_first_worker(self, work: asyncio.Queue[_Work[T] | None]) -> None:
        while (job := await work.get()) is not None:
            await self._settle(job, self._gpu_or_fallback(job))

    async def _cpu_worker(self, work: asyncio.Queue[_Work[T] | None]) -> None:
        while (job := await work.get()) is not None:
            await self._settle(job, self._embed_timed(self._bulk.pair.cpu, job, "cpu", False))

    async def _settle(self, job: _Work[T], embedding: Awaitable[EmbeddedBatch[T]]) -> None:
        try:
            job.result.set_result(await embedding)
        except Exception as exc:
            job.result.set_exception(exc)

    async def _gpu_or_fallback(self, job: _Work[T]) -> EmbeddedBatch[T]:
        """The batch on the first GPU (by room) that is free for it, else on the CPU."""
        switches = self._switches
        assert switches is not None  # a GPU worker runs only beside a GPU embedder
        why = MODEL_LOADING_REASON
        for guard, pair in self._bulk.gpus_by_room():
            gpu = pair.gpu
            if gpu is None or not self._gpu_loaded(pair):
                continue
            async with contextlib.AsyncExitStack() as stack:
                try:
                    lease = await stack.enter_async_context(
                        guard.try_hold(
                            self._operation,
                            model=gpu.name,
                            priority=Priority.BACKGROUND,
                            hold_timeout=self._bulk.hold_timeout,
                        )
                    )
                except WouldBlock as busy:
                    why = str(busy)
                    continue
                switches.note("gpu", job.index, len(job.items), "")
                return await lease.run(self._embed_timed(gpu, job, "gpu", False), stop=gpu.abort)
        switches.note("cpu", job.index, len(job.items), why)
        return await self._embed_timed(self._bulk.pair.cpu, job, "cpu", True)

    def _gpu_loaded(self, pair: EmbedderPair) -> bool:
        """Whether ``pair``'s GPU model is ready; re-raises its load failure (a mismatch)."""
        loading = self._gpu_loading.get(id(pair))
        if loading is None or not loading.done():
            return loading is None
        loading.result()
        return True

    async def _embed_timed(
        self, embedder: Embedder, job: _Work[T], device: Device, fallback: bool
    ) -> EmbeddedBatch[T]:
        started = time.perf_counter()
        vectors = await embedder.embed(job.texts)
        return EmbeddedBatch(
            job.index, job.items, vectors, device, fallback, time.perf_counter() - started
        )


def _discard(jobs: list[_Work[T]], order: asyncio.Queue[_Pending[T] | Exception | None]) -> None:
    """Mark the results nobody will read as seen, so that their errors are not logged."""
    left = list(jobs)
    while not order.empty():
        pending = order.get_nowait()
        if isinstance(pending, tuple):
            left += pending[1]
    for job in left:
        if job.result.done() and not job.result.cancelled():
            job.result.exception()
