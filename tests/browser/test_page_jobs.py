"""The indexing panel and a phone-sized page, in headless Chromium."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gpuguard.cli._samples import write_sample_database, write_sample_documents

from .conftest import PHONE, OpenPage, check_screenshot

SECRET = "s3cret-pw"
# PostgreSQL here trusts local connections, so the password is ignored but still travels.
POSTGRES_WITH_PASSWORD = f"postgresql://postgres:{SECRET}@127.0.0.1:5432/test"


def job_item(tab: Any, job: str) -> Any:
    return tab.locator(f"#jobs li:has(.job-name:text-is('{job} completed'))")


async def test_jobs_show_their_kind_source_status_and_kept_errors(
    open_page: OpenPage, tmp_path: Path
) -> None:
    documents = write_sample_documents(tmp_path / "docs")
    (documents / "broken.pdf").write_bytes(b"%PDF-1.4\nnot really a pdf")
    async with open_page() as page:
        tab = page.page

        # Each form has its own error line: the second error leaves the first one in place.
        await tab.fill("#db-url", "not a url")
        await tab.click("#db-form button")
        await tab.wait_for_function("document.getElementById('db-error').textContent !== ''")
        await tab.fill("#docs-path", str(tmp_path / "missing"))
        await tab.click("#docs-form button")
        await tab.wait_for_function("document.getElementById('docs-error').textContent !== ''")
        assert "no such file or folder" in await tab.locator("#docs-error").inner_text()
        assert await tab.locator("#db-error").inner_text() != ""

        await tab.fill("#db-url", POSTGRES_WITH_PASSWORD)
        await tab.click("#db-form button")
        await tab.wait_for_selector("#jobs li.st-completed")
        assert await tab.locator("#db-error").inner_text() == ""
        database = tab.locator("#jobs li.st-completed").first
        assert await database.locator(".job-name").inner_text() == "schema-refresh completed"
        assert (
            await database.locator(".job-source").inner_text()
            == "postgresql://postgres:***@127.0.0.1:5432/test"
        )

        await tab.fill("#docs-path", str(documents))
        await tab.click("#docs-form button")
        await tab.wait_for_function(
            "document.querySelectorAll('#jobs li.st-completed').length === 2"
        )
        folder = tab.locator("#jobs li.st-completed").first
        assert await folder.locator(".job-name").inner_text() == "rag-indexing completed"
        assert await folder.locator(".job-source").inner_text() == str(documents)
        # The skipped file's reason stays after the job has ended.
        await folder.locator(".job-issues li:has-text('broken.pdf')").wait_for()
        width = await folder.locator(".bar span").evaluate("e => e.style.width")
        assert width == "100%"

        # An allowed database that does not answer (nothing listens on port 1): the job
        # starts, then fails, and says so in red.
        await tab.fill("#db-url", "postgresql://u:hidden-pw@127.0.0.1:1/x")
        await tab.click("#db-form button")
        failed = tab.locator("#jobs li.st-failed")
        await failed.wait_for()
        assert "failed" in await failed.locator(".badge").inner_text()
        assert await failed.locator(".bar span").evaluate("e => e.style.width") == "100%"
        # A red, full bar (not a grey empty one); the job view may still be redrawn.
        await tab.wait_for_function(
            "(() => { const bar = document.querySelector('#jobs li.st-failed .bar span');"
            " return bar && getComputedStyle(bar).backgroundColor === 'rgb(211, 66, 61)'; })()"
        )
        assert await failed.locator(".job-detail.bad").inner_text() != ""

        # The timeline folds each job's batches into one row, with its counts and time.
        await tab.wait_for_function(
            "document.querySelectorAll('#timeline li.cat-job').length === 3"
        )
        rows = await tab.locator("#timeline li.cat-job").all_inner_texts()
        assert any(
            "rag-indexing" in row and "GPU batch" in row and "fallback" in row for row in rows
        )
        for row in await tab.locator("#timeline li .what").all():
            assert await row.evaluate("e => e.scrollWidth <= e.clientWidth + 1")

        html = await tab.content()
        assert SECRET not in html
        assert "hidden-pw" not in html
        assert ">job<" not in html
        await page.screenshot("indexing-jobs")


async def test_a_phone_sized_page_does_not_spill(open_page: OpenPage, tmp_path: Path) -> None:
    database = write_sample_database(tmp_path / "shop.sqlite")
    async with open_page(viewport=PHONE) as page:
        tab = page.page
        await tab.wait_for_selector("#models-table tr[data-model='fake-llm'] .badge.current")
        await tab.fill("#db-url", database)
        await tab.click("#db-form button")
        await tab.wait_for_selector("#jobs li.st-completed")
        await tab.fill("#chat-input", "hi")
        await tab.click("#chat-send")
        await tab.wait_for_selector(".msg.assistant")

        assert await tab.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        spilled = await tab.evaluate(
            "[...document.querySelectorAll('.card, .card *')]"
            ".filter(e => e.getBoundingClientRect().right > window.innerWidth + 0.5)"
            ".map(e => e.tagName + '.' + e.className)"
        )
        assert spilled == []
        # "loaded" and "current" each stay on one line.
        for badge in await tab.locator("#models-table tr[data-model='fake-llm'] .badge").all():
            height = await badge.evaluate("e => e.getBoundingClientRect().height")
            assert height < 24
        png = await page.screenshot("phone")
        check_screenshot(png, width=PHONE["width"], min_height=PHONE["height"])


async def test_a_running_job_says_running_and_keeps_its_name(open_page: OpenPage) -> None:
    """Events carry ``kind: "job"``; the job's own name is ``job`` and survives them."""
    async with open_page() as page:
        tab = page.page
        await tab.evaluate(
            """renderJob({id: "j1", job: "rag-indexing", source: "/srv/handbook",
                          status: "running", done: 0, total: 4, issues: []});
               renderJob({kind: "job", job_id: "j1", job: "rag-indexing", status: "progress",
                          timestamp: Date.now() / 1000, done: 1, total: 4,
                          detail: "skipped broken.pdf", issue: "broken.pdf: not a PDF"})"""
        )
        item = tab.locator("#jobs li[data-job='j1']")
        assert await item.locator(".job-name").inner_text() == "rag-indexing running"
        assert await item.locator(".job-source").inner_text() == "/srv/handbook"
        assert await item.locator(".job-count").inner_text() == "1 / 4 Cancel"
        assert await item.locator(".bar span").evaluate("e => e.style.width") == "25%"
        assert await item.locator(".job-issues li").all_inner_texts() == ["broken.pdf: not a PDF"]
