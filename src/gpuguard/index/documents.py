"""Documents: find them, extract their text, cut it into overlapping chunks.

Formats: plain text and Markdown (``.txt``, ``.md``, ``.markdown``, ``.rst``), HTML (through
BeautifulSoup), PDF (pypdf) and DOCX (python-docx). A document that cannot be read, is
empty, looks binary or is corrupt raises :class:`~gpuguard.DocumentError` naming the file,
so that an indexing job can report it and go on.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .._exceptions import DocumentError

__all__ = [
    "DEFAULT_MAX_BYTES",
    "SUPPORTED_SUFFIXES",
    "TextChunk",
    "chunk_text",
    "content_hash",
    "extract_text",
    "find_documents",
    "read_document",
]

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
"""Files larger than this are refused: a document is read whole, so this bounds memory."""

_BINARY_PROBE = 8192


@dataclass(frozen=True, slots=True)
class TextChunk:
    """A piece of a document's text and where it lies in it (character offsets)."""

    text: str
    start: int
    end: int


def find_documents(root: Path) -> Iterator[Path]:
    """Supported files under ``root`` (or ``root`` itself), sorted, skipping hidden ones."""
    if root.is_file():
        yield root
        return
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        for name in sorted(files):
            path = Path(directory, name)
            if not name.startswith(".") and path.suffix.lower() in SUPPORTED_SUFFIXES:
                yield path


def read_document(path: Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """The file's bytes; :class:`DocumentError` if unreadable, too large or empty."""
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise DocumentError(
                f"{path}: {size} bytes is over the {max_bytes}-byte limit", path=str(path)
            )
        data = path.read_bytes()
    except OSError as exc:
        raise DocumentError(f"{path}: cannot read: {exc.strerror or exc}", path=str(path)) from exc
    if not data.strip():
        raise DocumentError(f"{path}: empty file", path=str(path))
    return data


def extract_text(path: Path, data: bytes) -> str:
    """The text of a document whose bytes are ``data``, by its file type.

    Raises :class:`DocumentError` for an unsupported type, binary content, a corrupt file
    or a document without any text.
    """
    extractor = _EXTRACTORS.get(path.suffix.lower())
    if extractor is None:
        raise DocumentError(f"{path}: unsupported file type {path.suffix!r}", path=str(path))
    try:
        text = extractor(data)
    except DocumentError as exc:
        raise DocumentError(f"{path}: {exc}", path=str(path)) from exc
    except Exception as exc:  # each library has its own errors for a corrupt file
        raise DocumentError(
            f"{path}: corrupt or unreadable {path.suffix} file ({type(exc).__name__}: {exc})",
            path=str(path),
        ) from exc
    if not text.strip():
        raise DocumentError(f"{path}: no text in the document", path=str(path))
    return text


def content_hash(data: bytes, *settings: object) -> str:
    """A hash of a document's bytes and the settings that shape its chunks."""
    digest = hashlib.sha256(data)
    digest.update(repr(settings).encode())
    return digest.hexdigest()


def chunk_text(text: str, *, size: int = 1000, overlap: int = 200) -> Iterator[TextChunk]:
    """Cut ``text`` into chunks of at most ``size`` characters, each overlapping the last.

    Chunks end at whitespace where there is some in the second half of the window, so that
    words are not cut; consecutive chunks share about ``overlap`` characters so that a
    sentence cut at a boundary is whole in one of them.
    """
    if size < 1 or not 0 <= overlap < size:
        raise ValueError("need size >= 1 and 0 <= overlap < size")
    start, length = _skip_space(text, 0), len(text)
    while start < length:
        end = min(start + size, length)
        if end < length:
            cut = _last_space(text, start + size // 2, end)
            end = cut if cut > start else end
        piece = text[start:end].strip()
        if piece:
            yield TextChunk(piece, start, end)
        if end >= length:
            return
        back = max(end - overlap, start + 1)
        word_start = _first_space(text, back, end)
        start = _skip_space(text, back if word_start < 0 else word_start)


def _last_space(text: str, low: int, high: int) -> int:
    return max(text.rfind(" ", low, high), text.rfind("\n", low, high))


def _first_space(text: str, low: int, high: int) -> int:
    found = [i for i in (text.find(" ", low, high), text.find("\n", low, high)) if i >= 0]
    return min(found, default=-1)


def _skip_space(text: str, index: int) -> int:
    while index < len(text) and text[index].isspace():
        index += 1
    return index


# --- extractors: bytes -> text ------------------------------------------------------------


def _plain_text(data: bytes) -> str:
    if b"\x00" in data[:_BINARY_PROBE]:
        raise DocumentError("binary content, not text", path="")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DocumentError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", path="") from exc


def _html(data: bytes) -> str:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(_plain_text(data), "html.parser")
    for hidden in soup(["script", "style", "noscript", "template"]):
        hidden.decompose()
    return soup.get_text(" ", strip=True)


def _pdf(data: bytes) -> str:
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(data), strict=False)
    return "\n\n".join(page.extract_text() or "" for page in reader.pages)


def _docx(data: bytes) -> str:
    import docx

    document = docx.Document(io.BytesIO(data))
    paragraphs: Iterable[str] = (paragraph.text for paragraph in document.paragraphs)
    cells = (cell.text for table in document.tables for row in table.rows for cell in row.cells)
    return "\n".join(part for part in (*paragraphs, *cells) if part.strip())


_EXTRACTORS: dict[str, Callable[[bytes], str]] = {
    ".txt": _plain_text,
    ".md": _plain_text,
    ".markdown": _plain_text,
    ".rst": _plain_text,
    ".html": _html,
    ".htm": _html,
    ".pdf": _pdf,
    ".docx": _docx,
}

SUPPORTED_SUFFIXES = frozenset(_EXTRACTORS)
"""File name suffixes that :func:`extract_text` reads."""
