"""Documents: find them, extract their text, cut it into overlapping chunks.

Formats: plain text and Markdown (``.txt``, ``.md``, ``.markdown``, ``.rst``), HTML (streamed
through the standard library's tokenizer), PDF (pypdf, at most :data:`MAX_PDF_PAGES` pages)
and DOCX (streamed XML). A document that cannot be read, is
empty, looks binary or is corrupt raises :class:`~gpuguard.DocumentError` naming the file,
so that an indexing job can report it and go on.

Bounds: only regular files are read (a FIFO or device is refused without blocking), at most
``max_bytes`` of them, and at most ``max_chars`` characters of text come out of one file
however much its format expands (a DOCX zip bomb stops there). Time is bounded where
jobs extract: :class:`~gpuguard.index.TextExtractor` runs the parsers in a killable child.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .._exceptions import DocumentError
from ._docx import docx_text
from ._html import html_text
from ._opened import opened_refusal
from .policy import SourcePolicy, is_hidden_name

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_CHARS",
    "MAX_PDF_PAGES",
    "SUPPORTED_SUFFIXES",
    "DocumentSurvey",
    "TextChunk",
    "chunk_text",
    "content_hash",
    "extract_text",
    "find_documents",
    "read_document",
    "survey_documents",
]

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
"""Files larger than this are refused: a document is read whole, so this bounds memory."""

DEFAULT_MAX_CHARS = 2_000_000
"""At most this many characters of text are taken from one document (about 1,000 pages)."""

MAX_PDF_PAGES = 10_000
"""At most this many pages of one PDF are read (the time limit per file bounds the rest)."""

_BINARY_PROBE = 8192


@dataclass(frozen=True, slots=True)
class TextChunk:
    """A piece of a document's text and where it lies in it (character offsets)."""

    text: str
    start: int
    end: int


@dataclass(slots=True)
class DocumentSurvey:
    """What a walk found: the files to read, and every other entry with why it was left."""

    files: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def survey_documents(root: Path, *, policy: SourcePolicy | None = None) -> DocumentSurvey:
    """Walk ``root`` (a folder, or one file), sorted, sorting each entry in or out.

    Left out, with the reason: hidden files and folders (not entered), unsupported file
    types, anything that is not a regular file (FIFOs, sockets, devices), symbolic links to
    folders (not followed) and, under ``policy``, paths resolving outside its roots.
    """
    survey = DocumentSurvey()
    if not root.is_dir() or root.is_symlink():
        _sort_file(root, survey, policy)
        return survey
    for directory, subdirs, files in os.walk(root):
        kept = []
        for name in sorted(subdirs):
            path = Path(directory, name)
            if is_hidden_name(name) and not _hidden_allowed(policy):
                survey.skipped.append((path, "hidden folder, not indexed"))
            elif path.is_symlink():
                survey.skipped.append((path, "symbolic link to a folder, not followed"))
            else:
                kept.append(name)
        subdirs[:] = kept
        for name in sorted(files):
            _sort_file(Path(directory, name), survey, policy)
    return survey


def find_documents(root: Path, *, policy: SourcePolicy | None = None) -> Iterator[Path]:
    """Supported regular files under ``root`` (or ``root`` itself), sorted, hidden ones left."""
    yield from survey_documents(root, policy=policy).files


def _hidden_allowed(policy: SourcePolicy | None) -> bool:
    return policy is not None and policy.allow_hidden


def _sort_file(path: Path, survey: DocumentSurvey, policy: SourcePolicy | None) -> None:
    if is_hidden_name(path.name) and not _hidden_allowed(policy):
        survey.skipped.append((path, "hidden file, not indexed"))
        return
    if policy is not None and (refusal := policy.refusal(path)) is not None:
        survey.skipped.append((path, refusal))
        return
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        survey.skipped.append((path, f"cannot read: {exc.strerror or exc}"))
        return
    if not stat.S_ISREG(mode):
        survey.skipped.append((path, "not a regular file"))
    elif path.suffix.lower() not in SUPPORTED_SUFFIXES:
        survey.skipped.append((path, f"unsupported file type {path.suffix or '(none)'!r}"))
    else:
        survey.files.append(path)


