"""DOCX text, streamed: a small file that expands to gigabytes of XML keeps memory flat.

python-docx builds the whole document tree in memory, so a 358 KB zip bomb becomes a
gigabyte. Here ``word/document.xml`` is decompressed as a stream and parsed incrementally
(lxml ``iterparse``, each element dropped once read), and reading stops at ``max_chars``
characters of text or :data:`MAX_XML_BYTES` of XML, whichever comes first.
"""

from __future__ import annotations

import io
import zipfile
from typing import IO, Any

from .._exceptions import DocumentError

__all__ = ["MAX_XML_BYTES", "docx_text"]

MAX_XML_BYTES = 256 * 1024 * 1024
"""A document body that decompresses to more XML than this is refused as a zip bomb."""

_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_TEXT, _TAB, _BREAK, _CR, _PARAGRAPH, _CELL = (
    f"{_W}t",
    f"{_W}tab",
    f"{_W}br",
    f"{_W}cr",
    f"{_W}p",
    f"{_W}tc",
)


def docx_text(data: bytes, *, max_chars: int) -> str:
    """The text of the DOCX ``data`` in document order, one line per paragraph (or cell).

    At most ``max_chars`` characters; :class:`DocumentError` for a body that expands past
    :data:`MAX_XML_BYTES`, the zip or XML parser's own errors for a file that is no DOCX.
    """
    from lxml import etree

    archive = zipfile.ZipFile(io.BytesIO(data))  # BadZipFile, KeyError: a corrupt file
    member = archive.getinfo("word/document.xml")
    lines: list[str] = []
    line: list[str] = []
    size = 0
    with archive, archive.open(member) as raw:
        stream = _Capped(raw, MAX_XML_BYTES)
        parser = etree.iterparse(
            stream,
            events=("end",),
            resolve_entities=False,
            no_network=True,
            load_dtd=False,
            huge_tree=False,
        )
        for _, element in parser:
            tag = element.tag
            if tag == _TEXT:
                piece = element.text or ""
                line.append(piece)
                size += len(piece)
            elif tag == _TAB:
                line.append("\t")
            elif tag in (_BREAK, _CR):
                line.append("\n")
            elif tag in (_PARAGRAPH, _CELL) and line:
                lines.append("".join(line))
                line = []
            _drop(element)
            if size >= max_chars:
                break
    if line:
        lines.append("".join(line))
    return "\n".join(part for part in lines if part.strip())[:max_chars]


def _drop(element: Any) -> None:
    """Free a finished element and every sibling before it: memory stays per nesting level."""
    element.clear(keep_tail=False)
    parent = element.getparent()
    if parent is not None:
        while element.getprevious() is not None:
            del parent[0]


class _Capped(io.RawIOBase):
    """A read-only stream that refuses to deliver more than ``limit`` bytes."""

    def __init__(self, raw: IO[bytes], limit: int) -> None:
        self._raw = raw
        self._left = limit

    def readable(self) -> bool:
        """Always: this is a reader."""
        return True

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes; :class:`DocumentError` once past the limit."""
        wanted = self._left + 1 if size is None or size < 0 else min(size, self._left + 1)
        data = self._raw.read(wanted)
        self._left -= len(data)
        if self._left < 0:
            raise DocumentError(
                f"the document body expands past {MAX_XML_BYTES} bytes of XML (a zip bomb?)",
                path="",
            )
        return data
