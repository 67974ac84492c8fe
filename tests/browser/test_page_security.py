"""The page under its own Content Security Policy, and out of other sites' frames."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from .conftest import OpenPage


@asynccontextmanager
async def another_site(html: str) -> AsyncIterator[str]:
    """A one-page site on another loopback port (another origin): yields its URL."""
    body = html.encode()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        head = f"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {len(body)}\r\n"
        writer.write(head.encode() + b"Connection: close\r\n\r\n" + body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.close()
        await server.wait_closed()


async def test_the_page_works_under_its_own_policy(open_page: OpenPage) -> None:
    # The fixture fails on any script error or CSP report; the page went live through its
    # one-time link, so the token exchange ran under the policy too.
    async with open_page(enforce_csp=True) as page:
        await page.page.wait_for_selector("#models-table tr[data-model='other-llm']")
        assert "#login" not in page.page.url  # the spent code left the address bar


async def test_another_site_cannot_frame_the_page(open_page: OpenPage) -> None:
    async with open_page(enforce_csp=True) as page:
        framing = f'<iframe id="victim" src="{page.url}/" width="800" height="600"></iframe>'
        async with another_site(framing) as site:
            browser = page.page.context.browser
            assert browser is not None
            attacker = await browser.new_page()
            try:
                await attacker.goto(site)
                await attacker.wait_for_selector("#victim")
                frame = await (await attacker.query_selector("#victim")).content_frame()
                assert frame is not None
                await frame.wait_for_load_state()
                # Blocked by frame-ancestors 'none': the frame holds Chromium's error page.
                assert not frame.url.startswith(page.url)
                assert await frame.query_selector("#chat-form") is None
            finally:
                await attacker.close()
