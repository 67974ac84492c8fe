"""The gateway takes the guard for every GPU operation it performs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Sequence

import pytest

from gpuguard import (
    ConfigError,
    DimensionMismatch,
    FakeClock,
    GpuEvent,
    GpuGuard,
    GpuStatus,
    ModelEvent,
    ModelNotFound,
    OperationHung,
    Priority,
)
from gpuguard.gateway import GatewayTimeouts, GpuWaiting, ModelGateway
from gpuguard.llm import ChatChunk, ChatMessage, ChatOptions
from gpuguard.testing import FakeBackend, HashEmbedder, IntervalRecorder

HELLO = [ChatMessage("user", "hello there")]


async def settle(rounds: int = 20) -> None:
    """Let every ready task run to its next blocking point (checkpoints, not timing)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


class GatedBackend(FakeBackend):
    """A fake whose load blocks until the test opens ``load_gate``."""

    def __init__(self, models: Sequence[str] = ("m1", "m2")) -> None:
        super().__init__(models)
        self.load_gate = asyncio.Event()
        self.load_started = asyncio.Event()

    async def load(self, model: str) -> None:
        self.load_started.set()
        await self.load_gate.wait()
        await super().load(model)


def gpu_events(guard: GpuGuard) -> list[tuple[str, GpuStatus]]:
    return [(e.operation, e.status) for e in guard.events.history() if isinstance(e, GpuEvent)]


