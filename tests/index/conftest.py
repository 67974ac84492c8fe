from __future__ import annotations

from pathlib import Path

import docx
import pytest


def pdf_bytes(text: str) -> bytes:
    """A minimal valid one-page PDF showing ``text`` (Helvetica), with a correct xref table."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def write_docx(path: Path, paragraphs: list[str], table: list[list[str]]) -> None:
    document = docx.Document()
    for paragraph in paragraphs:
        document.add_paragraph(paragraph)
    grid = document.add_table(rows=len(table), cols=len(table[0]))
    for r, row in enumerate(table):
        for c, value in enumerate(row):
            grid.cell(r, c).text = value
    document.save(str(path))


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """One good file of every format, plus an empty, a binary and two corrupt ones."""
    root = tmp_path / "corpus"
    (root / "sub").mkdir(parents=True)
    (root / "notes.txt").write_text("Plain notes about the quarterly budget.")
    (root / "guide.md").write_text("# Guide\n\nHow to rotate the **API keys**.")
    (root / "page.html").write_text(
        "<html><head><style>p {color: red}</style><script>var x = 1;</script></head>"
        "<body><h1>Onboarding</h1><p>Welcome to the team.</p></body></html>"
    )
    (root / "sub" / "report.pdf").write_bytes(pdf_bytes("Revenue grew in the third quarter"))
    write_docx(root / "sub" / "memo.docx", ["Memo about the office move."], [["Room", "B12"]])
    (root / "empty.md").write_text("  \n")
    (root / "blob.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" * 10)
    (root / "broken.pdf").write_bytes(b"%PDF-1.4\nthis is not really a pdf")
    (root / "broken.docx").write_bytes(b"PK\x03\x04 not a zip archive")
    (root / ".hidden.txt").write_text("hidden files are not indexed")
    (root / "image.png").write_bytes(b"\x89PNG unsupported type, ignored when walking")
    return root
