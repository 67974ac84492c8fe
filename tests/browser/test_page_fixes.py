"""The page's own bugs, each driven in Chromium: log lines once, a favicon."""

from __future__ import annotations

import logging

from .conftest import OpenPage


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
