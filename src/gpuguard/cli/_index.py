"""``gpuguard index db|docs``: start an indexing job on the server and follow it to its end.

The job's id is printed as soon as the server accepts it; Ctrl-C cancels the job on the
server, ``--detach`` starts it and returns at once (``gpuguard jobs`` follows it later).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ._client import connected
from ._help import PlainCommand, PlainGroup
from ._jobs import follow, print_outcome
from ._output import JsonOption, TokenOption, UrlOption, console, errors, print_json, repeated

__all__ = ["index_app"]

index_app = typer.Typer(
    rich_markup_mode=None,
    cls=PlainGroup,
    help="Index a database's schemas or a folder of documents.",
    no_args_is_help=True,
)

DetachOption = Annotated[
    bool,
    typer.Option("--detach", "-d", help="Start the job and return at once; it runs on the server."),
]


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
    url: UrlOption = None,
    token: TokenOption = None,
    detach: DetachOption = False,
    as_json: JsonOption = False,
) -> None:
    """Index a database's schemas (tables, columns, keys) on the running server."""
    body = {"database_url": database_url, "schemas": schema or None}
    _run_job(url, token, "/admin/jobs/schema-refresh", body, detach=detach, as_json=as_json)


@index_app.command("docs", cls=PlainCommand)
def index_docs(
    path: Annotated[
        Path, typer.Argument(metavar="PATH", help="A document or a folder of documents.")
    ],
    url: UrlOption = None,
    token: TokenOption = None,
    detach: DetachOption = False,
    as_json: JsonOption = False,
) -> None:
    """Index documents (txt, md, html, pdf, docx) on the running server."""
    body = {"path": str(path.resolve())}
    _run_job(url, token, "/admin/jobs/rag", body, detach=detach, as_json=as_json)


def _run_job(
    url: str | None,
    token: str | None,
    path: str,
    body: dict[str, Any],
    *,
    detach: bool,
    as_json: bool,
) -> None:
    with connected(url, token) as client:
        job = client.post(path, body)
        errors.print(
            f"{job.get('job', 'job')} {job['id']} {job.get('status', 'started')}: "
            f"`gpuguard jobs show {job['id']}` follows it, `gpuguard jobs cancel {job['id']}` "
            "stops it",
            soft_wrap=True,
            highlight=False,
        )
        if detach:  # the id alone on stdout, for scripts: ID=$(gpuguard index ... --detach)
            print_json(job) if as_json else console.print(job["id"], soft_wrap=True)
            return
        job = follow(client, job, as_json=as_json)
    if as_json:
        print_json(job)
    else:
        print_outcome(job)
        if job.get("status") == "failed":
            # A driver's own words are for the operator: the server's console, not the API.
            errors.print("  the server's console has the full reason", highlight=False)
    if job.get("status") != "completed":
        raise typer.Exit(1)
