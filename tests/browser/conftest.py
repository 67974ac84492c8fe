"""A live server, and the web page open in headless Chromium.

Chromium is Debian's (``apt-get install chromium``), driven by Playwright. The page tests
run over in-memory fakes (``open_page``) and keep their pictures in a temporary folder.
The pictures in the docs come from ``open_served_page``: the server as ``gpuguard serve``
runs it on embedded defaults, which writes them to ``GPUGUARD_SCREENSHOTS`` (``make
screenshots`` points it at docs/screenshots).
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from gpuguard import GpuSet
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


@dataclass(kw_only=True)
class OpenTab:
    """The open tab, the gateway behind its server, and where its pictures go."""

    page: Any
    gateway: ModelGateway
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


@dataclass(kw_only=True)
class PageUnderTest(OpenTab):
    """A tab on a server over in-memory fakes, and the fake LLM backend behind it."""

    backend: FakeBackend


@dataclass(kw_only=True)
class ServedPage(OpenTab):
    """A tab on the server as ``gpuguard serve`` runs it, and the user's folder it may index."""

    home: Path


OpenPage = Callable[..., AbstractAsyncContextManager[PageUnderTest]]
OpenServedPage = Callable[..., AbstractAsyncContextManager[ServedPage]]


@asynccontextmanager
async def browser_tab(
    url: str | None, *, viewport: Any, enforce_csp: bool = False
) -> AsyncIterator[Any]:
    """A Chromium tab on ``url`` (a one-time login link), once its live events flow.

    With ``url`` None the test opens the page itself. Playwright's ``wait_for_function``
    evaluates strings, which the page's CSP forbids: the tests of behaviour bypass it, the
    tests of the policy enforce it. On the way out, the page's own scripts must not have
    thrown, nor broken its own policy.
    """
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            tab = await browser.new_page(viewport=viewport, bypass_csp=not enforce_csp)
            script_errors: list[str] = []
            tab.on("pageerror", lambda error: script_errors.append(str(error)))

            def on_console(message: Any) -> None:
                if "Content Security Policy" in message.text:
                    script_errors.append(message.text)  # the page broke its own policy

            tab.on("console", on_console)
            if url is not None:
                await tab.goto(url)
                await tab.wait_for_selector("#conn.live")
            yield tab
            assert script_errors == [], script_errors
        finally:
            await browser.close()


@pytest.fixture
def open_page(tmp_path: Path) -> OpenPage:
    """Opens the page on a fresh server: ``async with open_page(viewport=PHONE) as page``."""
    require_chromium()
    shots = tmp_path / "shots"
    shots.mkdir()

    @asynccontextmanager
    async def opened(
        *,
        viewport: Any = DESKTOP,
        load_delay_s: float = 0.0,
        token: str | None = None,
        enforce_csp: bool = False,
        gpus: GpuSet | None = None,
    ) -> AsyncIterator[PageUnderTest]:
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
            gpus=gpus,
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
        async with running_server(app) as url:
            # As a person would: through the one-time link `gpuguard serve` prints; with a
            # token of the operator's, the test answers the page's prompt itself.
            login = app.state.access.login_url(url) if token is None else None
            async with browser_tab(login, viewport=viewport, enforce_csp=enforce_csp) as tab:
                yield PageUnderTest(
                    page=tab, gateway=gateway, backend=backend, url=url, shots=shots
                )
        await manager.aclose()
        store.close()
        await gateway.aclose()

    return opened


# A plain folder, named like a user's, for the pictures in the docs: the server starts in it.
USER_HOME = Path(tempfile.gettempdir()) / "ada"


@pytest.fixture
def open_served_page(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[OpenServedPage]:
    """The page on the server as ``gpuguard serve``, started in a user's folder, runs it.

    Embedded defaults throughout: in-process llama.cpp on the generated tiny model
    (prewarmed at start), the bundled embedding models, the data dir ``.gpuguard`` and
    documents allowed under the folder it started in (made empty for each test); only the
    GPU lease meets in a folder of its own, not the machine's. With ``GPUGUARD_SCREENSHOTS``
    the pictures go there and the folder is :data:`USER_HOME`; else both are temporary.
    """
    require_chromium()
    target = os.environ.get("GPUGUARD_SCREENSHOTS")
    home = USER_HOME if target else tmp_path / "ada"
    shots = Path(target).resolve() if target else tmp_path / "shots"
    shots.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    monkeypatch.chdir(home)
    monkeypatch.setenv("GPUGUARD_GUARD__LOCK_DIR", str(home / ".gpuguard" / "locks"))

    @asynccontextmanager
    async def opened(*, viewport: Any = DESKTOP) -> AsyncIterator[ServedPage]:
        app = create_app()  # settings from the environment, as `gpuguard serve` reads them
        async with (
            running_server(app) as url,
            browser_tab(app.state.access.login_url(url), viewport=viewport) as tab,
        ):
            await tab.wait_for_selector("#models-table .badge.current")  # prewarmed
            gateway = app.state.context.gateway
            yield ServedPage(page=tab, gateway=gateway, url=url, shots=shots, home=home)

    yield opened
    shutil.rmtree(home, ignore_errors=True)


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
