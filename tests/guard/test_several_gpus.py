"""``[guard] gpus``: one lease per GPU, each with its own policy; work goes where there is room."""

from __future__ import annotations

import asyncio
import logging

import pytest

from gpuguard import ConfigError, GpuGuard, GpuSet
from gpuguard.devices import Devices, FakeDevices
from gpuguard.settings import build_guards, lease_name, load_settings

GIB = 1024**3


def two_gpus() -> FakeDevices:
    """A small GPU (exclusive under auto) and a big one (the budget under auto)."""
    return FakeDevices.with_gpus(8 * 1024, 80 * 1024)


def test_auto_leases_every_gpu_nvml_counts_each_with_its_own_policy(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="gpuguard.guard")
    settings = load_settings(guard={"scope": "process"})
    gpus = build_guards(settings.guard, detect=two_gpus)
    assert gpus.indices == (0, 1)
    assert [(g.name, g.policy) for g in gpus] == [("gpu0", "exclusive"), ("gpu1", "budget")]
    said = [r.getMessage() for r in caplog.records if "policy" in r.getMessage()]
    assert said[0].startswith("GPU gpu0 runs the exclusive policy")
    assert said[1].startswith("GPU gpu1 runs the budget policy")
    assert gpus.first.events is gpus[1].events  # one bus for the set


def test_without_nvml_auto_is_one_gpu_under_the_configured_name() -> None:
    settings = load_settings(guard={"name": "big-gpu"})
    gpus = build_guards(settings.guard, detect=lambda: None)
    assert [(index, guard.name) for index, guard in gpus.items()] == [(0, "big-gpu")]
    assert (gpus.first.scope, gpus.first.policy) == ("host", "exclusive")


def test_gpu_zero_keeps_the_configured_name_and_the_others_are_gpu_n() -> None:
    limits = load_settings(guard={"name": "main", "gpus": [0, 2]}).guard
    assert [lease_name(limits, i) for i in (0, 1, 2)] == ["main", "gpu1", "gpu2"]
    gpus = build_guards(limits, detect=lambda: None)
    assert [g.name for g in gpus] == ["main", "gpu2"]
    only = build_guards(load_settings(guard={"gpus": [1]}).guard, detect=lambda: None)
    assert [(i, g.name) for i, g in only.items()] == [(1, "gpu1")]


def test_a_name_that_is_another_gpus_lease_name_is_refused() -> None:
    limits = load_settings(guard={"name": "gpu1", "gpus": [0, 1]}).guard
    with pytest.raises(ConfigError, match="lease name of another GPU"):
        build_guards(limits, detect=lambda: None)


@pytest.mark.parametrize("gpus", [[], [1, 1], [-1]])
def test_gpus_must_be_distinct_indices(gpus: list[int]) -> None:
    with pytest.raises(ConfigError, match="gpus"):
        load_settings(guard={"gpus": gpus})


def test_the_driver_is_asked_once_for_every_gpu() -> None:
    asked: list[int] = []

    def detect() -> Devices:
        asked.append(1)
        return two_gpus()

    build_guards(load_settings(guard={"scope": "process"}).guard, detect=detect)
    assert asked == [1]


def test_an_index_outside_the_set_is_a_config_error() -> None:
    gpus = GpuSet({0: GpuGuard("gpu0"), 1: GpuGuard("gpu1")})
    with pytest.raises(ConfigError, match="GPU 3 is not one of this server's GPUs"):
        gpus[3]


async def test_exclusive_placement_prefers_an_idle_gpu_then_the_shorter_line() -> None:
    gpus = GpuSet({0: GpuGuard("gpu0"), 1: GpuGuard("gpu1"), 2: GpuGuard("gpu2")})
    assert gpus.place() is gpus[0]  # all idle: the set's order
    first = await gpus[0].acquire("chat")
    assert gpus.place() is gpus[1]
    second = await gpus[1].acquire("chat")
    third = await gpus[2].acquire("chat")
    # All held: the shortest line wins (GPU 0 has one waiter, GPU 1 none behind it).
    waiter = asyncio.create_task(gpus[0].acquire("load"))
    for _ in range(20):  # let the waiter reach the line (checkpoints, not timing)
        await asyncio.sleep(0)
    assert gpus[0].queue_length == 1
    assert [g.name for g in gpus.by_room()] == ["gpu1", "gpu2", "gpu0"]
    for lease in (first, second, third):
        lease.release()
    (await waiter).release()


async def test_budget_placement_goes_to_the_gpu_with_the_most_free_budget() -> None:
    devices = FakeDevices.with_gpus(80 * 1024, 80 * 1024)
    gpus = build_guards(
        load_settings(guard={"scope": "process", "policy": "budget"}).guard,
        detect=lambda: devices,
    )
    assert gpus.place() is gpus[0]
    devices.set_free(0, 30 * GIB)  # someone else took 50 GiB of GPU 0
    assert gpus.place() is gpus[1]
    async with gpus[1].hold("chat", memory_bytes=60 * GIB):  # GPU 1's budget now has less room
        assert gpus.place() is gpus[0]


def test_one_gpu_places_without_reading_it() -> None:
    devices = FakeDevices.with_gpus(80 * 1024)
    gpus = build_guards(
        load_settings(guard={"scope": "process", "policy": "budget"}).guard,
        detect=lambda: devices,
    )
    devices.fail()
    assert gpus.place() is gpus.first
