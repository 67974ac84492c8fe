from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gpuguard import DocumentError
from gpuguard.index import (
    chunk_text,
    extract_text,
    find_documents,
    read_document,
    survey_documents,
)


def text_of(path: Path) -> str:
    return extract_text(path, read_document(path))


def test_find_documents_walks_supported_visible_files_in_order(corpus: Path) -> None:
    names = [p.relative_to(corpus).as_posix() for p in find_documents(corpus)]
    assert names == [
        "blob.txt",
        "broken.docx",
        "broken.pdf",
        "empty.md",
        "guide.md",
        "notes.txt",
        "page.html",
        "sub/memo.docx",
        "sub/report.pdf",
    ]


@pytest.mark.parametrize(
    ("name", "expected", "absent"),
    [
        ("notes.txt", "quarterly budget", None),
        ("guide.md", "rotate the **API keys**", None),
        ("page.html", "Onboarding Welcome to the team.", "var x"),
        ("sub/report.pdf", "Revenue grew in the third quarter", None),
        ("sub/memo.docx", "Memo about the office move.\nRoom\nB12", None),
    ],
)
def test_each_format_yields_its_text(
    corpus: Path, name: str, expected: str, absent: str | None
) -> None:
    text = text_of(corpus / name)
    assert expected in text
    assert absent is None or absent not in text


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("empty.md", "empty file"),
        ("blob.txt", "binary content"),
        ("broken.pdf", "corrupt or unreadable .pdf"),
        ("broken.docx", "corrupt or unreadable .docx"),
        ("image.png", "unsupported file type"),
        ("missing.txt", "cannot read"),
    ],
)
def test_bad_documents_raise_document_error_naming_the_file(
    corpus: Path, name: str, message: str
) -> None:
    with pytest.raises(DocumentError, match=message) as caught:
        text_of(corpus / name)
    assert caught.value.path == str(corpus / name)


def test_oversized_files_are_refused(corpus: Path) -> None:
    with pytest.raises(DocumentError, match="over the 10-byte limit"):
        read_document(corpus / "notes.txt", max_bytes=10)


def test_chunks_overlap_and_keep_words_whole() -> None:
    text = " ".join(f"word{i}" for i in range(300))
    chunks = list(chunk_text(text, size=100, overlap=30))

    assert all(len(c.text) <= 100 for c in chunks)
    assert all(c.text.split()[0] in text.split() for c in chunks)  # no word cut at the start
    for before, after in itertools.pairwise(chunks):
        assert after.start < before.end  # they overlap
        assert before.text.split()[-1] in after.text.split()
    assert chunks[-1].text.endswith("word299")


@given(
    text=st.text(alphabet=st.sampled_from("ab \n"), max_size=400),
    size=st.integers(min_value=2, max_value=60),
    data=st.data(),
)
def test_chunks_cover_every_word(text: str, size: int, data: st.DataObject) -> None:
    overlap = data.draw(st.integers(min_value=0, max_value=size - 1))
    chunks = list(chunk_text(text, size=size, overlap=overlap))

    assert all(0 < len(c.text) <= size for c in chunks)
    covered: set[int] = set()
    for c in chunks:
        covered.update(range(c.start, c.end))
    assert all(i in covered for i, ch in enumerate(text) if not ch.isspace())


def test_impossible_chunk_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="overlap"):
        list(chunk_text("abc", size=10, overlap=10))


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.txt"
    os.mkfifo(fifo)
    with pytest.raises(DocumentError, match="not a regular file"):
        read_document(fifo)
    survey = survey_documents(tmp_path)
    assert survey.files == []
    assert survey.skipped == [(fifo, "not a regular file")]


def test_a_walk_names_what_it_leaves_out(corpus: Path, tmp_path: Path) -> None:
    (corpus / ".git").mkdir()
    (corpus / ".git" / "config.txt").write_text("hidden inside a hidden folder")
    (corpus / "linked").symlink_to(tmp_path, target_is_directory=True)
    skipped = {p.relative_to(corpus).as_posix(): why for p, why in survey_documents(corpus).skipped}
    assert skipped == {
        ".git": "hidden folder, not indexed",
        ".hidden.txt": "hidden file, not indexed",
        "image.png": "unsupported file type '.png'",
        "linked": "symbolic link to a folder, not followed",
    }


def test_every_text_format_honours_the_bound(corpus: Path) -> None:
    for name in ("notes.txt", "page.html", "sub/report.pdf", "sub/memo.docx"):
        assert len(text_of_at_most(corpus / name, 5)) <= 5


def text_of_at_most(path: Path, limit: int) -> str:
    return extract_text(path, read_document(path), max_chars=limit)
