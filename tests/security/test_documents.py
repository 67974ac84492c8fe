"""Document bombs: however far a small file expands, the text taken from it is bounded."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuguard import DocumentError
from gpuguard.index import extract_text

from .conftest import write_docx_bomb


def test_docx_text_is_bounded_however_far_the_file_expands(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.docx"
    write_docx_bomb(bomb, paragraphs=5_000)
    text = extract_text(bomb, bomb.read_bytes(), max_chars=10_000)
    assert len(text) == 10_000
    assert text.startswith("boom boom")


def test_docx_markup_past_the_xml_limit_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gpuguard.index import _docx

    monkeypatch.setattr(_docx, "MAX_XML_BYTES", 100_000)
    bomb = tmp_path / "empty-bomb.docx"
    write_docx_bomb(bomb, paragraphs=5_000, words=0)  # markup, no text
    with pytest.raises(DocumentError, match="expands past"):
        extract_text(bomb, bomb.read_bytes())
