"""A live server over in-memory fakes, and the web page open in headless Chromium.

Chromium is Debian's (``apt-get install chromium``), driven by Playwright. Screenshots go to
``GPUGUARD_SCREENSHOTS`` (``make screenshots`` points it at docs/screenshots) or a temporary
folder.
"""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from gpuguard.embed import BulkEmbedder
from gpuguard.gateway import ModelGateway
from gpuguard.index import VectorStore
from gpuguard.jobs import JobManager
from gpuguard.server import create_app, running_server
from gpuguard.server._jobs import IndexingJobs
from gpuguard.settings import LlmSettings, ServerSettings, Settings, SourceSettings
from gpuguard.testing import FakeBackend, HashEmbedder

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
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}


def require_chromium() -> None:
    """Skip without Chromium, except in CI where its absence is a failure."""
    if Path(CHROMIUM).exists():
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"Chromium is required in CI but {CHROMIUM} does not exist")
    pytest.skip("Chromium is not installed (apt-get install chromium)")


@dataclass
class PageUnderTest:
    """The open tab and what is behind the server."""

    page: Any
    gateway: ModelGateway
    backend: FakeBackend
    url: str
    shots: Path

    async def screenshot(self, name: str, *, selector: str | None = None) -> bytes:
        """A PNG of the whole page (or one element), kept as ``<shots>/<name>.png``."""
        path = self.shots / f"{name}.png"
        if selector is None:
            png: bytes = await self.page.screenshot(path=str(path), full_page=True)
        else:
            png = await self.page.locator(selector).screenshot(path=str(path))
        return png


OpenPage = Callable[..., AbstractAsyncContextManager[PageUnderTest]]


@pytest.fixture
def open_page(tmp_path: Path) -> OpenPage:
    """Opens the page on a fresh server: ``async with open_page(viewport=PHONE) as page``."""
    require_chromium()
    shots = Path(os.environ.get("GPUGUARD_SCREENSHOTS") or tmp_path / "shots")
    shots.mkdir(parents=True, exist_ok=True)

    @asynccontextmanager
    async def opened(
        *,
        viewport: Any = DESKTOP,
        load_delay_s: float = 0.0,
        token: str | None = None,
        enforce_csp: bool = False,
    ) -> AsyncIterator[PageUnderTest]:
        # Playwright's wait_for_function evaluates strings, which the page's CSP forbids:
        # the tests of behaviour bypass it; the tests of the policy enforce it.
        from playwright.async_api import async_playwright

        backend = FakeBackend(
            ["fake-llm", "other-llm"],
            token_delay_s=0.02,
            load_delay_s=load_delay_s,
            sizes={"fake-llm": 1_300_000_000, "other-llm": 4_700_000_000},
        )
        gateway = ModelGateway(
            backend,
            model="fake-llm",
            gpu_embedder=HashEmbedder(device="cuda"),
            cpu_embedder=HashEmbedder(),
        )
        assert gateway.embedders is not None
        await gateway.load("fake-llm")
        store = VectorStore(tmp_path / "index.db")
        manager = JobManager(events=gateway.events)
        jobs = IndexingJobs(
            manager,
            store=store,
            bulk=BulkEmbedder(gateway.embedders, gateway.guard, batch_size=4),
            events=gateway.events,
            rewarm=gateway.rewarm,
            sources=SourceSettings(document_roots=[tmp_path]),
        )
        server = ServerSettings(token=None if token is None else SecretStr(token))
        settings = Settings(llm=LlmSettings(backend="fake"), server=server)
        app = create_app(settings, gateway=gateway, jobs=jobs)
        async with running_server(app) as url, async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                tab = await browser.new_page(viewport=viewport, bypass_csp=not enforce_csp)
                script_errors: list[str] = []
                tab.on("pageerror", lambda error: script_errors.append(str(error)))

                def on_console(message: Any) -> None:
                    if "Content Security Policy" in message.text:
                        script_errors.append(message.text)  # the page broke its own policy

                tab.on("console", on_console)
                if token is None:  # with a token, the test answers the page's prompt itself
                    # As a person would: through the one-time link `gpuguard serve` prints.
                    await tab.goto(app.state.access.login_url(url))
                    await tab.wait_for_selector("#conn.live")
                yield PageUnderTest(tab, gateway, backend, url, shots)
                assert script_errors == [], script_errors  # the page's own scripts never threw
            finally:
                await browser.close()
        await manager.aclose()
        store.close()
        await gateway.aclose()

    return opened


def check_screenshot(png: bytes, *, width: int | None = None, min_height: int = 100) -> Any:
    """A real PNG (of ``width`` when given) that is not blank; the decoded RGB image."""
    from PIL import Image

    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    image = Image.open(io.BytesIO(png)).convert("RGB")
    assert width is None or image.size[0] == width
    assert min_height <= image.size[1] <= 6000
    grey = image.convert("L")
    extrema = grey.getextrema()
    assert isinstance(extrema, tuple)
    low, high = extrema
    assert isinstance(low, int)
    assert isinstance(high, int)
    assert high - low > 100  # text on a background, not one flat colour
    assert len(set(image.resize((160, 120)).get_flattened_data())) > 20
    return image


def has_colour(image: Any, rgb: tuple[int, int, int], *, tolerance: int = 12) -> bool:
    """True when some pixel of ``image`` is within ``tolerance`` of ``rgb`` on each channel."""
    return any(
        all(abs(pixel[i] - rgb[i]) <= tolerance for i in range(3))
        for pixel in image.get_flattened_data()
    )