async def test_prewarm_then_immediate_gpu_embedding_never_overlap(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The start-up scenario: start (prewarm) and at once ask for GPU embeddings."""
    recorder = IntervalRecorder()
    backend = GatedBackend()
    backend.recorder = recorder
    gpu = HashEmbedder(device="cuda", recorder=recorder)
    gateway = ModelGateway(backend, model="m1", gpu_embedder=gpu, cpu_embedder=HashEmbedder())
    caplog.set_level(logging.INFO, logger="gpuguard.guard")

    await gateway.start()
    await backend.load_started.wait()
    embedding = asyncio.create_task(gateway.embed(["select * from users"], use_gpu=True))
    await settle()
    assert not embedding.done(), "embedding must wait for the prewarm's lease"
    assert gateway.guard.current is not None
    assert gateway.guard.current.operation == "prewarm"

    backend.load_gate.set()
    vectors = await embedding
    assert vectors.shape == (1, 384)
    assert recorder.overlaps() == []
    assert [i.what for i in recorder.intervals] == ["load m1", "embed"]
    acquired = [r.getMessage() for r in caplog.records if r.getMessage().startswith("acquired")]
    assert [m.split()[1] for m in acquired] == ["op=prewarm", "op=embed-load", "op=embed"]
    await gateway.aclose()


async def test_chat_waits_with_notice_then_streams_and_releases() -> None:
    gateway = ModelGateway(FakeBackend(["m1"]), model="m1")
    await gateway.load("m1")
    holder = await gateway.guard.acquire("unload", model="m1")

    stream = gateway.chat(HELLO)
    first = await anext(stream)
    assert isinstance(first, GpuWaiting)
    assert first.holder == "unload"
    assert first.message == "Waiting for GPU... (held by unload)"

    rest = asyncio.create_task(_collect(stream))
    await settle()
    assert not rest.done()
    holder.release()
    chunks = await rest
    assert "".join(c.content for c in chunks) == "echo: hello there"
    assert chunks[-1].finish_reason == "stop"
    assert gateway.guard.current is None
    assert gpu_events(gateway.guard)[-4:] == [
        ("chat", GpuStatus.WAITING),
        ("unload", GpuStatus.COMPLETED),
        ("chat", GpuStatus.STARTED),
        ("chat", GpuStatus.COMPLETED),
    ]


async def _collect(stream: AsyncGenerator[ChatChunk | GpuWaiting, None]) -> list[ChatChunk]:
    return [item async for item in stream if isinstance(item, ChatChunk)]


async def test_chat_loads_a_model_that_is_not_loaded_first() -> None:
    backend = FakeBackend(["m1"])
    gateway = ModelGateway(backend, model="m1")
    assert await gateway.complete(HELLO) == "echo: hello there"
    assert [call for call, _ in backend.calls] == ["load", "chat"]


async def test_chat_reloads_once_after_an_eviction_behind_its_back() -> None:
    backend = FakeBackend(["m1"])
    gateway = ModelGateway(backend, model="m1")
    await gateway.load("m1")
    backend.loaded.clear()  # e.g. the server's TTL expired
    assert await gateway.complete(HELLO) == "echo: hello there"
    assert [call for call, _ in backend.calls] == ["load", "chat", "load", "chat"]


async def test_client_leaving_mid_stream_frees_the_gpu() -> None:
    gateway = ModelGateway(FakeBackend(["m1"]), model="m1")
    stream = gateway.chat([ChatMessage("user", "one two three four")])
    first = await anext(stream)
    assert isinstance(first, ChatChunk)
    assert gateway.guard.current is not None
    await stream.aclose()
    assert gateway.guard.current is None
    assert gpu_events(gateway.guard)[-1] == ("chat", GpuStatus.CANCELLED)


async def test_unknown_model_is_a_clear_error_and_frees_the_lease() -> None:
    gateway = ModelGateway(FakeBackend(["m1"]), model="m1")
    with pytest.raises(ModelNotFound, match="nope"):
        await gateway.load("nope")
    assert gateway.guard.current is None
    assert gpu_events(gateway.guard)[-1] == ("load", GpuStatus.FAILED)
    model_events = [e for e in gateway.events.history() if isinstance(e, ModelEvent)]
    assert [(e.model, e.status) for e in model_events] == [("nope", "loading"), ("nope", "failed")]


async def test_background_prewarm_failure_is_reported_not_raised() -> None:
    gateway = ModelGateway(FakeBackend(["m1"]), model="missing")
    await gateway.start()
    assert gateway.prewarm_task is not None
    await gateway.prewarm_task
    status = await gateway.status()
    assert status.errors
    assert "missing" in status.errors[0]
    assert not status.prewarming
    assert gateway.guard.current is None


async def test_chat_goes_before_queued_normal_and_background_work() -> None:
    gateway = ModelGateway(FakeBackend(["m1"]), model="m1")
    await gateway.load("m1")
    holder = await gateway.guard.acquire("load", model="m1")
    order: list[str] = []

    async def op(name: str, priority: Priority) -> None:
        async with gateway.guard.hold(name, priority=priority):
            order.append(name)

    background = asyncio.create_task(op("bulk-embed", Priority.BACKGROUND))
    normal = asyncio.create_task(op("unload", Priority.NORMAL))
    await settle()

    async def chat() -> None:
        await gateway.complete(HELLO)
        order.append("chat")

    chatting = asyncio.create_task(chat())
    await settle()
    holder.release()
    await asyncio.gather(background, normal, chatting)
    assert order == ["chat", "unload", "bulk-embed"]


async def test_embed_without_gpu_uses_the_cpu_embedder_without_a_lease() -> None:
    cpu = HashEmbedder()
    gateway = ModelGateway(
        FakeBackend(), gpu_embedder=HashEmbedder(device="cuda"), cpu_embedder=cpu
    )
    holder = await gateway.guard.acquire("chat")
    vectors = await gateway.embed(["a", "b"], use_gpu=False)
    assert vectors.shape == (2, 384)
    assert cpu.calls == 1
    holder.release()


def test_embedders_of_different_dimensions_are_refused_at_construction() -> None:
    with pytest.raises(DimensionMismatch, match=r"768.*384"):
        ModelGateway(
            FakeBackend(),
            gpu_embedder=HashEmbedder(device="cuda", dimension=768),
            cpu_embedder=HashEmbedder(dimension=384),
        )


def test_a_gpu_embedder_without_a_cpu_fallback_is_refused() -> None:
    with pytest.raises(ConfigError, match="CPU embedder"):
        ModelGateway(FakeBackend(), gpu_embedder=HashEmbedder(device="cuda"))


async def test_a_chat_that_hangs_is_cancelled_and_the_gpu_freed() -> None:
    class HangingBackend(FakeBackend):
        async def chat(
            self,
            model: str,
            messages: Sequence[ChatMessage],
            options: ChatOptions | None = None,
        ) -> AsyncGenerator[ChatChunk, None]:
            yield ChatChunk(content="first")
            await asyncio.Event().wait()  # never answers again
            yield ChatChunk(content="never")  # pragma: no cover

    clock = FakeClock()
    gateway = ModelGateway(
        HangingBackend(["m1"]),
        model="m1",
        guard=GpuGuard(clock=clock),
        timeouts=GatewayTimeouts(chat_hold_s=30.0),
    )
    received: list[str] = []

    async def consume() -> None:
        async for item in gateway.chat(HELLO):
            if isinstance(item, ChatChunk):
                received.append(item.content)

    task = asyncio.create_task(consume())
    await settle()
    assert received == ["first"]
    clock.advance(30.0)
    with pytest.raises(OperationHung):
        await task
    assert gateway.guard.current is None
    assert gateway.guard.snapshot().counters.hung == 1
