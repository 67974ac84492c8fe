"""Documents that make a parser work: a time limit per file, cancel that stops, bounded memory.

The PDF here is what an attacker would send: small on disk, its pages all re-running one
content stream of empty text objects, so it yields no text (the text bound never trips)
while every page costs CPU.
"""

from __future__ import annotations

import asyncio
import io
import multiprocessing
import tracemalloc
from pathlib import Path

from pypdf import PdfWriter
from pypdf.generic import ArrayObject, DecodedStreamObject, DictionaryObject, NameObject

from gpuguard import JobEvent
from gpuguard.index import extract_text

from .conftest import ServeFactory

EXTRACTOR = "gpuguard-text-extractor"


def write_cpu_burning_pdf(path: Path, *, pages: int, operations: int = 200_000) -> None:
    """A PDF of ``pages`` blank pages sharing one content stream of empty ``BT ET`` pairs."""
    writer = PdfWriter()
    content = DecodedStreamObject()
    content.set_data(b"BT ET\n" * operations)
    shared = writer._add_object(content.flate_encode())
    resources = DictionaryObject({NameObject("/ProcSet"): ArrayObject([NameObject("/PDF")])})
    for _ in range(pages):
        page = writer.add_blank_page(100, 100)
        page[NameObject("/Contents")] = shared
        page[NameObject("/Resources")] = resources
    buffer = io.BytesIO()
    writer.write(buffer)
    path.write_bytes(buffer.getvalue())


def extractors_alive() -> list[str]:
    """Names of this process's live extractor children (reaping the dead ones)."""
    return [child.name for child in multiprocessing.active_children() if child.name == EXTRACTOR]


async def test_a_pdf_that_burns_cpu_is_stopped_at_the_per_file_limit(
    serve: ServeFactory, root: Path
) -> None:
    write_cpu_burning_pdf(root / "docs" / "burn.pdf", pages=200)
    assert (root / "docs" / "burn.pdf").stat().st_size < 200_000
    async with serve(GPUGUARD_SOURCES__EXTRACT_TIMEOUT_S="1") as server:
        started = await server.http.post("/admin/jobs/rag", json={"path": "docs"})
        job = await server.finished_job(started.json())
        assert job["status"] == "completed"
        assert any("burn.pdf" in issue and "longer than 1s" in issue for issue in job["issues"])
        assert any(name.endswith("handbook.md") for name in job["result"]["embedded_sources"])
        assert extractors_alive() == []


async def test_cancel_really_stops_pdf_extraction(serve: ServeFactory, root: Path) -> None:
    write_cpu_burning_pdf(root / "docs" / "burn.pdf", pages=2000)
    async with serve(GPUGUARD_SOURCES__EXTRACT_TIMEOUT_S="600") as server:
        bus = server.app.state.context.jobs.events
        progress = bus.subscribe(kinds={"job"})
        started = await server.http.post("/admin/jobs/rag", json={"path": "docs/burn.pdf"})
        async with asyncio.timeout(60):
            while True:
                event = await progress.get()
                assert isinstance(event, JobEvent)
                if event.detail.startswith("extracting the text of"):
                    break
        progress.close()
        assert extractors_alive() == [EXTRACTOR]
        cancelled = await server.http.post(f"/admin/jobs/{started.json()['id']}/cancel")
        assert cancelled.json()["status"] == "cancelled"
        assert extractors_alive() == []


def test_deeply_nested_html_is_read_in_bounded_memory() -> None:
    data = b"<b>" * 1_000_000 + b"<div>" * 100_000 + b"deep text" + b"<script>x()</script>"
    tracemalloc.start()
    try:
        text = extract_text(Path("nested.html"), data)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert text == "deep text"
    assert peak < len(data)  # a tree parser needs hundreds of bytes per input byte


def test_html_text_stops_at_the_text_bound() -> None:
    data = b"<p>word</p>" * 1_000_000
    tracemalloc.start()
    try:
        text = extract_text(Path("long.html"), data, max_chars=10_000)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(text) == 10_000
    assert peak < 2_000_000


def test_a_word_cut_by_the_stream_stays_whole() -> None:
    boundary = 64 * 1024
    data = b"<p>" + b" " * (boundary - 3 - 4) + b"splitword</p>"
    assert extract_text(Path("cut.html"), data) == "splitword"
