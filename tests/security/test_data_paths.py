"""Paths callers name: every bad one a 400, nothing probed outside the roots, nothing swapped.

Each attack goes over HTTP to a live server on 127.0.0.1 started in the ``root`` fixture's
folder (``docs/handbook.md`` inside, ``outside/secret.md`` beside it).
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from gpuguard import DocumentError
from gpuguard.index import SourcePolicy, read_document, survey_documents

from .conftest import SECRET, ServeFactory


@pytest.mark.parametrize(
    "path",
    [
        "docs/a\x00b.txt",
        "x" * 300,
        "docs/" + "y" * 300 + ".md",
        "~nosuchuser/x",
        "~root",
        "~root/.bashrc",
        "~postgres",
        "~www-data/index.html",
    ],
)
async def test_every_bad_path_is_a_400_that_names_no_home(serve: ServeFactory, path: str) -> None:
    async with serve() as server:
        response = await server.http.post("/admin/jobs/rag", json={"path": path})
        assert response.status_code == 400, response.text
        message = response.json()["error"]["message"]
        for home in ("/root", "/var/lib/postgresql", "/var/www", "/nonexistent"):
            assert home not in message
        assert (await server.http.get("/health")).status_code == 200


def test_a_name_no_file_can_have_is_refused_as_a_source_error(root: Path) -> None:
    from gpuguard import SourceUnavailable

    with pytest.raises(SourceUnavailable, match="not a valid file name"):
        SourcePolicy.confined([root]).check_path("docs/\ud800.md")


async def test_a_nul_in_a_sqlite_url_is_a_400(serve: ServeFactory) -> None:
    async with serve() as server:
        response = await server.http.post(
            "/admin/jobs/schema-refresh", json={"database_url": "sqlite:///docs/a%00b.db"}
        )
        assert response.status_code == 400


async def test_paths_outside_the_roots_tell_nothing_about_what_lies_there(
    serve: ServeFactory, root: Path
) -> None:
    outside = root.parent / "outside"
    (outside / "folder").mkdir()
    (outside / "link").symlink_to("/etc")
    finished = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import os; print(os.getpid())", stdout=asyncio.subprocess.PIPE
    )
    dead = (await finished.communicate())[0].decode().strip()
    probes = [
        f"{outside}/{name}/../../{root.name}/docs/handbook.md"
        for name in ("folder", "missing", "link")
    ] + [f"/proc/{pid}/cwd/docs/handbook.md" for pid in (os.getpid(), dead)]
    async with serve() as server:
        answers = []
        for probe in probes:
            response = await server.http.post("/admin/jobs/rag", json={"path": probe})
            assert response.status_code == 400
            answers.append(response.json()["error"]["message"].replace(probe, "PROBE"))
        assert len(set(answers[:3])) == 1, answers
        assert len(set(answers[3:])) == 1, answers
        assert (await server.http.get("/admin/jobs")).json()["jobs"] == []


async def test_dot_dot_is_refused_before_anything_is_resolved(serve: ServeFactory) -> None:
    async with serve() as server:
        for route, body in [
            ("rag", {"path": "docs/../docs"}),
            ("rag", {"path": "../outside"}),
            ("schema-refresh", {"database_url": "sqlite:///../outside/x"}),
        ]:
            response = await server.http.post(f"/admin/jobs/{route}", json=body)
            assert response.status_code == 400
            assert "'..' is not allowed" in response.json()["error"]["message"]


def swap_for_link(path: Path, target: Path) -> None:
    """Replace ``path`` (a file or a folder) by a symbolic link to ``target``, atomically."""
    link = path.with_name(path.name + ".swap")
    link.symlink_to(target)
    if path.is_dir():
        path.rename(path.with_name(path.name + ".gone"))
    os.replace(link, path)


@pytest.mark.parametrize("swapped", ["file", "folder"])
def test_a_file_swapped_for_a_link_after_the_check_is_not_read(root: Path, swapped: str) -> None:
    policy = SourcePolicy.confined([root])
    (root / "docs" / "sub").mkdir()
    (root / "docs" / "sub" / "b.md").write_text("the real b")
    outside = root.parent / "outside"
    (outside / "b.md").write_text(f"not for callers: {SECRET}")
    files = survey_documents(root / "docs", policy=policy).files
    target = root / "docs" / "sub" / "b.md"
    assert target in files
    if swapped == "file":
        swap_for_link(target, outside / "secret.md")
    else:
        swap_for_link(root / "docs" / "sub", outside)
    with pytest.raises(DocumentError, match="outside the allowed document roots"):
        read_document(target, policy=policy)


async def test_a_job_does_not_index_a_file_swapped_mid_job(
    serve: ServeFactory, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gpuguard.jobs import rag

    (root / "docs" / "b.md").write_text("the real b")
    surveyed = rag.survey_documents  # type: ignore[attr-defined]

    def survey_then_swap(*args: Any, **kwargs: Any) -> Any:
        found = surveyed(*args, **kwargs)
        swap_for_link(root / "docs" / "b.md", Path("/etc/passwd"))
        return found

    monkeypatch.setattr(rag, "survey_documents", survey_then_swap)
    async with serve() as server:
        started = await server.http.post("/admin/jobs/rag", json={"path": "docs"})
        job = await server.finished_job(started.json())
        assert job["status"] == "completed"
        assert any("b.md" in issue and "outside" in issue for issue in job["issues"])
        assert str(root / "docs" / "b.md") not in job["result"]["embedded_sources"]
