"""Chat through the gateway: one interactive lease for the whole streamed answer."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from contextlib import aclosing
from functools import partial

from .._events import Priority
from .._exceptions import ModelNotLoaded
from ..guard import Lease
from ..llm._protocol import ChatChunk, ChatMessage, ChatOptions, LlmBackend, reject_unsupported
from ._lane import Lane
from ._models import LlmModels
from ._values import GatewayTimeouts, GpuWaiting

__all__ = ["Chats"]

logger = logging.getLogger("gpuguard.gateway")

OnLoad = Callable[[int], None]
"""Told each load's duration (nanoseconds) that a chat had to wait for."""


class Chats:
    """Streams answers from the backend, each holding the lease for its whole stream.

    ``priorities`` gives the lease priority of chats per model (interactive if not listed).
    """

    def __init__(
        self,
        backend: LlmBackend,
        models: LlmModels,
        lane: Lane,
        timeouts: GatewayTimeouts,
        priorities: Mapping[str, Priority] | None,
    ) -> None:
        self.priorities = dict(priorities or {})
        self._backend = backend
        self._models = models
        self._lane = lane
        self._timeouts = timeouts

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        model: str | None,
        options: ChatOptions | None,
        on_load: OnLoad | None,
    ) -> AsyncGenerator[ChatChunk | GpuWaiting, None]:
        """The answer's chunks, after a :class:`GpuWaiting` when the GPU is busy.

        An option the backend cannot honour is refused first, before the lease or a load.
        """
        name = self._models.name(model)
        if options is not None:
            backend = self._backend
            reject_unsupported(options, backend.chat_parameters, backend=backend.kind, model=name)
        priority = self.priorities.get(name, Priority.INTERACTIVE)
        hold = self._lane.hold(
            "chat", name, priority, self._timeouts.chat_hold_s, self._timeouts.chat_wait_s
        )
        # Take the GPU or a place in its queue before yielding anything: a full queue raises
        # QueueFull here, before a server has sent its first byte.
        waited = await hold.reserve()
        if waited:
            guard = self._lane.guard_for(name)
            current = guard.current
            holder = None if current is None else current.label
            notice = GpuWaiting("chat", holder, guard.queue_length)
            logger.info("%s for chat on %s", notice.message, name)
            try:
                yield notice
            except BaseException:  # closed while waiting (the client left): leave the line
                await hold.aclose()
                raise
        async with hold as lease:
            if waited:
                yield GpuWaiting("chat", None, 0, granted_after_s=lease.waited_s)
            if name not in self._models.loaded:
                await self._load(lease, name, on_load)
            self._models.used(name)
            for attempt in (1, 2):
                started = False
                try:
                    stream = self._backend.chat(name, messages, options)
                    stop = partial(self._backend.abort, name)
                    async with aclosing(lease.stream(stream, stop=stop)) as chunks:
                        async for chunk in chunks:
                            started = True
                            yield chunk
                    return
                except ModelNotLoaded:
                    # Evicted behind our back (a TTL, another client): reload once, retry.
                    if started or attempt == 2:
                        raise
                    self._models.loaded.discard(name)
                    await self._load(lease, name, on_load)

    async def _load(self, lease: Lease, model: str, on_load: OnLoad | None) -> None:
        took = await self._models.load_held(lease, model)
        if on_load is not None:
            on_load(took)

    async def complete(
        self, messages: Sequence[ChatMessage], model: str | None, options: ChatOptions | None
    ) -> str:
        """The whole answer of :meth:`stream` as one string."""
        parts = []
        async with aclosing(self.stream(messages, model, options, None)) as stream:
            async for item in stream:
                if isinstance(item, ChatChunk):
                    parts.append(item.content)
        return "".join(parts)
