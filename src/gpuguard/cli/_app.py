"""The ``gpuguard`` command: serve, demo, chat, index, models, status."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .._exceptions import GpuGuardError
from .._settings import load_settings
from ._client import ServerClient, ServerError
from ._render import lane_view

__all__ = ["app", "main"]

app = typer.Typer(
    name="gpuguard",
    help="One fair, bounded GPU lease for a local LLM and embeddings.",
    no_args_is_help=True,
    add_completion=False,
)
models_app = typer.Typer(help="List, load and unload the backend's models.", no_args_is_help=True)
index_app = typer.Typer(help="Index a database's schemas or a folder of documents.")
app.add_typer(models_app, name="models")
app.add_typer(index_app, name="index", no_args_is_help=True)

console = Console()
errors = Console(stderr=True)

_TERMINAL_JOB_STATES = frozenset({"completed", "failed", "cancelled"})

UrlOption = Annotated[
    str, typer.Option("--url", envvar="GPUGUARD_URL", help="The running server's URL.")
]
TokenOption = Annotated[
    str | None,
    typer.Option("--token", envvar="GPUGUARD_SERVER__TOKEN", help="The server's bearer token."),
]
ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Settings file (.toml or .env); or GPUGUARD_CONFIG."),
]
DEFAULT_URL = "http://127.0.0.1:8765"


def main() -> None:
    """Entry point of the ``gpuguard`` script."""
    app()


def _fail(message: str, code: int = 1) -> typer.Exit:
    errors.print(f"[red]error:[/] {message}")
    return typer.Exit(code)


def _client(url: str, token: str | None) -> ServerClient:
    return ServerClient(url, token=token)


def _call(url: str, token: str | None, method: str, path: str, body: Any = None) -> Any:
    with _client(url, token) as client:
        try:
            return client.get(path) if method == "GET" else client.post(path, body)
        except ServerError as exc:
            raise _fail(str(exc)) from exc


@app.command()
def serve(
    config: ConfigOption = None,
    host: Annotated[str | None, typer.Option(help="Bind address (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8765).")] = None,
    ollama: Annotated[
        bool | None,
        typer.Option(
            "--ollama/--no-ollama",
            help="Also serve the Ollama API on its own port (default 11434).",
        ),
    ] = None,
    ollama_port: Annotated[
        int | None, typer.Option(help="The Ollama API's own port (implies --ollama).")
    ] = None,
    document_root: Annotated[
        list[Path] | None,
        typer.Option(help="A folder callers may index (repeat; default: the current one)."),
    ] = None,
    database_host: Annotated[
        list[str] | None,
        typer.Option(help="A database host or network callers may name (repeat)."),
    ] = None,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(help="A name the server answers to besides the loopback ones (repeat)."),
    ] = None,
    backend: Annotated[
        str | None, typer.Option(help="LLM backend: llama-cpp, ollama, llama-server, vllm, ...")
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="Model to prewarm and chat with (a name or a .gguf path).")
    ] = None,
) -> None:
    """Run the server: OpenAI and Ollama APIs, admin API, events, metrics, the web page.

    What callers may index and which names the server answers to: docs/security.md.
    """
    from ..server import create_app
    from ..server import serve as serve_app

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
        app_ = create_app(settings)
    except GpuGuardError as exc:
        raise _fail(str(exc), 2) from exc
    server_settings = settings.server
    console.print(f"gpuguard serving on http://{server_settings.host}:{server_settings.port}")
    ollama_at = server_settings.ollama_port if server_settings.ollama_listen else None
    if ollama_at is not None:
        console.print(f"Ollama API also on http://{server_settings.host}:{ollama_at}")
    asyncio.run(
        serve_app(app_, host=server_settings.host, port=server_settings.port, ollama_port=ollama_at)
    )


def _llm_overrides(backend: str | None, model: str | None) -> dict[str, object]:
    """``--backend`` and ``--model``; a ``.gguf`` model is a llama-cpp ``model_path``."""
    overrides: dict[str, object] = {}
    if backend is not None:
        overrides["backend"] = backend
    if model is not None:
        key = "model_path" if model.endswith(".gguf") else "model"
        overrides[key] = Path(model) if key == "model_path" else model
    return overrides


@app.command()
def demo(
    exit_after: Annotated[
        bool, typer.Option("--exit", help="Stop after the verdict instead of serving the page.")
    ] = False,
    port: Annotated[int, typer.Option(help="Port for the web page.")] = 8765,
    data_dir: Annotated[
        Path, typer.Option(help="Where the tiny model, sample data and index go.")
    ] = Path(".gpuguard/demo"),
) -> None:
    """The seed's scenario on embedded defaults: prewarm and at once refresh the schemas."""
    from ._demo import run_demo

    good = asyncio.run(run_demo(console, data_dir=data_dir, port=port, serve=not exit_after))
    raise typer.Exit(0 if good else 1)


