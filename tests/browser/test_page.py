"""The web page in headless Chromium (Debian's, driven by Playwright)."""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gpuguard._settings import LlmSettings, Settings, SourceSettings
from gpuguard.cli._samples import write_sample_database, write_sample_documents
from gpuguard.embed import BulkEmbedder
from gpuguard.gateway import ModelGateway
from gpuguard.index import VectorStore
from gpuguard.jobs import JobManager
from gpuguard.server import create_app, running_server
from gpuguard.server._jobs import IndexingJobs
from gpuguard.testing import FakeBackend, HashEmbedder

from ..server.conftest import gpu_held

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT = Path(os.environ.get("GPUGUARD_SCREENSHOT", "/tmp/gpuguard-page.png"))


def require_chromium() -> None:
    """Skip without Chromium, except in CI where its absence is a failure."""
    if Path(CHROMIUM).exists():
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"Chromium is required in CI but {CHROMIUM} does not exist")
    pytest.skip("Chromium is not installed (apt-get install chromium)")


@dataclass
class PageUnderTest:
    page: Any
    gateway: ModelGateway
    url: str


@pytest.fixture
async def page(tmp_path: Path) -> AsyncIterator[PageUnderTest]:
    require_chromium()
    from playwright.async_api import async_playwright

    gateway = ModelGateway(
        FakeBackend(["fake-llm", "other-llm"], token_delay_s=0.02),
        model="fake-llm",
        gpu_embedder=HashEmbedder(device="cuda"),
        cpu_embedder=HashEmbedder(),
    )
    assert gateway.embedders is not None
    store = VectorStore(tmp_path / "index.db")
    manager = JobManager(events=gateway.events)
    jobs = IndexingJobs(
        manager,
        store=store,
        bulk=BulkEmbedder(gateway.embedders, gateway.guard, batch_size=8),
        events=gateway.events,
        rewarm=gateway.rewarm,
        sources=SourceSettings(document_roots=[tmp_path]),
    )
    app = create_app(Settings(llm=LlmSettings(backend="fake")), gateway=gateway, jobs=jobs)
    async with running_server(app) as url, async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            tab = await browser.new_page(viewport={"width": 1280, "height": 860})
            await tab.goto(url)
            await tab.wait_for_selector("#conn.live")
            yield PageUnderTest(tab, gateway, url)
        finally:
            await browser.close()
    await manager.aclose()
    store.close()
    await gateway.aclose()


async def send(page: Any, text: str) -> None:
    await page.fill("#chat-input", text)
    await page.click("#chat-send")


async def test_chat_streams_and_shows_waiting_for_gpu(page: PageUnderTest) -> None:
    tab = page.page
    await tab.wait_for_selector("#models-table tr[data-model='fake-llm']")
    await send(tab, "hello from chromium")
    answer = tab.locator(".msg.assistant").last
    await answer.wait_for()
    await tab.wait_for_function(
        "document.querySelector('.msg.assistant').textContent === 'echo: hello from chromium'"
    )

    async with gpu_held(page.gateway.guard) as release:
        await send(tab, "second question")
        waiting = tab.locator("#gpu-waiting")
        await waiting.wait_for()
        assert await waiting.inner_text() == "Waiting for GPU... (held by test-holder)"
        await tab.wait_for_function(
            "document.getElementById('lane-holder-value').textContent.startsWith('test-holder')"
        )
        await tab.wait_for_selector("#queue-interactive .chip")
        release.set()
    await waiting.wait_for(state="detached")
    await tab.wait_for_function(
        "[...document.querySelectorAll('.msg.assistant')].pop().textContent"
        " === 'echo: second question'"
    )
    await tab.wait_for_selector("#timeline li.st-waiting")
    await tab.wait_for_selector("#lane-holder-value.idle")
    assert await tab.locator("#timeline li").count() >= 6

    png = await tab.screenshot(path=str(SCREENSHOT), full_page=True)
    check_screenshot(png)


async def test_models_panel_loads_and_unloads(page: PageUnderTest) -> None:
    tab = page.page
    row = "#models-table tr[data-model='other-llm']"
    await tab.wait_for_selector(row)
    assert await tab.locator(f"{row} .badge").inner_text() == "not loaded"
    await tab.click(f"{row} button:has-text('Load')")
    await tab.wait_for_function(
        f"document.querySelector(\"{row} .badge\").classList.contains('loaded')"
    )
    assert "other-llm" in {m.id for m in await page.gateway.backend.loaded_models()}
    await tab.click(f"{row} button:has-text('Unload')")
    await tab.wait_for_function(
        f"!document.querySelector(\"{row} .badge\").classList.contains('loaded')"
    )
    await tab.wait_for_selector("#timeline li:has-text('unload')")


async def test_indexing_panel_shows_progress_and_errors(
    page: PageUnderTest, tmp_path: Path
) -> None:
    tab = page.page
    database = write_sample_database(tmp_path / "shop.sqlite")
    documents = write_sample_documents(tmp_path / "docs")

    await tab.fill("#db-url", "not a url")
    await tab.click("#db-form button")
    await tab.wait_for_function("document.getElementById('index-error').textContent.length > 0")

    await tab.fill("#db-url", database)
    await tab.click("#db-form button")
    await tab.wait_for_selector("#jobs li .badge.completed")
    width = await tab.locator("#jobs li .bar span").first.evaluate("e => e.style.width")
    assert width == "100%"
    assert await tab.locator("#index-error").inner_text() == ""

    await tab.fill("#docs-path", str(documents))
    await tab.click("#docs-form button")
    await tab.wait_for_function(
        "document.querySelectorAll('#jobs li .badge.completed').length === 2"
    )
    assert await tab.locator("#jobs li").count() == 2


def check_screenshot(png: bytes) -> None:
    """A real PNG of a sensible size that is not blank."""
    from PIL import Image

    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    image = Image.open(io.BytesIO(png)).convert("L")
    width, height = image.size
    assert width == 1280
    assert 600 <= height <= 4000
    extrema = image.getextrema()
    assert isinstance(extrema, tuple)
    low, high = extrema
    assert isinstance(low, int)
    assert isinstance(high, int)
    assert high - low > 100  # text on a background, not one flat colour
    colours = len(set(image.resize((160, 120)).get_flattened_data()))
    assert colours > 20
