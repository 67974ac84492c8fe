"""Document bombs and the schema reader: memory and time of the bounded paths.

Prints one table. Each row runs in a fresh child process and reports its peak RSS above the
interpreter's own (``ru_maxrss`` after minus before the work) and the wall time:

1. DOCX zip bombs of growing size (one word repeated in many paragraphs: the body expands
   about a thousandfold; the last one in many one-word paragraphs, the costliest shape for
   a tree), extracted by gpuguard's streamed reader with the default text bound, and, for
   the smallest and the last, by python-docx (a whole-tree parse) for comparison;
2. the schema reader's child process: start, read a SQLite schema, answer, exit (its time
   is the row; its memory is the child's, not shown).

Usage: ``python bench/document_bombs.py [--largest-paragraphs 400000]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sqlite3
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

_CHILD = r"""
import json, resource, sys, time
from pathlib import Path
kind, path = sys.argv[1], Path(sys.argv[2])
import multiprocessing
import docx, lxml.etree
from gpuguard.index import DatabaseTimeouts, _isolated, extract_text
data = path.read_bytes()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
if kind == "gpuguard":
    size = len(extract_text(path, data))
elif kind == "python-docx":
    size = sum(len(p.text) for p in docx.Document(str(path)).paragraphs)
else:
    # The child a network database gets (a SQLite URL would be read in a thread).
    context = multiprocessing.get_context("spawn")
    reader, writer = context.Pipe(duplex=False)
    child = context.Process(
        target=_isolated._child_main,
        args=(writer, f"sqlite:///{path}", None, DatabaseTimeouts(), False),
    )
    child.start(); writer.close()
    status, value, _ = reader.recv(); child.join()
    size = len(value.tables)
seconds = time.perf_counter() - started
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"size": size, "seconds": seconds, "rss_mb": (after - before) / 1024}))
"""


def write_bomb(path: Path, paragraphs: int, words: int) -> int:
    """A real DOCX (python-docx's template) whose body is ``paragraphs`` x ``words`` words."""
    import docx

    template = path.with_suffix(".template.docx")
    docx.Document().save(str(template))
    word_ns = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
    paragraph = ("<w:p><w:r><w:t>" + "boom " * words + "</w:t></w:r></w:p>").encode()
    with (
        zipfile.ZipFile(template) as source,
        zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as out,
    ):
        for member in source.infolist():
            if member.filename != "word/document.xml":
                out.writestr(member, source.read(member))
        with out.open("word/document.xml", "w", force_zip64=True) as body:
            body.write(f'<w:document xmlns:w="{word_ns}"><w:body>'.encode())
            for _ in range(paragraphs):
                body.write(paragraph)
            body.write(b"</w:body></w:document>")
    template.unlink()
    return paragraphs * len(paragraph)


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


def main() -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--largest-paragraphs", type=int, default=400_000)
    args = parser.parse_args()
    print(f"machine: {platform.node()} ({platform.machine()}, Python {platform.python_version()})")
    header = f"{'case':<50} {'file':>9} {'expands to':>11} {'text out':>10}"
    print(f"{header} {'peak RSS+':>10} {'time':>7}")
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        largest = args.largest_paragraphs
        cases = [(20_000, 200), (largest // 4, 200), (largest, 200), (600_000, 1)]
        for index, (paragraphs, words) in enumerate(cases):
            bomb = folder / f"bomb{index}.docx"
            xml = write_bomb(bomb, paragraphs, words)
            readers = ["gpuguard"] if index in (1, 2) else ["gpuguard", "python-docx"]
            for reader in readers:
                row = measure(reader, bomb)
                print(
                    f"{f'DOCX {paragraphs:,} paragraphs x {words} words, {reader}':<50} "
                    f"{bomb.stat().st_size / 1e3:>7.0f}kB {xml / 1e6:>9.0f}MB "
                    f"{row['size']:>10,.0f} {row['rss_mb']:>8.0f}MB {row['seconds']:>6.2f}s"
                )
        database = folder / "shop.db"
        with sqlite3.connect(database) as conn:
            for n in range(50):
                conn.execute(f"CREATE TABLE t{n} (id INTEGER PRIMARY KEY, name TEXT)")
        row = measure("reader", database)
        print(
            f"{'schema reader child process, 50 tables':<50} {'':>9} {'':>11} "
            f"{row['size']:>10,.0f} {row['rss_mb']:>8.0f}MB {row['seconds']:>6.2f}s"
        )


if __name__ == "__main__":
    main()