@app.command()
def chat(
    message: Annotated[str, typer.Argument(help="What to ask.")],
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    model: Annotated[str | None, typer.Option(help="Model (default: the current one).")] = None,
    retrieval: Annotated[bool, typer.Option(help="Put the index's best passages first.")] = False,
    max_tokens: Annotated[int | None, typer.Option(min=1)] = None,
) -> None:
    """Ask the running server, streaming the answer (and any "Waiting for GPU...")."""
    with _client(url, token) as client:
        try:
            chosen = model or _current_model(client)
            body = {
                "model": chosen,
                "messages": [{"role": "user", "content": message}],
                "retrieval": retrieval,
                "max_tokens": max_tokens,
            }
            for payload in client.chat_stream(body):
                notice = payload.get("gpuguard")
                if notice:
                    errors.print(f"[yellow]{notice['message']}[/]")
                    continue
                for choice in payload.get("choices", []):
                    sys.stdout.write(choice.get("delta", {}).get("content") or "")
                    sys.stdout.flush()
        except ServerError as exc:
            raise _fail(str(exc)) from exc
    sys.stdout.write("\n")


def _current_model(client: ServerClient) -> str:
    models = client.get("/v1/models")["data"]
    current = [m["id"] for m in models if m.get("gpuguard", {}).get("current")]
    if current:
        return str(current[0])
    if models:
        return str(models[0]["id"])
    raise ServerError("the server lists no models; pass --model")


@models_app.command("list")
def models_list(url: UrlOption = DEFAULT_URL, token: TokenOption = None) -> None:
    """The backend's models, whether each is loaded, and the current one."""
    data = _call(url, token, "GET", "/v1/models")["data"]
    table = Table("model", "loaded", "current", "owned by")
    for model in data:
        flags = model.get("gpuguard", {})
        table.add_row(
            model["id"],
            "yes" if flags.get("loaded") else "no",
            "*" if flags.get("current") else "",
            model.get("owned_by", ""),
        )
    console.print(table)


@models_app.command("load")
def models_load(model: str, url: UrlOption = DEFAULT_URL, token: TokenOption = None) -> None:
    """Load a model (waits for the GPU lease)."""
    _call(url, token, "POST", "/admin/models/load", {"model": model})
    console.print(f"loaded {model}")


@models_app.command("unload")
def models_unload(model: str, url: UrlOption = DEFAULT_URL, token: TokenOption = None) -> None:
    """Unload a model (waits for the GPU lease)."""
    _call(url, token, "POST", "/admin/models/unload", {"model": model})
    console.print(f"unloaded {model}")


@index_app.command("db")
def index_db(
    database_url: Annotated[
        str,
        typer.Argument(
            metavar="URL",
            help="postgres://, mysql://, mariadb:// or sqlite:/// URL, or a configured name.",
        ),
    ],
    schema: Annotated[
        list[str] | None,
        typer.Option("--schema", help="A schema to index (repeat; default: every one)."),
    ] = None,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """Index a database's schemas (tables, columns, keys) on the running server."""
    body = {"database_url": database_url, "schemas": schema or None}
    job = _call(url, token, "POST", "/admin/jobs/schema-refresh", body)
    _follow_job(url, token, job)


@index_app.command("docs")
def index_docs(
    path: Annotated[Path, typer.Argument(help="A document or a folder of documents.")],
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """Index documents (txt, md, html, pdf, docx) on the running server."""
    job = _call(url, token, "POST", "/admin/jobs/rag", {"path": str(path.resolve())})
    _follow_job(url, token, job)


def _follow_job(url: str, token: str | None, job: dict[str, Any], poll_s: float = 0.2) -> None:
    """A progress bar until the job finishes; exit 1 unless it completed."""
    job_id = job.get("id") or job["job_id"]
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[detail]}", style="dim"),
    )
    with _client(url, token) as client, Progress(*columns, console=console) as progress:
        task = progress.add_task(job.get("kind") or job.get("job", "job"), total=None, detail="")
        while True:
            progress.update(
                task,
                completed=job.get("done", 0),
                total=job.get("total"),
                detail=str(job.get("detail", ""))[:60],
            )
            if job.get("status") in _TERMINAL_JOB_STATES:
                break
            time.sleep(poll_s)
            try:
                job = client.get(f"/admin/jobs/{job_id}")
            except ServerError as exc:
                raise _fail(str(exc)) from exc
    console.print(f"job {job_id}: {job.get('status')} {job.get('detail', '')}")
    if job.get("status") != "completed":
        raise typer.Exit(1)


@app.command()
def status(
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Keep a live view open.")] = False,
    interval: Annotated[float, typer.Option(min=0.05, help="Refresh period (s).")] = 0.5,
    count: Annotated[
        int | None, typer.Option(min=1, help="With --watch: stop after this many refreshes.")
    ] = None,
) -> None:
    """The GPU lane: who holds the GPU, who waits by priority, counters."""
    with _client(url, token) as client:
        try:
            view = lane_view(client.get("/admin/gpu?recent=0"))
            if not watch:
                console.print(view)
                return
            with Live(view, console=console, refresh_per_second=8) as live:
                refreshes = 1
                while count is None or refreshes < count:
                    time.sleep(interval)
                    live.update(lane_view(client.get("/admin/gpu?recent=0")))
                    refreshes += 1
        except ServerError as exc:
            raise _fail(str(exc)) from exc
        except KeyboardInterrupt:
            return