def read_document(
    path: Path, *, max_bytes: int = DEFAULT_MAX_BYTES, policy: SourcePolicy | None = None
) -> bytes:
    """The file's bytes; :class:`DocumentError` if unreadable, irregular, too large or empty.

    Never blocks on a FIFO: the file is opened non-blocking and checked before reading.
    Under ``policy``, what was opened is checked, not the path: the opened descriptor's
    own file must lie inside the roots, so a file (or folder) swapped for a link after
    the job's first check is not read (:func:`~gpuguard.index._opened.opened_path`).
    """
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise DocumentError(f"{path}: cannot read: {exc.strerror or exc}", path=str(path)) from exc
    with os.fdopen(descriptor, "rb") as file:
        try:
            info = os.fstat(descriptor)
            if policy is not None and (refusal := opened_refusal(descriptor, path, policy)):
                raise DocumentError(f"{path}: {refusal}", path=str(path))
            if not stat.S_ISREG(info.st_mode):
                raise DocumentError(f"{path}: not a regular file", path=str(path))
            if info.st_size > max_bytes:
                raise DocumentError(
                    f"{path}: {info.st_size} bytes is over the {max_bytes}-byte limit",
                    path=str(path),
                )
            data = file.read(max_bytes + 1)
        except OSError as exc:
            raise DocumentError(
                f"{path}: cannot read: {exc.strerror or exc}", path=str(path)
            ) from exc
    if len(data) > max_bytes:
        raise DocumentError(f"{path}: grew over the {max_bytes}-byte limit", path=str(path))
    if not data.strip():
        raise DocumentError(f"{path}: empty file", path=str(path))
    return data


def extract_text(path: Path, data: bytes, *, max_chars: int = DEFAULT_MAX_CHARS) -> str:
    """The text of a document whose bytes are ``data``, by its file type.

    At most ``max_chars`` characters (a text of exactly ``max_chars`` was probably cut
    there). Raises :class:`DocumentError` for an unsupported type, binary content, a
    corrupt file or a document without any text.
    """
    if max_chars < 1:
        raise ValueError("max_chars must be >= 1")
    extractor = _EXTRACTORS.get(path.suffix.lower())
    if extractor is None:
        raise DocumentError(f"{path}: unsupported file type {path.suffix!r}", path=str(path))
    try:
        text = extractor(data, max_chars)[:max_chars]
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


def _plain_text(data: bytes, max_chars: int) -> str:
    if b"\x00" in data[:_BINARY_PROBE]:
        raise DocumentError("binary content, not text", path="")
    try:
        # UTF-8 takes at most 4 bytes a character: decoding more could not add any text.
        return data[: 4 * max_chars + 3].decode("utf-8-sig", errors="strict")
    except UnicodeDecodeError as exc:
        raise DocumentError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", path="") from exc


def _html(data: bytes, max_chars: int) -> str:
    if b"\x00" in data[:_BINARY_PROBE]:
        raise DocumentError("binary content, not text", path="")
    try:
        return html_text(data, max_chars)
    except UnicodeDecodeError as exc:
        raise DocumentError(f"not UTF-8 text ({exc.reason})", path="") from exc


def _pdf(data: bytes, max_chars: int) -> str:
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(data), strict=False)
    pages: list[str] = []
    size = 0
    for index, page in enumerate(reader.pages):  # page by page, stopping at enough text
        if index >= MAX_PDF_PAGES:
            break
        text = page.extract_text() or ""
        pages.append(text)
        size += len(text) + 2
        if size >= max_chars:
            break
    return "\n\n".join(pages)


def _docx(data: bytes, max_chars: int) -> str:
    return docx_text(data, max_chars=max_chars)


_EXTRACTORS: dict[str, Callable[[bytes, int], str]] = {
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
