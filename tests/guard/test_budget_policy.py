"""The budget policy in the process scope: admission by sum, loads apart, the line's order kept.

A fake GPU (:class:`~gpuguard.devices.FakeDevices`) stands in for NVML and a FakeClock for
time; tests wait on checkpoints, never on the wall clock.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from gpuguard import FakeClock, GpuGuard, Priority, WaitTimeout, WouldBlock
from gpuguard.devices import FakeDevices, GpuProcess
from gpuguard.guard.policies import Budget
from gpuguard.guard.scopes.local import LocalArbiter

from ._support import Op, start, until

GIB = 1024**3
FOOTPRINTS = {
    "chat-8g": 8 * GIB,
    "embed-2g": 2 * GIB,
    "big-60g": 60 * GIB,
    "small-1g": 1 * GIB,
    "giant-100g": 100 * GIB,
}


def budget_guard(
    clock: FakeClock, devices: FakeDevices, *, aging_s: float | None = 30.0
) -> GpuGuard:
    """A guard on an 80 GiB fake GPU with 4 GiB headroom (76 GiB to share)."""
    policy = Budget(lambda: devices.info(0), headroom_bytes=4 * GIB, footprints=FOOTPRINTS)
    arbiter = LocalArbiter(aging_s=aging_s, policy=policy, clock=clock)
    return GpuGuard(clock=clock, arbiter=arbiter, wait_timeout=None)


@pytest.fixture
def devices() -> FakeDevices:
    return FakeDevices.with_gpus(80 * 1024)


@pytest.fixture
def guard(devices: FakeDevices) -> GpuGuard:
    return budget_guard(FakeClock(), devices)


async def finish_all(*ops: Op) -> None:
    for op in ops:
        op.finish()
    await asyncio.gather(*(op.task for op in ops))


async def test_operations_that_fit_hold_the_gpu_side_by_side(guard: GpuGuard) -> None:
    order: list[str] = []
    chat = await start(guard, "chat", order, model="chat-8g", priority=Priority.INTERACTIVE)
    embed = await start(guard, "embed", order, model="embed-2g", priority=Priority.BACKGROUND)
    assert chat.holding
    assert embed.holding
    assert guard.policy == "budget"
    assert guard.locked
    assert guard.queue_length == 0
    await finish_all(chat, embed)
    assert not guard.locked


async def test_one_that_does_not_fit_waits_until_enough_is_released(guard: GpuGuard) -> None:
    order: list[str] = []
    chat = await start(guard, "chat", order, model="chat-8g")
    embed = await start(guard, "embed", order, model="embed-2g")
    big = await start(guard, "big", order, model="big-60g")  # 8 + 2 + 60 <= 76: fits
    bigger = await start(guard, "bigger", order, model="chat-8g")  # 78 > 76: waits
    assert big.holding
    assert not bigger.holding
    assert guard.queue_length == 1
    embed.finish()
    await embed.task
    await bigger.until_holding()  # 8 + 60 + 8 = 76: fits exactly
    await finish_all(chat, big, bigger)


async def test_a_waiter_is_granted_as_soon_as_it_fits(guard: GpuGuard) -> None:
    order: list[str] = []
    big = await start(guard, "big", order, model="big-60g")
    chat = await start(guard, "chat", order, model="chat-8g")
    second = await start(guard, "second", order, model="chat-8g")  # 76 fits exactly
    third = await start(guard, "third", order, model="embed-2g")  # 78: waits
    assert second.holding
    assert not third.holding
    chat.finish()
    await chat.task
    await third.until_holding()
    await finish_all(big, second, third)


async def test_loads_and_unloads_never_overlap_even_when_they_fit(guard: GpuGuard) -> None:
    order: list[str] = []
    load = await start(guard, "load", order, model="small-1g")
    chat = await start(guard, "chat", order, model="small-1g")  # not a transition: beside it
    unload = await start(guard, "unload", order, model="small-1g")
    assert load.holding
    assert chat.holding
    assert not unload.holding
    load.finish()
    await load.task
    await unload.until_holding()
    await finish_all(chat, unload)
    assert order == ["load", "chat", "unload"]


async def test_a_later_small_waiter_never_overtakes_an_older_big_one(guard: GpuGuard) -> None:
    """The big waiter at the head holds back every later one of equal or lower priority."""
    order: list[str] = []
    chat = await start(guard, "chat", order, model="chat-8g")
    first = await start(guard, "first", order, model="big-60g")  # 68: holds
    big = await start(guard, "big", order, model="big-60g")  # 128: waits at the head
    smalls = [await start(guard, f"small{i}", order, model="small-1g") for i in range(4)]
    assert not any(s.holding for s in smalls)  # each would fit (69), none jumps the line
    with pytest.raises(WouldBlock):
        guard.acquire_nowait("peek", model="small-1g")
    first.finish()
    chat.finish()
    await big.until_holding()
    await until(lambda: all(s.holding for s in smalls))
    await finish_all(first, chat, big, *smalls)
    assert order == ["chat", "first", "big", "small0", "small1", "small2", "small3"]


async def test_a_stream_of_small_work_cannot_starve_a_big_waiter(guard: GpuGuard) -> None:
    order: list[str] = []
    running = [await start(guard, f"s{i}", order, model="embed-2g") for i in range(3)]
    big = await start(guard, "big", order, model="big-60g")
    assert big.holding  # 6 + 60 fits
    bigger = await start(guard, "bigger", order, model="big-60g")
    for n in range(3):  # small work keeps arriving; each one ends after the next arrives
        running.append(await start(guard, f"late{n}", order, model="embed-2g"))
        assert not running[-1].holding
        running[0].finish()
        await running.pop(0).task
    big.finish()
    await big.task
    await bigger.until_holding()  # the line drained behind it: it is next, not the stream
    assert order.index("bigger") < order.index("late0")
    await finish_all(bigger, *running)


async def test_priority_decides_who_is_next_then_the_budget_whether_it_starts(
    guard: GpuGuard,
) -> None:
    order: list[str] = []
    holder = await start(guard, "holder", order, model="big-60g")
    bulk = await start(guard, "bulk", order, model="embed-2g", priority=Priority.BACKGROUND)
    assert bulk.holding
    more = await start(guard, "more", order, model="big-60g", priority=Priority.BACKGROUND)
    chat = await start(guard, "chat", order, model="chat-8g", priority=Priority.INTERACTIVE)
    assert chat.holding
    assert not more.holding
    await finish_all(holder, bulk, more, chat)


async def test_aging_lifts_a_big_background_waiter_ahead_of_new_interactive_work(
    devices: FakeDevices,
) -> None:
    clock = FakeClock()
    guard = budget_guard(clock, devices, aging_s=10.0)
    order: list[str] = []
    holder = await start(guard, "holder", order, model="big-60g")
    bulk = await start(guard, "bulk", order, model="big-60g", priority=Priority.BACKGROUND)
    clock.advance(25.0)  # two levels: background -> interactive
    chat = await start(guard, "chat", order, model="chat-8g", priority=Priority.INTERACTIVE)
    assert not chat.holding  # the aged waiter at the head does not fit yet; chat waits behind
    holder.finish()
    await bulk.until_holding()
    await chat.until_holding()
    await finish_all(holder, bulk, chat)
    assert order == ["holder", "bulk", "chat"]


async def test_memory_used_by_other_programs_is_respected(
    guard: GpuGuard, devices: FakeDevices
) -> None:
    order: list[str] = []
    devices.set_free(0, 20 * GIB)  # a program outside gpuguard holds 60 GiB
    devices.set_processes(0, GpuProcess(pid=999_999, used_bytes=60 * GIB))
    chat = await start(guard, "chat", order, model="chat-8g")  # alone: always admitted
    embed = await start(guard, "embed", order, model="embed-2g")  # 60 + 8 + 2 <= 76
    big = await start(guard, "big", order, model="chat-8g")  # 78: waits, though 78 - 60 fit
    assert chat.holding
    assert embed.holding
    assert not big.holding
    await finish_all(chat, embed)
    await big.until_holding()
    await finish_all(big)


async def test_a_holders_own_allocation_is_not_counted_twice(
    guard: GpuGuard, devices: FakeDevices
) -> None:
    order: list[str] = []
    chat = await start(guard, "chat", order, model="big-60g")
    # The holder has allocated what it declared: the driver lists it for this process.
    assert chat.lease is not None
    pid = chat.lease.ticket.owner.pid
    devices.set_free(0, 20 * GIB)
    devices.set_processes(0, GpuProcess(pid=pid, used_bytes=60 * GIB))
    chat2 = await start(guard, "second", order, model="chat-8g")  # 60 + 8 <= 76
    assert chat2.holding
    await finish_all(chat, chat2)


async def test_an_operation_of_unknown_size_runs_alone(guard: GpuGuard) -> None:
    order: list[str] = []
    chat = await start(guard, "chat", order, model="chat-8g")
    unknown = await start(guard, "mystery", order, model="never-measured")
    assert not unknown.holding
    chat.finish()
    await unknown.until_holding()
    after = await start(guard, "after", order, model="small-1g")
    assert not after.holding
    await finish_all(chat, unknown, after)


async def test_an_operation_too_big_for_the_gpu_runs_alone_rather_than_never(
    guard: GpuGuard,
) -> None:
    giant = guard.acquire_nowait("giant", model="giant-100g")  # nobody holds: it runs alone
    with pytest.raises(WouldBlock):
        guard.acquire_nowait("small", model="small-1g")
    giant.release()
    assert not guard.locked


async def test_the_gpu_failing_mid_run_falls_back_to_one_at_a_time_and_says_so(
    guard: GpuGuard, devices: FakeDevices, caplog: pytest.LogCaptureFixture
) -> None:
    order: list[str] = []
    caplog.set_level(logging.WARNING, logger="gpuguard.guard.budget")
    chat = await start(guard, "chat", order, model="chat-8g")
    devices.fail("NVML_ERROR_GPU_IS_LOST")
    embeds = [await start(guard, f"embed{i}", order, model="embed-2g") for i in range(2)]
    assert not any(e.holding for e in embeds)
    chat.finish()
    await embeds[0].until_holding()
    assert not embeds[1].holding  # one at a time while the GPU cannot be read
    lost = [r for r in caplog.records if "cannot be read" in r.getMessage()]
    assert len(lost) == 1
    assert "GPU_IS_LOST" in lost[0].getMessage()
    embeds[0].finish()
    await embeds[1].until_holding()
    devices.fail(None)
    shared = await start(guard, "shared", order, model="small-1g")
    assert shared.holding  # the GPU answers again: sharing resumes
    assert any("answers again" in r.getMessage() for r in caplog.records)
    await finish_all(chat, *embeds, shared)


def test_impossible_budgets_are_refused_at_once() -> None:
    with pytest.raises(ValueError, match="headroom"):
        Budget(lambda: FakeDevices.with_gpus(1).info(0), headroom_bytes=-1)


async def test_memory_declared_by_the_caller_counts_over_the_models_figure(
    guard: GpuGuard,
) -> None:
    order: list[str] = []
    chat = await start(guard, "chat", order, model="chat-8g", memory_bytes=70 * GIB)
    embed = await start(guard, "embed", order, model="embed-2g")  # 72: fits
    late = await start(guard, "late", order, memory_bytes=5 * GIB)  # 77: waits
    assert embed.holding
    assert not late.holding
    with pytest.raises(WouldBlock):
        async with guard.try_hold("peek", memory_bytes=0):
            pass  # pragma: no cover - someone waits: no queue jumping
    embed.finish()
    await late.until_holding()
    await finish_all(chat, embed, late)
    lease = guard.acquire_nowait("declared", memory_bytes=GIB)
    assert lease.ticket.memory_bytes == GIB
    lease.release()


async def test_a_negative_declaration_is_refused_at_once(guard: GpuGuard) -> None:
    with pytest.raises(ValueError, match="memory_bytes"):
        await guard.acquire("chat", memory_bytes=-1)
    assert not guard.locked


@pytest.mark.parametrize("leaves", ["cancelled", "timed out"])
async def test_when_the_big_waiter_leaves_the_line_those_behind_it_start_if_they_fit(
    devices: FakeDevices, leaves: str
) -> None:
    clock = FakeClock()
    guard = budget_guard(clock, devices)
    order: list[str] = []
    holder = await start(guard, "holder", order, model="big-60g")
    big = await start(guard, "big", order, model="big-60g", wait_timeout=10.0)
    smalls = [await start(guard, f"small{i}", order, model="small-1g") for i in range(2)]
    assert not any(s.holding for s in smalls)
    if leaves == "cancelled":
        big.task.cancel()
    else:
        clock.advance(11.0)
    await until(lambda: all(s.holding for s in smalls))  # not only at the holder's release
    with pytest.raises(asyncio.CancelledError if leaves == "cancelled" else WaitTimeout):
        await big.task
    await finish_all(holder, *smalls)
