"""The page's own bugs, each driven in Chromium: log lines once, a favicon."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

from ..server.conftest import gpu_held
from .conftest import OpenPage

TOKEN_PROMPT = (
    "This server needs its token: open the link `gpuguard serve` printed, or paste the token here:"
)


async def test_log_refreshes_that_overlap_show_each_line_once(open_page: OpenPage) -> None:
    async with open_page() as page:
        tab = page.page
        for n in range(3):
            logging.getLogger("gpuguard.test").warning("line %d for the page", n)
        # Two refreshes at once (an event's and the timer's) ask for the same lines.
        await tab.evaluate("Promise.all([refreshLogs(), refreshLogs(), refreshLogs()])")
        await tab.wait_for_function(
            "[...document.querySelectorAll('#log-lines .message')]"
            ".some(m => m.textContent === 'line 2 for the page')"
        )
        seqs = await tab.evaluate("logs.lines.map(line => line.seq)")
        assert len(seqs) == len(set(seqs)), seqs
        shown = await tab.locator("#log-lines .message").all_inner_texts()
        assert shown.count("line 0 for the page") == 1, shown


async def test_the_favicon_is_served(open_page: OpenPage) -> None:
    async with open_page() as page:
        icon = await page.page.request.get(f"{page.url}/favicon.ico")
        assert icon.status == 200
        assert icon.headers["content-type"].startswith("image/")
        link = await page.page.get_attribute("link[rel=icon]", "href")
        assert link is not None
        linked = await page.page.request.get(f"{page.url}{link}")
        assert linked.status == 200


async def test_running_jobs_stay_on_top_whatever_order_they_arrive_in(
    open_page: OpenPage,
) -> None:
    async with open_page() as page:
        tab = page.page
        # After a reload, jobs arrive in the order the replayed events and the list give:
        # an old completed one, the running one, a later completed one, a queued one.
        await tab.evaluate(
            """() => {
              const job = (id, status, started_at) =>
                ({ id, job: "rag-indexing", status, started_at, done: 0, issues: [] });
              renderJob(job("old", "completed", 1));
              renderJob(job("running", "running", 2));
              renderJob(job("later", "completed", 3));
              renderJob(job("queued", "queued", 4));
            }"""
        )
        order = await tab.eval_on_selector_all(
            "#jobs li[data-job]", "xs => xs.map(x => x.dataset.job)"
        )
        assert order == ["running", "queued", "later", "old"]
        # The queued one starts: it joins the running ones, newest first.
        await tab.evaluate(
            "renderJob({ id: 'queued', job: 'rag-indexing', status: 'progress', kind: 'job' })"
        )
        order = await tab.eval_on_selector_all(
            "#jobs li[data-job]", "xs => xs.map(x => x.dataset.job)"
        )
        assert order == ["queued", "running", "later", "old"]


async def test_cancelling_the_token_prompt_asks_once_and_says_so(open_page: OpenPage) -> None:
    async with open_page(token="s3cret-token") as page:
        tab = page.page
        prompts: list[str] = []

        async def dismiss(dialog: Any) -> None:
            prompts.append(dialog.message)
            await dialog.dismiss()

        tab.on("dialog", dismiss)
        await tab.goto(page.url)
        await tab.wait_for_function(
            "document.getElementById('conn-label').textContent === 'token needed (click)'"
        )
        # Every view refreshes again (as its timer would): none asks a second time.
        await tab.evaluate(
            "Promise.all([refreshLane(), refreshLogs(), refreshJobs(), refreshModels()])"
        )
        assert prompts == [TOKEN_PROMPT]
        holder = await tab.inner_text("#lane-holder-value")
        assert holder == "unknown: this server needs its token"


async def test_the_token_answered_once_serves_every_view(open_page: OpenPage) -> None:
    async with open_page(token="s3cret-token") as page:
        tab = page.page
        prompts: list[str] = []

        async def answer(dialog: Any) -> None:
            prompts.append(dialog.message)
            await dialog.accept("s3cret-token")

        tab.on("dialog", answer)
        await tab.goto(page.url)
        await tab.wait_for_function(
            "document.getElementById('lane-holder-value').textContent === 'free'"
        )
        await tab.evaluate("Promise.all([refreshLane(), refreshLogs(), refreshJobs()])")
        assert prompts == [TOKEN_PROMPT]


async def test_a_queued_jobs_row_has_only_its_own_batches_and_time(open_page: OpenPage) -> None:
    async with open_page() as page:
        tab = page.page
        facts = await tab.evaluate(
            """() => {
              const now = serverNow();
              const job = (id, status, extra = {}) => ({
                id, job: "rag-indexing", status, started_at: now - 100, done: 0, issues: [],
                kind: "job", timestamp: now - 100, ...extra });
              renderJob(job("a", "started"));
              renderJob(job("b", "queued", { started_at: now - 50, timestamp: now - 50 }));
              // Job a's batches: two fall back to the CPU.
              for (const n of [1, 2]) onGpuEvent({ operation: "rag-indexing", status: "fallback",
                lease_id: 0, priority: "background", timestamp: now - 10 + n, holder: "chat" });
              const text = (id) => document.querySelector(
                `#timeline li[data-key="${timeline.jobRows.get(id)}"] .facts`).textContent;
              const before = { a: text("a"), b: text("b") };
              // Job b starts running ten seconds ago, after fifty queued.
              renderJob(job("b", "progress", { started_at: now - 50, timestamp: now - 10 }));
              return { ...before, bRunning: text("b") };
            }"""
        )
        assert "2 fallbacks" in facts["a"], facts
        assert "0 fallbacks" in facts["b"], facts
        assert not facts["b"].endswith(" s"), facts  # queued: no run time yet
        seconds_run = float(facts["bRunning"].rsplit(" \u00b7 ", 1)[-1].split()[0])
        assert 9 <= seconds_run < 30, facts  # from when it began to run, not from its queueing


async def test_a_running_job_shows_its_pace_and_time_left(open_page: OpenPage) -> None:
    async with open_page() as page:
        tab = page.page
        count = await tab.evaluate(
            """() => {
              const now = serverNow();
              renderJob({ id: "p", job: "rag-indexing", status: "running", started_at: now - 10,
                          done: 20, total: 60, issues: [] });
              return document.querySelector('#jobs li[data-job="p"] .job-count').textContent;
            }"""
        )
        pace = re.search(r"20 / 60 \u00b7 ([\d.]+)/s, about (\d+) s left", count)
        assert pace is not None, count
        assert 1.5 <= float(pace.group(1)) <= 2.0, count  # 20 done in about 10 s
        assert 15 <= int(pace.group(2)) <= 30, count  # 40 more at that pace


async def test_a_run_of_embedding_requests_is_one_row(open_page: OpenPage) -> None:
    async with open_page() as page:
        tab = page.page
        rows = await tab.evaluate(
            """() => {
              clearTimeline();
              const now = serverNow();
              const gpu = (lease_id, operation, status, extra = {}) => onGpuEvent({
                lease_id, operation, status, model: "all-MiniLM-L6-v2", priority: "interactive",
                timestamp: now + lease_id, waited_s: 0, held_s: 0, ...extra });
              for (const id of [1, 2, 3, 4, 5]) {
                gpu(id, "embed", "started");
                gpu(id, "embed", "completed", { held_s: 0.02 });
              }
              gpu(6, "chat", "started");  // something else happens: the next run is a new row
              gpu(7, "embed", "started");
              gpu(7, "embed", "completed", { held_s: 0.01 });
              return [...document.querySelectorAll('#timeline li')].map(li => li.textContent);
            }"""
        )
        assert len(rows) == 3, rows
        assert "1 request" in rows[0], rows
        assert "chat" in rows[1], rows
        assert "5 requests" in rows[2], rows
        assert "held 0.1 s in all" in " ".join(rows[2].split()), rows


async def test_the_waiting_bubble_goes_once_the_chat_has_the_gpu(open_page: OpenPage) -> None:
    async with open_page() as page:
        tab = page.page
        # The chat's model loads after the grant, and only when the test says: no token yet.
        gate = asyncio.Event()
        load = page.backend.load

        async def gated_load(model: str) -> None:
            await gate.wait()
            await load(model)

        page.backend.load = gated_load  # type: ignore[method-assign]
        await tab.wait_for_selector("#chat-model option[value='other-llm']", state="attached")
        await tab.select_option("#chat-model", "other-llm")
        async with gpu_held(page.gateway.guard, "rag-indexing") as release:
            await tab.fill("#chat-input", "are you there?")
            await tab.click("#chat-send")
            waiting = tab.locator("#gpu-waiting")
            await waiting.wait_for()
            assert await waiting.inner_text() == "Waiting for GPU... (held by rag-indexing)"
            release.set()
        await waiting.wait_for(state="detached")  # while the model still loads
        assert await tab.locator(".msg.assistant").count() == 0
        gate.set()
        await tab.wait_for_selector(".msg.assistant")
