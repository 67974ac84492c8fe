"""A live gpuguard server built the way ``gpuguard serve`` builds it: from the environment."""

from __future__ import annotations

import asyncio
import json
import zipfile
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docx
import httpx
import pytest
from fastapi import FastAPI

from gpuguard.server import create_app, running_server
from gpuguard.settings import load_settings

SECRET = "TOPSECRET-7f3a91"


@dataclass
class Served:
    """A server started in ``root`` (its default document root) and a client for it."""

    url: str
    http: httpx.AsyncClient
    app: FastAPI
    root: Path

    async def finished_job(self, job: dict[str, Any], *, timeout_s: float = 60) -> dict[str, Any]:
        """Wait (bounded) until the job has ended, then fetch it as a caller would."""
        manager = self.app.state.context.jobs.manager
        async with asyncio.timeout(timeout_s):
            await manager.wait(job["id"])
        response = await self.http.get(f"/admin/jobs/{job['id']}")
        assert response.status_code == 200
        finished: dict[str, Any] = response.json()
        return finished

    async def job_events(self) -> list[dict[str, Any]]:
        """Every job event the server remembers, read from ``/events`` as SSE."""
        seen: list[dict[str, Any]] = []
        async with self.http.stream("GET", "/events?kinds=job&history=true") as stream:
            expected: int | None = None
            kind = ""
            async for line in stream.aiter_lines():
                if line.startswith("event:"):
                    kind = line.partition(":")[2].strip()
                elif line.startswith("data:"):
                    data = json.loads(line.partition(":")[2])
                    if kind == "ready":
                        expected = data["history"]
                    else:
                        seen.append(data)
                if expected is not None and len(seen) >= expected:
                    return seen
        return seen


ServeFactory = Callable[..., AbstractAsyncContextManager[Served]]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """Where the server starts: a handbook, a hidden ``.env`` and ``.ssh``, a link out."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.md").write_text(f"The launch code is {SECRET}.")
    served = tmp_path / "served"
    docs = served / "docs"
    docs.mkdir(parents=True)
    (docs / "handbook.md").write_text("# Handbook\n\nHow to rotate the on-call pager.")
    (docs / ".env").write_text(f"API_KEY={SECRET}")
    (docs / "link.md").symlink_to(outside / "secret.md")
    (docs / "outside-folder").symlink_to(outside)
    (served / ".ssh").mkdir()
    (served / ".ssh" / "id_rsa.md").write_text(SECRET)
    return served


@pytest.fixture
def serve(monkeypatch: pytest.MonkeyPatch, root: Path) -> ServeFactory:
    """``serve(**env)``: a server started in ``root`` with ``GPUGUARD_*`` settings ``env``."""

    @asynccontextmanager
    async def start(**env: str) -> AsyncIterator[Served]:
        monkeypatch.chdir(root)
        monkeypatch.delenv("GPUGUARD_CONFIG", raising=False)
        base = {
            "GPUGUARD_LLM__BACKEND": "fake",
            "GPUGUARD_EMBEDDINGS__GPU_ENGINE": "hash",
            "GPUGUARD_EMBEDDINGS__CPU_ENGINE": "hash",
            "GPUGUARD_DATA_DIR": str(root.parent / "state"),
        }
        for name, value in (base | env).items():
            monkeypatch.setenv(name, value)
        app = create_app(load_settings())
        # The caller holds the server's admin token unless a test says otherwise.
        admin = {"Authorization": f"Bearer {app.state.access.token}"}
        async with (
            running_server(app) as url,
            httpx.AsyncClient(base_url=url, headers=admin, timeout=30) as http,
        ):
            yield Served(url, http, app, root)

    return start


def write_docx_bomb(path: Path, *, paragraphs: int, words: int = 200) -> None:
    """A real DOCX whose body expands about a thousandfold: one word in many paragraphs.

    Every part comes from python-docx's own template, so that any DOCX reader opens it;
    only ``word/document.xml`` is replaced, written as a stream.
    """
    template = path.with_suffix(".template.docx")
    docx.Document().save(str(template))
    word_ns = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
    paragraph = ("<w:p><w:r><w:t>" + "boom " * words + "</w:t></w:r></w:p>").encode()
    with (
        zipfile.ZipFile(template) as source,
        zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive,
    ):
        for member in source.infolist():
            if member.filename != "word/document.xml":
                archive.writestr(member, source.read(member))
        with archive.open("word/document.xml", "w", force_zip64=True) as body:
            body.write(f'<w:document xmlns:w="{word_ns}"><w:body>'.encode())
            for _ in range(paragraphs):
                body.write(paragraph)
            body.write(b"</w:body></w:document>")
    template.unlink()
