"""The ``gpuguard`` command: serve, demo, chat, ps, status, models, index, jobs, run."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .. import __version__
from .._exceptions import ConfigError, GpuGuardError
from ._chat import chat
from ._client import ServerClient, connected
from ._console_log import console_logging
from ._help import PlainCommand, PlainGroup
from ._index import index_app
from ._jobs import jobs_app
from ._models import models_app, ps
from ._output import (
    JsonOption,
    TokenOption,
    UrlOption,
    console,
    fail,
    interactive,
    print_json,
    repeated,
)
from ._render import status_view, watch_line
from ._run import run

if TYPE_CHECKING:
    from ..settings import Settings

__all__ = ["app", "main"]

app = typer.Typer(
    rich_markup_mode=None,
    cls=PlainGroup,
    name="gpuguard",
    help="One fair, bounded GPU lease for a local LLM and embeddings.",
    no_args_is_help=True,
    add_completion=False,
)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", metavar="FILE", help="Settings file (.toml or .env); or GPUGUARD_CONFIG."
    ),
]


def main() -> None:
    """Entry point of the ``gpuguard`` script."""
    app()


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"gpuguard {__version__}")  # plain: no renderer to import for one line
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """One fair, bounded GPU lease for a local LLM and embeddings."""


@app.command(cls=PlainCommand)
def serve(
    config: ConfigOption = None,
    host: Annotated[
        str | None, typer.Option(metavar="ADDRESS", help="Bind address (default 127.0.0.1).")
    ] = None,
    port: Annotated[int | None, typer.Option(metavar="PORT", help="Port (default 8765).")] = None,
    ollama: Annotated[
        bool | None,
        typer.Option(
            "--ollama/--no-ollama",
            help="Also serve the Ollama API on its own port (default 11434).",
        ),
    ] = None,
    ollama_port: Annotated[
        int | None,
        typer.Option(metavar="PORT", help="The Ollama API's own port (implies --ollama)."),
    ] = None,
    document_root: Annotated[
        list[Path] | None,
        repeated("DIR", "A folder callers may index", default="the current one"),
    ] = None,
    database_host: Annotated[
        list[str] | None, repeated("HOST", "A database host or network callers may name")
    ] = None,
    allowed_host: Annotated[
        list[str] | None,
        repeated("NAME", "A name the server answers to besides the loopback ones"),
    ] = None,
    backend: Annotated[
        str | None,
        typer.Option(
            metavar="BACKEND", help="LLM backend: llama-cpp, ollama, llama-server, vllm, ..."
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            metavar="MODEL", help="Model to prewarm and chat with (a name or a .gguf path)."
        ),
    ] = None,
) -> None:
    """Run the server: OpenAI and Ollama APIs, admin API, events, metrics, the web page.

    What callers may index and which names the server answers to: docs/security.md.
    """
    import asyncio

    from ..server import create_app
    from ..server import serve as serve_app
    from ..settings import load_settings

    if ollama_port is not None and ollama is None:
        ollama = True
    server_flags = {
        "host": host,
        "port": port,
        "ollama_listen": ollama,
        "ollama_port": ollama_port,
        "allowed_hosts": allowed_host,
    }
    source_flags = {"document_roots": document_root, "database_hosts": database_host}
    try:
        settings = load_settings(config)
        server = {k: v for k, v in server_flags.items() if v is not None}
        sources = {k: v for k, v in source_flags.items() if v is not None}
        llm = _llm_overrides(backend, model)
        if server or sources or llm:
            settings = load_settings(
                config,
                server=settings.server.model_dump() | server,
                sources=settings.sources.model_dump() | sources,
                llm=settings.llm.model_dump() | llm,
            )
        _model_file_exists(settings)
        app_ = create_app(settings)
    except GpuGuardError as exc:
        raise fail(str(exc), 2) from exc
    listen = settings.server
    ollama_at = listen.ollama_port if listen.ollama_listen else None
    with console_logging():
        try:
            asyncio.run(
                serve_app(
                    app_,
                    host=listen.host,
                    port=listen.port,
                    ollama_port=ollama_at,
                    on_serving=functools.partial(_print_login_link, app_),
                )
            )
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise fail(f"cannot serve on {listen.host}:{listen.port}: {reason}") from exc
        except KeyboardInterrupt:
            return


def _model_file_exists(settings: Settings) -> None:
    """A GGUF file named for llama-cpp must exist: say so at start, not as a 503 later."""
    if settings.llm.backend != "llama-cpp":
        return
    path = settings.model_path
    if path != settings.generated_model_path and not path.is_file():
        raise ConfigError(f"the model file {str(path)!r} does not exist (llm.model_path)")


def _print_login_link(app_: Any, url: str) -> None:
    """The page gets the admin token through a link that works once (the CLI reads a file)."""
    link = app_.state.access.login_url(url)
    console.print(f"Open the page (this link works once): {link}", soft_wrap=True)


def _llm_overrides(backend: str | None, model: str | None) -> dict[str, object]:
    """``--backend`` and ``--model``; a ``.gguf`` model is a llama-cpp ``model_path``."""
    overrides: dict[str, object] = {}
    if backend is not None:
        overrides["backend"] = backend
    if model is not None:
        key = "model_path" if model.endswith(".gguf") else "model"
        overrides[key] = Path(model) if key == "model_path" else model
    return overrides


@app.command(cls=PlainCommand)
def demo(
    exit_after: Annotated[
        bool, typer.Option("--exit", help="Stop after the verdict instead of serving the page.")
    ] = False,
    port: Annotated[
        int | None,
        typer.Option(metavar="PORT", help="Port for the web page (default: server.port, 8765)."),
    ] = None,
    data_dir: Annotated[
        Path,
        typer.Option(metavar="DIR", help="Where the tiny model, sample data and index go."),
    ] = Path(".gpuguard/demo"),
) -> None:
    """The start-up scenario on embedded defaults: prewarm and at once refresh the schemas."""
    import asyncio

    from ..settings import load_settings
    from ._demo import run_demo

    if port is None:
        try:
            port = load_settings().server.port
        except GpuGuardError as exc:
            raise fail(str(exc), 2) from exc
    good = asyncio.run(run_demo(console, data_dir=data_dir, port=port, serve=not exit_after))
    raise typer.Exit(0 if good else 1)


app.command(cls=PlainCommand)(chat)
app.command(cls=PlainCommand)(ps)
app.command(cls=PlainCommand, context_settings={"allow_interspersed_args": False})(run)


@app.command(cls=PlainCommand)
def status(
    url: UrlOption = None,
    token: TokenOption = None,
    watch: Annotated[
        bool, typer.Option("--watch", "-w", help="Keep watching (a line per change when piped).")
    ] = False,
    interval: Annotated[
        float, typer.Option(min=0.05, metavar="SECONDS", help="Refresh period with --watch.")
    ] = 0.5,
    count: Annotated[
        int | None,
        typer.Option(min=1, metavar="N", help="With --watch: stop after N refreshes."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """The backend, the current model, running jobs and the GPU lane (holder, queue)."""
    with connected(url, token) as client:
        try:
            state = _status(client)
            if as_json:
                print_json(state)
                return
            if not watch:
                console.print(status_view(state))
                return
            states = _states(functools.partial(_status, client), state, interval, count)
            if interactive():
                _watch_live(states)
            else:
                _watch_lines(states)
        except KeyboardInterrupt:
            return


app.add_typer(models_app, name="models")
app.add_typer(index_app, name="index")
app.add_typer(jobs_app, name="jobs")


def _status(client: ServerClient) -> dict[str, Any]:
    """The status route, the lane and the running jobs in one dict."""
    status = client.get("/admin/status")
    gpu = client.get("/admin/gpu?recent=0")
    jobs = client.get("/admin/jobs")["jobs"] if status.get("jobs_enabled") else []
    return {**status, "current": gpu.get("current"), "jobs": jobs}


def _states(
    refresh: Callable[[], dict[str, Any]], state: dict[str, Any], interval: float, count: int | None
) -> Iterator[dict[str, Any]]:
    """``state``, then a fresh one every ``interval`` seconds: ``count`` in all (None: no end)."""
    yield state
    seen = 1
    while count is None or seen < count:
        time.sleep(interval)
        yield refresh()
        seen += 1


def _watch_live(states: Iterator[dict[str, Any]]) -> None:
    from rich.live import Live

    with Live(status_view(next(states)), console=console, refresh_per_second=8) as live:
        for state in states:
            live.update(status_view(state))


def _watch_lines(states: Iterator[dict[str, Any]]) -> None:
    """Piped: a timestamped line whenever a GPU's holder or queue, or the jobs, change."""
    last = ""
    for state in states:
        key, text = watch_line(state)
        if key != last:
            console.print(f"{time.strftime('%H:%M:%S')} {text}", soft_wrap=True)
            last = key
