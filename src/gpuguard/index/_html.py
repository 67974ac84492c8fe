"""The text of an HTML document, read as a stream: no tree, memory bounded by the text kept.

A tree parser holds every element of the document at once (BeautifulSoup took about 216
bytes of memory per input byte on ``<b><b><b>...``, so 14 GiB for a 64 MiB file). Here the
standard library's tokenizer (:class:`html.parser.HTMLParser`) is fed the bytes 64 KiB at a
time, decoded incrementally; nothing is nested, so depth costs nothing. Text inside
``script``, ``style``, ``noscript`` and ``template`` is left out; every other piece of
text is stripped and joined with single spaces (as ``get_text(" ", strip=True)`` would);
reading stops as soon as ``max_chars`` characters were taken.
"""

from __future__ import annotations

import codecs
from html.parser import HTMLParser

__all__ = ["html_text"]

_FEED_BYTES = 64 * 1024
_HIDDEN = frozenset({"script", "style", "noscript", "template"})


class _TextCollector(HTMLParser):
    """Keeps the visible text of what it is fed, up to ``max_chars`` characters.

    Text between two tags is one piece, however the feeding cut it: a run of text is kept
    until the next tag (or until it alone would pass the bound) and then stripped.
    """

    def __init__(self, max_chars: int) -> None:
        super().__init__(convert_charrefs=True)
        self.max_chars = max_chars
        self.pieces: list[str] = []
        self.size = 0
        self._hidden = 0
        self._run: list[str] = []
        self._run_size = 0

    @property
    def full(self) -> bool:
        return self.size >= self.max_chars

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.flush()
        if tag in _HIDDEN:
            self._hidden += 1

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """A self-closed tag (``<br/>``, ``<script/>``) opens nothing."""
        self.flush()

    def handle_endtag(self, tag: str) -> None:
        self.flush()
        if tag in _HIDDEN and self._hidden:
            self._hidden -= 1

    def handle_data(self, data: str) -> None:
        if self._hidden or self.full:
            return
        self._run.append(data)
        self._run_size += len(data)
        if self.size + self._run_size >= self.max_chars:
            self.flush()

    def flush(self) -> None:
        """End the current run of text: keep it, stripped, as one piece."""
        piece = "".join(self._run).strip()
        self._run, self._run_size = [], 0
        if piece and not self.full:
            self.size += len(piece) + (1 if self.pieces else 0)  # the joining space
            self.pieces.append(piece)


def html_text(data: bytes, max_chars: int) -> str:
    """The visible text of the UTF-8 HTML ``data``, at most about ``max_chars`` characters.

    Raises :class:`UnicodeDecodeError` for bytes that are not UTF-8.
    """
    decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="strict")
    collector = _TextCollector(max_chars)
    view = memoryview(data)
    for start in range(0, len(data), _FEED_BYTES):
        collector.feed(decoder.decode(view[start : start + _FEED_BYTES]))
        if collector.full:
            break
    else:
        collector.feed(decoder.decode(b"", final=True))
        collector.close()
    collector.flush()
    return " ".join(collector.pieces)
