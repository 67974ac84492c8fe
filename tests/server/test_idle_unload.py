"""``ttl_s``: a model idle that long is unloaded under the lease; one in use never is."""

from __future__ import annotations

import asyncio

from gpuguard import FakeClock, GpuGuard, GpuSet
from gpuguard.gateway import ModelGateway
from gpuguard.llm import ChatMessage
from gpuguard.server._idle_unload import IdleUnloader
from gpuguard.testing import FakeBackend

from .conftest import until

HI = [ChatMessage("user", "hi")]


async def caught_up(unloader: IdleUnloader, gateway: ModelGateway) -> None:
    """Until the unloader has seen every GPU event published so far."""
    published = len(gateway.guard.events.history(kinds={"gpu"}))
    await until(lambda: unloader.events_seen == published)


async def test_an_idle_model_is_unloaded_under_the_lease() -> None:
    clock = FakeClock()
    backend = FakeBackend(["m", "kept"])
    gateway = ModelGateway(backend, model="m", guard=GpuGuard(clock=clock))
    unloader = IdleUnloader(gateway, {"m": 60.0})
    try:
        await gateway.complete(HI)
        await gateway.load("kept")
        await caught_up(unloader, gateway)
        clock.advance(59)
        await asyncio.sleep(0)
        assert "m" in backend.loaded
        await gateway.complete(HI)  # used again: the 60 s start over
        await caught_up(unloader, gateway)
        clock.advance(59)
        await asyncio.sleep(0)
        assert "m" in backend.loaded
        clock.advance(1)
        await until(lambda: "m" not in backend.loaded)
        assert backend.loaded == {"kept"}  # no ttl: stays

        def unload_events() -> list[str]:
            history = gateway.guard.events.history(kinds={"gpu"})
            return [e.to_dict()["status"] for e in history if e.to_dict()["operation"] == "unload"]

        await until(lambda: unload_events() == ["started", "completed"])  # under the lease
    finally:
        await unloader.aclose()
        await gateway.aclose()


async def test_a_model_in_use_when_its_time_comes_is_kept() -> None:
    clock = FakeClock()
    backend = FakeBackend(["m"])
    gateway = ModelGateway(backend, model="m", guard=GpuGuard(clock=clock))
    unloader = IdleUnloader(gateway, {"m": 10.0})
    try:
        await gateway.complete(HI)
        await caught_up(unloader, gateway)
        async with gateway.guard.hold("chat", model="m"):
            await caught_up(unloader, gateway)  # the start of this use re-armed the timer
            clock.advance(10)  # fires while "m" holds the GPU
            await asyncio.sleep(0)
            assert unloader.armed == frozenset()
        assert "m" in backend.loaded
        await caught_up(unloader, gateway)  # re-armed by the end of that use
        clock.advance(10)
        await until(lambda: "m" not in backend.loaded)
    finally:
        await unloader.aclose()
        await gateway.aclose()


async def test_a_model_in_use_on_another_gpu_is_kept() -> None:
    clock = FakeClock()
    backend = FakeBackend(["m"])
    first = GpuGuard("idle0", clock=clock)
    gpus = GpuSet({0: first, 1: GpuGuard("idle1", clock=clock, events=first.events)})
    gateway = ModelGateway(backend, model="m", gpus=gpus, model_gpus={"m": 1})
    unloader = IdleUnloader(gateway, {"m": 10.0})
    try:
        await gateway.complete(HI)
        await caught_up(unloader, gateway)
        async with gpus[1].hold("chat", model="m"):
            await caught_up(unloader, gateway)
            clock.advance(10)  # fires while "m" holds GPU 1
            await asyncio.sleep(0)
            assert unloader.armed == frozenset()
        assert "m" in backend.loaded
        history = gpus.events.history(kinds={"gpu"})
        assert [e for e in history if e.to_dict()["operation"] == "unload"] == []
    finally:
        await unloader.aclose()
        await gateway.aclose()
