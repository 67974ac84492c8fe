"""The page with two GPUs: one lane each, with a memory bar of what each holder counts."""

from __future__ import annotations

import asyncio

from gpuguard import GpuSet
from gpuguard.devices import FakeDevices
from gpuguard.settings import build_guards, load_settings

from .conftest import OpenPage

GIB = 1024**3


async def test_one_lane_per_gpu_with_its_memory_bar(open_page: OpenPage) -> None:
    devices = FakeDevices.with_gpus(8 * 1024, 80 * 1024)
    devices.set_free(1, 70 * GIB)  # another program has 10 GiB of GPU 1
    limits = load_settings(guard={"scope": "process", "name": "page0"}).guard
    gpus: GpuSet = build_guards(limits, detect=lambda: devices)
    async with open_page(gpus=gpus, enforce_csp=True) as page:
        tab = page.page
        lanes = tab.locator("#gpu-lanes li.gpu-lane")
        await tab.locator("#gpu-lanes li[data-gpu='gpu1']").wait_for()
        assert await lanes.count() == 2
        release = asyncio.Event()
        held = asyncio.Event()

        async def train() -> None:
            async with gpus[1].hold("train", model="big", memory_bytes=20 * GIB):
                held.set()
                await release.wait()

        holder = asyncio.create_task(train())
        await held.wait()
        gpu1 = tab.locator("#gpu-lanes li[data-gpu='gpu1']")
        await gpu1.locator(".gpu-holders:not(.idle)").wait_for()
        assert "train \u00b7 big" in await gpu1.inner_text()
        assert "budget" in await gpu1.inner_text()
        bar = gpu1.locator("svg.gpu-memory")
        assert float(await bar.locator("rect.mem-holder").get_attribute("width") or 0) == 250
        assert await bar.locator("rect.mem-other").count() == 1
        gpu0 = tab.locator("#gpu-lanes li[data-gpu='page0']")
        assert "exclusive" in await gpu0.inner_text()
        assert await gpu0.locator("svg.gpu-memory").count() == 0  # exclusive reads no memory
        await page.screenshot("two-gpu-lanes", selector="section.lane")
        release.set()
        await holder
    await gpus.aclose()


async def test_one_exclusive_gpu_draws_no_extra_lane(open_page: OpenPage) -> None:
    async with open_page(enforce_csp=True) as page:
        tab = page.page
        await tab.locator("#lane-guard:has-text('exclusive')").wait_for()
        assert await tab.locator("#gpu-lanes li").count() == 0
        assert not await tab.locator("#gpu-lanes").is_visible()


async def test_leases_of_two_gpus_with_the_same_id_are_two_bars_and_two_rows(
    open_page: OpenPage,
) -> None:
    devices = FakeDevices.with_gpus(80 * 1024, 80 * 1024)
    limits = load_settings(guard={"scope": "process", "name": "page0"}).guard
    gpus: GpuSet = build_guards(limits, detect=lambda: devices)
    async with open_page(gpus=gpus, enforce_csp=True) as page:
        tab = page.page
        await tab.locator("#gpu-lanes li[data-gpu='gpu1']").wait_for()
        release = asyncio.Event()
        held = [asyncio.Event(), asyncio.Event()]

        async def hold(index: int, operation: str, lease_id: int | None = None) -> int:
            while True:  # each guard counts its own leases: meet the other GPU's id
                async with gpus[index].hold(operation) as lease:
                    if lease_id is None or lease.lease_id >= lease_id:
                        held[index].set()
                        await release.wait()
                        return lease.lease_id

        first = asyncio.create_task(hold(0, "finetune"))
        await held[0].wait()
        same = gpus[0].current
        assert same is not None
        second = asyncio.create_task(hold(1, "train", same.lease_id))
        await held[1].wait()
        await tab.locator("#timeline li.st-started:has-text('finetune')").wait_for()
        await tab.locator("#timeline li.st-started:has-text('train')").wait_for()
        bars = tab.locator("#swim rect.swim-hold.live")
        await tab.locator("#swim rect.swim-hold.live >> nth=1").wait_for()
        assert await bars.count() == 2
        titles = [await bars.nth(i).locator("title").text_content() or "" for i in range(2)]
        assert sorted(title.split(":")[0] for title in titles) == ["gpu1", "page0"]
        release.set()
        assert await first == await second  # the same id on two GPUs
    await gpus.aclose()
