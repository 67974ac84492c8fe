"""The web page in headless Chromium: chat, the GPU lane, models, the timeline and the log."""

from __future__ import annotations

import asyncio
import logging
import re

from playwright.async_api import expect

from ..server.conftest import gpu_held
from .conftest import OpenPage, check_screenshot, has_colour

ACCENT = (0x2F, 0x6F, 0xED)  # a hold on the interactive lane
CPU = (0x8A, 0x5C, 0xF6)  # a CPU fallback mark
HATCH = (0xE7, 0xB4, 0x54)  # the hatching of a wait


async def send(page: object, text: str) -> None:
    await page.fill("#chat-input", text)  # type: ignore[attr-defined]
    await page.click("#chat-send")  # type: ignore[attr-defined]


async def last_answer_is(tab: object, text: str) -> None:
    await tab.wait_for_function(  # type: ignore[attr-defined]
        "t => [...document.querySelectorAll('.msg.assistant')].pop()?.textContent === t", arg=text
    )


async def test_chat_is_a_conversation_with_waiting_for_gpu(open_page: OpenPage) -> None:
    async with open_page() as page:
        tab = page.page
        await send(tab, "hello from chromium")
        await last_answer_is(tab, "echo: hello from chromium")

        async with gpu_held(page.gateway.guard) as release:
            await send(tab, "second question")
            waiting = tab.locator("#gpu-waiting")
            await waiting.wait_for()
            assert await waiting.inner_text() == "Waiting for GPU... (held by test-holder)"
            await tab.wait_for_function(
                "document.getElementById('lane-holder-value').textContent.startsWith('test-holder')"
            )
            await tab.wait_for_selector("#queue-interactive .chip")
            await tab.wait_for_selector("#swim .swim-wait")
            await page.screenshot("chat-waiting-for-gpu")
            release.set()
        await waiting.wait_for(state="detached")
        await last_answer_is(tab, "echo: second question")

        # The second request carried the whole conversation.
        second = page.backend.chats[-1]
        assert [(m.role, m.content) for m in second] == [
            ("user", "hello from chromium"),
            ("assistant", "echo: hello from chromium"),
            ("user", "second question"),
        ]
        # The chat that waited is one row with its wait and hold times.
        row = tab.locator("#timeline li.cat-chat.st-completed:has-text('waited')")
        await row.wait_for()
        assert "held" in await row.inner_text()

        await tab.click("#chat-new")
        assert await tab.locator(".msg").count() == 0
        await send(tab, "fresh start")
        await last_answer_is(tab, "echo: fresh start")
        assert [m.content for m in page.backend.chats[-1]] == ["fresh start"]


async def test_model_buttons_follow_the_state_and_a_load_shows_its_time(
    open_page: OpenPage,
) -> None:
    async with open_page() as page:
        tab = page.page
        row = "#models-table tr[data-model='other-llm']"
        await tab.wait_for_selector(row)
        assert await tab.locator(f"{row} .badge").first.inner_text() == "not loaded"
        assert await tab.locator(f"{row} button[data-action=unload]").is_disabled()
        current = "#models-table tr[data-model='fake-llm']"
        assert await tab.locator(f"{current} button[data-action=load]").is_disabled()
        assert "1.3 GB VRAM" in await tab.locator(current).inner_text()

        async with gpu_held(page.gateway.guard) as release:
            await tab.click(f"{row} button[data-action=load]")
            # Waiting for the GPU: the row says what it does and for how long, and nothing
            # else can be started on it.
            await tab.wait_for_function(
                f"document.querySelector(\"{row} .badge\").textContent.startsWith('loading')"
                f" && document.querySelector(\"{row} .badge\").textContent.endsWith(' s')"
            )
            for verb in ("load", "unload", "prewarm"):
                assert await tab.locator(f"{row} button[data-action={verb}]").is_disabled()
            release.set()
        await tab.wait_for_function(
            f"document.querySelector(\"{row} .badge\").classList.contains('loaded')"
        )
        assert await tab.locator(f"{row} button[data-action=load]").is_disabled()
        assert "other-llm" in {m.id for m in await page.backend.loaded_models()}
        await tab.click(f"{row} button[data-action=unload]")
        await tab.wait_for_function(
            f"document.querySelector(\"{row} .badge\").textContent === 'not loaded'"
        )
        await tab.wait_for_selector("#timeline li:has-text('unload')")
        await tab.click(f"{row} button[data-action=prewarm]")
        await tab.wait_for_selector("#timeline li.cat-model.st-ready:has-text('model other-llm')")
        # Load, unload, prewarm: one row each, however many steps each went through.
        rows = tab.locator("#timeline li.cat-model:has-text('model other-llm')")
        assert [s.split()[1] for s in await rows.all_inner_texts()] == [
            "ready",
            "unloaded",
            "loaded",
        ]
        assert await tab.locator("#models-error").inner_text() == ""


