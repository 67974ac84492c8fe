"""``gpuguard index db|docs``: start an indexing job on the server and follow it to its end."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from ._client import DEFAULT_URL, ServerClient, connected
from ._help import PlainCommand, PlainGroup
from ._output import JsonOption, TokenOption, UrlOption, console, interactive, print_json, repeated

__all__ = ["index_app"]

FINISHED = frozenset({"completed", "failed", "cancelled"})

index_app = typer.Typer(
    cls=PlainGroup,
    help="Index a database's schemas or a folder of documents.",
    no_args_is_help=True,
)


@index_app.command("db", cls=PlainCommand)
def index_db(
    database_url: Annotated[
        str,
        typer.Argument(
            metavar="DATABASE_URL",
            help="postgres://, mysql://, mariadb:// or sqlite:/// URL, or a configured name.",
        ),
    ],
    schema: Annotated[
        list[str] | None, repeated("SCHEMA", "A schema to index", default="every one")
    ] = None,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Index a database's schemas (tables, columns, keys) on the running server."""
    body = {"database_url": database_url, "schemas": schema or None}
    _run_job(url, token, "/admin/jobs/schema-refresh", body, as_json)


@index_app.command("docs", cls=PlainCommand)
def index_docs(
    path: Annotated[
        Path, typer.Argument(metavar="PATH", help="A document or a folder of documents.")
    ],
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Index documents (txt, md, html, pdf, docx) on the running server."""
    _run_job(url, token, "/admin/jobs/rag", {"path": str(path.resolve())}, as_json)


def _run_job(url: str, token: str | None, path: str, body: dict[str, Any], as_json: bool) -> None:
    with connected(url, token) as client:
        job = client.post(path, body)
        if as_json:
            job = _wait(client, job, lambda _: None)
        elif interactive():
            job = _follow_with_bar(client, job)
        else:
            job = _wait(client, job, _line_printer())
    if as_json:
        print_json(job)
    else:
        _print_outcome(job)
    if job.get("status") != "completed":
        raise typer.Exit(1)


Seen = Callable[[dict[str, Any]], None]


def _wait(
    client: ServerClient, job: dict[str, Any], seen: Seen, poll_s: float = 0.2
) -> dict[str, Any]:
    """Poll the job until it ends, calling ``seen(job)`` with every state."""
    while True:
        seen(job)
        if job.get("status") in FINISHED:
            return job
        time.sleep(poll_s)
        job = client.get(f"/admin/jobs/{job['id']}")


def _line_printer() -> Seen:
    """For piped output: one plain line each time the job's progress changes."""
    last: list[tuple[Any, ...]] = []

    def seen(job: dict[str, Any]) -> None:
        key = (job.get("status"), job.get("done"), job.get("total"), job.get("detail"))
        if job.get("status") in FINISHED or (last and last[0] == key):
            return
        last[:] = [key]
        total = f"/{job['total']}" if job.get("total") else ""
        console.print(
            f"{job.get('job', 'job')} {job.get('status')} {job.get('done', 0)}{total}"
            f" {job.get('detail', '')}".rstrip(),
            soft_wrap=True,
        )

    return seen


def _follow_with_bar(client: ServerClient, job: dict[str, Any]) -> dict[str, Any]:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[detail]}", style="dim"),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(job.get("job", "job"), total=None, detail="")

        def seen(state: dict[str, Any]) -> None:
            progress.update(
                task,
                completed=state.get("done", 0),
                total=state.get("total"),
                detail=str(state.get("detail", ""))[:60],
            )

        return _wait(client, job, seen)


def _print_outcome(job: dict[str, Any]) -> None:
    """The job's last word, coloured by how it ended (not by the words in it)."""
    status = job.get("status", "")
    style = {"completed": "green", "failed": "red", "cancelled": "yellow"}.get(status, "")
    detail = job.get("error") if status == "failed" else job.get("detail")
    source = f" ({job['source']})" if job.get("source") else ""
    console.print(
        Text.assemble(
            f"{job.get('job', 'job')} {job['id']}{source}: ", (status, style), f" {detail or ''}"
        ),
        soft_wrap=True,
    )
    for issue in job.get("issues", []):
        console.print(Text.assemble(("  skipped ", "yellow"), issue), soft_wrap=True)
