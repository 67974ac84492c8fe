"""The pictures in docs/screenshots: the page on embedded defaults, in its main states.

Each scene brings the page on a server built as ``gpuguard serve`` builds it (see
``open_served_page``) to one state and keeps a picture of it. The GPU is held, where a
scene needs it held, by another program's lease through the library, as a training script
beside the server would hold it. Without ``GPUGUARD_SCREENSHOTS`` the pictures go to a
temporary folder: the scenes still run, so ``make screenshots`` keeps working.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gpuguard.cli._samples import write_sample_database, write_sample_documents

from ..server.conftest import gpu_held
from .conftest import PHONE, OpenServedPage, ServedPage, check_screenshot
from .test_page import send

pytestmark = pytest.mark.slow  # llama.cpp and the bundled embedding models, for real

OTHER_PROGRAM = "nightly-finetune"


async def answered(tab: Any) -> None:
    """The last chat answer has finished streaming."""
    await tab.wait_for_selector("#chat-send:not([disabled])")
    await tab.wait_for_selector(".msg.assistant")


async def index_folder(page: ServedPage, folder: str) -> None:
    await page.page.fill("#docs-path", folder)
    await page.page.click("#docs-form button")


async def refresh_schemas(page: ServedPage, url: str) -> None:
    await page.page.fill("#db-url", url)
    await page.page.click("#db-form button")


async def test_a_chat_waiting_for_the_gpu(open_served_page: OpenServedPage) -> None:
    async with open_served_page() as page:
        tab = page.page
        await send(tab, "hello")
        await answered(tab)
        async with gpu_held(page.gateway.guard, OTHER_PROGRAM) as release:
            await send(tab, "what does the handbook say about refunds?")
            await tab.wait_for_selector("#gpu-waiting")
            await tab.wait_for_selector("#queue-interactive .chip")
            await tab.wait_for_selector("#swim .swim-wait")
            check_screenshot(await page.screenshot("chat-waiting-for-gpu"))
            release.set()
        await answered(tab)


async def test_the_swimlane_and_the_whole_page(open_served_page: OpenServedPage) -> None:
    async with open_served_page() as page:
        tab = page.page
        documents = write_sample_documents(page.home / "handbook")
        async with gpu_held(page.gateway.guard, OTHER_PROGRAM) as release:
            await send(tab, "who has the GPU?")
            await tab.wait_for_selector("#gpu-waiting")
            # Indexing while the GPU is held: the batches go to the CPU.
            await index_folder(page, str(documents))
            await tab.wait_for_selector("#swim .swim-fallback")
            await tab.select_option("#swim-window", "30")
            # Not synchronisation: a hold of a few seconds draws a bar one can see.
            await asyncio.sleep(3)
            release.set()
        await answered(tab)
        await tab.wait_for_selector("#jobs li .badge.completed")
        await tab.wait_for_selector("#swim .swim-hold.cat-chat")
        check_screenshot(await page.screenshot("swimlane", selector="#swim"), min_height=60)
        check_screenshot(await page.screenshot("overview"))


async def test_indexing_jobs(open_served_page: OpenServedPage) -> None:
    async with open_served_page() as page:
        tab = page.page
        database = write_sample_database(page.home / "shop.sqlite")
        documents = write_sample_documents(page.home / "handbook")
        (documents / "broken.pdf").write_bytes(b"%PDF-1.4\nnot really a pdf")
        await refresh_schemas(page, database)
        await tab.wait_for_selector("#jobs li.st-completed")
        await index_folder(page, str(documents))
        await tab.wait_for_function(
            "document.querySelectorAll('#jobs li.st-completed').length === 2"
        )
        # A database that does not answer (nothing listens on port 1): the job fails.
        await refresh_schemas(page, "postgresql://app:hidden-pw@127.0.0.1:1/shop")
        await tab.wait_for_selector("#jobs li.st-failed .job-detail.bad")
        await tab.wait_for_function(
            "document.querySelectorAll('#timeline li.cat-job').length === 3"
        )
        check_screenshot(await page.screenshot("indexing-jobs"))


async def test_a_phone_sized_page(open_served_page: OpenServedPage) -> None:
    async with open_served_page(viewport=PHONE) as page:
        tab = page.page
        await refresh_schemas(page, write_sample_database(page.home / "shop.sqlite"))
        await tab.wait_for_selector("#jobs li.st-completed")
        await send(tab, "hi")
        await answered(tab)
        png = await page.screenshot("phone")
        check_screenshot(png, width=PHONE["width"], min_height=PHONE["height"])
