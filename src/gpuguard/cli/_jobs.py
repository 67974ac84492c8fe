"""Following a job to its end, and ``gpuguard jobs list|show|cancel``.

A job started by ``gpuguard index`` runs on the server, not in the CLI: its id is printed
as soon as the server accepts it, Ctrl-C while following it cancels it on the server
(``--detach`` leaves it running instead), and ``gpuguard jobs`` finds it again later.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ._client import ServerClient, connected
from ._help import PlainCommand, PlainGroup
from ._output import (
    JsonOption,
    TokenOption,
    UrlOption,
    console,
    errors,
    interactive,
    print_json,
)
from ._render import jobs_lines

if TYPE_CHECKING:
    pass

__all__ = ["FINISHED", "follow", "jobs_app", "print_outcome"]

FINISHED = frozenset({"completed", "failed", "cancelled"})
# The exit status of a command ended by Ctrl-C, as shells report SIGINT.
INTERRUPTED = 130
_POLL_S = 0.2

jobs_app = typer.Typer(
    rich_markup_mode=None,
    cls=PlainGroup,
    help="The server's indexing jobs: list them, show one, cancel one.",
    no_args_is_help=True,
)

JobId = Annotated[
    str, typer.Argument(metavar="ID", help="The job's id (see `gpuguard jobs list`).")
]
Seen = Callable[[dict[str, Any]], None]


def follow(client: ServerClient, job: dict[str, Any], *, as_json: bool) -> dict[str, Any]:
    """Poll ``job`` to its end with a bar (or plain lines); Ctrl-C cancels it on the server."""
    try:
        if as_json:
            return _wait(client, job, lambda _: None)
        if interactive():
            return _follow_with_bar(client, job)
        return _wait(client, job, _line_printer())
    except KeyboardInterrupt:
        ended = client.post(f"/admin/jobs/{job['id']}/cancel")
        errors.print(
            f"Ctrl-C: job {job['id']} {ended.get('status', 'cancelled')} on the server "
            "(--detach leaves a job running)"
        )
        raise typer.Exit(INTERRUPTED) from None


def pause(seconds: float) -> None:
    """Wait between two polls (a seam: tests press Ctrl-C here)."""
    time.sleep(seconds)


def _wait(client: ServerClient, job: dict[str, Any], seen: Seen) -> dict[str, Any]:
    """Poll the job until it ends, calling ``seen(job)`` with every state."""
    while True:
        seen(job)
        if job.get("status") in FINISHED:
            return job
        pause(_POLL_S)
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
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

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


def print_outcome(job: dict[str, Any]) -> None:
    """The job's last word, coloured by how it ended (not by the words in it)."""
    from rich.text import Text

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


@jobs_app.command("list", cls=PlainCommand)
def jobs_list(
    url: UrlOption = None, token: TokenOption = None, as_json: JsonOption = False
) -> None:
    """Every job the server remembers, newest first, with its progress."""
    from rich.table import Table

    with connected(url, token) as client:
        jobs = client.get("/admin/jobs")["jobs"]
    if as_json:
        print_json({"jobs": jobs})
        return
    if not jobs:
        console.print("no jobs")
        return
    table = Table("ID", "JOB", box=None, pad_edge=False)
    for job, line in zip(jobs, jobs_lines(jobs), strict=True):
        table.add_row(str(job["id"]), line)
    console.print(table)


@jobs_app.command("show", cls=PlainCommand)
def jobs_show(
    job_id: JobId, url: UrlOption = None, token: TokenOption = None, as_json: JsonOption = False
) -> None:
    """One job: its state, its progress or outcome, and every source it skipped."""
    with connected(url, token) as client:
        job = client.get(f"/admin/jobs/{job_id}")
    if as_json:
        print_json(job)
    elif job.get("status") in FINISHED:
        print_outcome(job)
    else:
        console.print(f"{job_id} {jobs_lines([job])[0]} {job.get('detail', '')}".rstrip())


@jobs_app.command("cancel", cls=PlainCommand)
def jobs_cancel(
    job_id: JobId, url: UrlOption = None, token: TokenOption = None, as_json: JsonOption = False
) -> None:
    """Cancel a job (a finished one is left as it ended)."""
    with connected(url, token) as client:
        job = client.post(f"/admin/jobs/{job_id}/cancel")
    if as_json:
        print_json(job)
    else:
        print_outcome(job)
