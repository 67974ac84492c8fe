"""Clickjacking and script injection: every answer forbids framing and inline script.

(A real browser framing the page from another port: tests/browser/test_page_security.py.)
"""

from __future__ import annotations

import re
from importlib import resources

import httpx
import pytest

from .conftest import ServeFactory


def assert_locked_down(response: httpx.Response) -> None:
    policy = response.headers.get("content-security-policy", "")
    directives = {part.split()[0]: part.split()[1:] for part in policy.split("; ") if part}
    assert directives.get("frame-ancestors") == ["'none'"], policy
    assert directives.get("script-src") == ["'self'"], policy
    assert "'unsafe-inline'" not in policy
    assert "'unsafe-eval'" not in policy
    assert response.headers.get("x-frame-options") == "DENY"
    assert response.headers.get("x-content-type-options") == "nosniff"


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("GET", "/", {}),
        ("GET", "/static/app.js", {}),
        ("GET", "/v1/models", {}),
        ("GET", "/admin/status", {"Authorization": "Bearer wrong"}),  # a 401
        ("GET", "/v1/models", {"Host": "evil.example"}),  # a 421, refused before the app
        ("GET", "/nope", {}),  # a 404
    ],
)
async def test_every_answer_forbids_framing_and_inline_script(
    serve: ServeFactory, method: str, path: str, headers: dict[str, str]
) -> None:
    async with serve() as server:
        assert_locked_down(await server.http.request(method, path, headers=headers))


async def test_a_streamed_answer_carries_the_policy_too(serve: ServeFactory) -> None:
    async with serve() as server:
        body = {"model": "fake-llm", "messages": [{"role": "user", "content": "a b"}]}
        async with server.http.stream(
            "POST", "/v1/chat/completions", json={**body, "stream": True}
        ) as stream:
            assert_locked_down(stream)
            assert "[DONE]" in "".join([chunk async for chunk in stream.aiter_text()])


def test_the_page_has_no_inline_script_style_or_handlers() -> None:
    # What the policy forbids, the page must not need: it would break, not get through.
    html = (resources.files("gpuguard.server") / "static" / "index.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html)
    assert not re.search(r"\son[a-z]+\s*=", html)
    assert not re.search(r"\sstyle\s*=", html)
    assert "<style" not in html
    assert not re.search(r"(src|href)=\"(https?:)?//", html)  # nothing from another origin
