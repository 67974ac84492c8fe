"""Indexing bounds: what hostile documents and floods of files cost, within their bounds.

Prints one table. Each row runs in a fresh child process and reports its peak RSS above the
interpreter's own (``ru_maxrss`` after minus before the work, imports done), the peak RSS of
its own children (the text extractor) and the wall time:

1. HTML of nested ``<b>`` tags (the shape that costs a tree parser most), read by gpuguard's
   streamed reader, and at the smallest size by BeautifulSoup (the former reader);
2. a PDF whose pages re-run one content stream of empty text objects (no text, CPU on
   every page), extracted by :class:`~gpuguard.index.TextExtractor` with a 1 s limit: the
   time until the child was stopped;
3. RAG jobs (the job's process is the server's side, its child the extractor): over those
   two hostile files, and over a folder of unsupported files; the size of the job's view.

Usage: ``python bench/indexing_bounds.py [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

_CHILD = r"""
import asyncio, json, resource, sys, time
from pathlib import Path
kind, path = sys.argv[1], Path(sys.argv[2])
from gpuguard.index import TextExtractor, extract_text
import bs4
data = path.read_bytes() if path.is_file() else b""
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
if kind == "gpuguard":
    size = len(extract_text(path, data))
elif kind == "beautifulsoup":
    size = len(bs4.BeautifulSoup(data.decode(), "html.parser").get_text(" ", strip=True))
elif kind == "extractor":
    async def run():
        async with TextExtractor(timeout_s=1.0) as extractor:
            try:
                return len(await extractor.extract(path, data, max_chars=2_000_000))
            except Exception:
                return 0
    size = asyncio.run(run())
else:
    from gpuguard import GpuGuard
    from gpuguard.embed import BulkEmbedder, EmbedderPair
    from gpuguard.index import VectorStore
    from gpuguard.jobs import JobInfo, process_rag_documents
    from gpuguard.testing import HashEmbedder
    async def job():
        pair = EmbedderPair(HashEmbedder(device="cuda", dimension=8), HashEmbedder(dimension=8))
        with VectorStore(path / "index.db") as store:
            bulk = BulkEmbedder(pair, GpuGuard())
            return await process_rag_documents([path / "files"], store=store, bulk=bulk)
    result = asyncio.run(job())
    size = len(json.dumps(JobInfo("x", "rag-indexing", "completed", 0.0, result=result).to_dict()))
seconds = time.perf_counter() - started
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"size": size, "seconds": seconds, "rss_mb": (after - before) / 1024,
                  "child_mb": children / 1024}))
"""


def measure(kind: str, path: Path) -> dict[str, float]:
    """Run one measurement in a fresh interpreter."""
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, kind, str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def write_pdf(path: Path, pages: int) -> None:
    """Blank pages sharing one content stream of 200,000 empty ``BT ET`` pairs."""
    import io

    from pypdf import PdfWriter
    from pypdf.generic import ArrayObject, DecodedStreamObject, DictionaryObject, NameObject

    writer = PdfWriter()
    content = DecodedStreamObject()
    content.set_data(b"BT ET\n" * 200_000)
    shared = writer._add_object(content.flate_encode())
    resources = DictionaryObject({NameObject("/ProcSet"): ArrayObject([NameObject("/PDF")])})
    for _ in range(pages):
        page = writer.add_blank_page(100, 100)
        page[NameObject("/Contents")] = shared
        page[NameObject("/Resources")] = resources
    buffer = io.BytesIO()
    writer.write(buffer)
    path.write_bytes(buffer.getvalue())


def row(case: str, path: Path | None, result: dict[str, float], unit: str = "chars") -> None:
    """Print one line of the table."""
    size = f"{path.stat().st_size / 1e3:>8.0f}kB" if path is not None else f"{'':>10}"
    print(
        f"{case:<46} {size} {result['size']:>11,.0f} {unit:<5} {result['rss_mb']:>7.0f}MB "
        f"{result['child_mb']:>7.0f}MB {result['seconds']:>7.2f}s"
    )


def main() -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="smaller inputs (seconds, not minutes)"
    )
    args = parser.parse_args()
    print(f"machine: {platform.node()} ({platform.machine()}, Python {platform.python_version()})")
    print(f"{'case':<46} {'file':>10} {'out':>17} {'RSS+':>9} {'child':>9} {'time':>8}")
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        for megabytes in (4,) if args.quick else (4, 64):
            html = folder / f"nested-{megabytes}.html"
            html.write_bytes(b"<b>" * (megabytes * 1024 * 1024 // 3) + b"the text")
            row(f"HTML {megabytes} MB of nested <b>, gpuguard", html, measure("gpuguard", html))
            if megabytes == 4:
                soup = measure("beautifulsoup", html)
                row(f"HTML {megabytes} MB of nested <b>, BeautifulSoup", html, soup)
        pdf = folder / "burn.pdf"
        write_pdf(pdf, pages=200)
        row("PDF 200 pages re-running one stream, 1 s limit", pdf, measure("extractor", pdf))
        hostile = folder / "hostile" / "files"
        hostile.mkdir(parents=True)
        for source in (folder / "nested-4.html", pdf):
            (hostile / source.name).write_bytes(source.read_bytes())
        job = measure("job", folder / "hostile")
        row("RAG job over that HTML and that PDF, 30 s limit", None, job, unit="bytes")
        files = folder / "job" / "files"
        files.mkdir(parents=True)
        count = 4_000 if args.quick else 40_000
        for index in range(count):
            (files / f"file-{index:06d}.unsupported").write_bytes(b"x")
        job = measure("job", folder / "job")
        row(f"RAG job over {count:,} unsupported files", None, job, unit="bytes")


if __name__ == "__main__":
    main()
