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