async def test_swimlane_shows_holds_waits_and_cpu_fallbacks(
    open_page: OpenPage, tmp_path: object
) -> None:
    from pathlib import Path

    from gpuguard.cli._samples import write_sample_documents

    async with open_page() as page:
        tab = page.page
        documents = write_sample_documents(Path(str(tmp_path)) / "docs")
        async with gpu_held(page.gateway.guard) as release:
            await send(tab, "who has the GPU?")
            await tab.wait_for_selector("#gpu-waiting")
            # Indexing while the GPU is held: every batch goes to the CPU.
            await tab.fill("#docs-path", str(documents))
            await tab.click("#docs-form button")
            await tab.wait_for_selector("#swim .swim-fallback")
            await tab.select_option("#swim-window", "30")
            # Not synchronisation: a hold of a second and a half draws a bar one can see.
            await asyncio.sleep(1.5)
            release.set()
        await last_answer_is(tab, "echo: who has the GPU?")
        await tab.wait_for_selector("#jobs li .badge.completed")
        await tab.wait_for_selector("#swim .swim-hold.cat-chat")
        assert await tab.locator("#swim .swim-wait").count() >= 1
        image = check_screenshot(await page.screenshot("swimlane", selector="#swim"), min_height=60)
        assert has_colour(image, ACCENT)
        assert has_colour(image, CPU)
        assert has_colour(image, HATCH, tolerance=20)
        await page.screenshot("overview")


async def test_timeline_filter_and_log_view(open_page: OpenPage) -> None:
    async with open_page() as page:
        tab = page.page
        await send(tab, "one")
        await last_answer_is(tab, "echo: one")
        await tab.select_option("#timeline-filter", "chat")
        visible = tab.locator("#timeline li:not([hidden])")
        await tab.wait_for_selector("#timeline li.cat-chat")
        assert await visible.count() >= 1
        for text in await visible.all_inner_texts():
            assert "chat" in text
        assert await tab.locator("#timeline li.cat-model[hidden]").count() >= 1
        await tab.select_option("#timeline-filter", "")
        assert await tab.locator("#timeline li[hidden]").count() == 0

        log = logging.getLogger("gpuguard.page-test")
        log.warning("connecting to postgresql://app:hunter2@db.invalid/shop")
        log.warning("<img src=x onerror=\"document.title='pwned'\"> in a log line")
        await tab.wait_for_selector("#log-lines li:has-text('db.invalid')", timeout=10_000)
        await tab.wait_for_selector("#log-lines li:has-text('acquired: op=chat')")
        text = await tab.locator("#log-lines").inner_text()
        assert "hunter2" not in text
        assert "postgresql://app:***@db.invalid/shop" in text
        assert await tab.locator("#log-lines img").count() == 0
        assert "<img src=x" in text
        assert await tab.title() == "gpuguard"

        await tab.fill("#logs-filter", "db.invalid")
        assert await tab.locator("#log-lines li").count() == 1
        await tab.select_option("#logs-level", "ERROR")
        assert await tab.locator("#log-lines li").inner_text() == "no line matches the filter"


async def test_the_lane_shows_fields_it_does_not_know_yet(open_page: OpenPage) -> None:
    """A holder from another process, hung, with a field a later server may add."""
    async with open_page() as page:
        tab = page.page
        # The page re-renders the lane every second and on events: always with this state.
        await tab.evaluate(
            """const gpu = {current: null, snapshot: {
                guard: "gpu0", policy: "exclusive", taken_at: Date.now() / 1000,
                counters: {completed: 1, brand_new_counter: 3},
                holder: {lease_id: 9, operation: "load", model: "big", priority: "normal",
                         since: 1, held_s: 42.5, hung: true, hung_s: 12, pid: 4242,
                         host: "gpu-box", process: "worker", gpu_index: 1, nested: {a: 1}},
                waiters: [{lease_id: 10, operation: "chat", model: null, priority: "interactive",
                           effective_priority: "interactive", position: 1, since: 2,
                           waited_s: 3, host: "laptop"}]}};
            const realApi = api;
            api = async (path, ...rest) =>
                path.startsWith("/admin/gpu") ? gpu : realApi(path, ...rest);
            const realRender = renderLane;
            renderLane = () => realRender(gpu);  // whatever path re-renders the lane
            renderLane();"""
        )
        holder = tab.locator("#lane-holder-value")
        # A refresh already in flight may still draw the real (free) lane once: wait it out.
        await expect(holder).to_have_text("load \u00b7 big (normal, 43 s, hung for 12 s)")
        await expect(holder).to_have_class(re.compile(r"\bhung\b"))
        await expect(tab.locator("#lane-holder-extra")).to_have_text(
            "pid 4242 \u00b7 host gpu-box \u00b7 process worker \u00b7 gpu index 1"
        )
        chip = tab.locator("#queue-interactive .chip")
        await expect(chip).to_have_text("#1 chat")
        await expect(chip).to_have_attribute("title", re.compile("host laptop"))
