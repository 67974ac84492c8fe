"""``gpuguard models list|load|unload`` and ``gpuguard ps``."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ._client import ServerClient, ServerError, connected, resolved
from ._help import PlainCommand, PlainGroup
from ._output import JsonOption, TokenOption, UrlOption, console, fail, interactive, print_json
from ._render import (
    gpu_lines,
    holder_text,
    model_size,
    ps_rows,
    ps_table,
    queue_text,
    size_text,
)

if TYPE_CHECKING:
    pass

__all__ = ["models_app", "ps"]

models_app = typer.Typer(
    rich_markup_mode=None,
    cls=PlainGroup,
    help="List, load and unload the backend's models.",
    no_args_is_help=True,
)

ModelArgument = Annotated[str, typer.Argument(metavar="MODEL", help="The model's name.")]


def _get(url: str | None, token: str | None, *paths: str) -> list[dict[str, Any]]:
    with connected(url, token) as client:
        return [client.get(path) for path in paths]


@models_app.command("list", cls=PlainCommand)
def models_list(
    url: UrlOption = None, token: TokenOption = None, as_json: JsonOption = False
) -> None:
    """The backend's models: loaded or not, the current one, size and VRAM where known."""
    from rich.table import Table

    listing, status = _get(url, token, "/v1/models", "/admin/status")
    loaded = {entry["id"]: entry for entry in status.get("loaded", [])}
    rows = [
        {
            "model": model["id"],
            "loaded": bool(model.get("gpuguard", {}).get("loaded")),
            "current": bool(model.get("gpuguard", {}).get("current")),
            "size_bytes": model_size(loaded.get(model["id"])),
            "vram_bytes": model.get("gpuguard", {}).get("vram_bytes"),
            "owned_by": model.get("owned_by", ""),
        }
        for model in listing["data"]
    ]
    if as_json:
        print_json({"models": rows})
        return
    table = Table("model", "loaded", "current", "size", "VRAM", "backend", box=None, pad_edge=False)
    for row in rows:
        table.add_row(
            row["model"],
            "yes" if row["loaded"] else "no",
            "*" if row["current"] else "",
            size_text(row["size_bytes"]),
            size_text(row["vram_bytes"]),
            row["owned_by"],
        )
    console.print(table)


@models_app.command("load", cls=PlainCommand)
def models_load(model: ModelArgument, url: UrlOption = None, token: TokenOption = None) -> None:
    """Load a model: waits for the GPU lease, showing who holds it and the time so far."""
    _model_operation("load", model, url, token)


@models_app.command("unload", cls=PlainCommand)
def models_unload(model: ModelArgument, url: UrlOption = None, token: TokenOption = None) -> None:
    """Unload a model: waits for the GPU lease, then frees the model's memory."""
    _model_operation("unload", model, url, token)


def _model_operation(verb: str, model: str, given_url: str | None, given: str | None) -> None:
    """POST the operation in a thread; meanwhile say what it waits for, and for how long."""
    url, token = resolved(given_url, given)
    outcome: dict[str, Exception | None] = {}

    def call() -> None:
        # A first load may download and compile for minutes: no read timeout.
        with ServerClient(url, token=token, timeout=None) as client:
            try:
                client.post(f"/admin/models/{verb}", {"model": model})
                outcome["error"] = None
            except Exception as exc:  # handed to the main thread
                outcome["error"] = exc

    worker = threading.Thread(target=call, name=f"gpuguard-{verb}", daemon=True)
    started = time.monotonic()
    worker.start()
    with ServerClient(url, token=token, timeout=5) as watcher:
        _show_progress(worker, watcher, verb, model, started)
    error = outcome.get("error")
    if isinstance(error, ServerError):
        raise fail(str(error))
    if error is not None:
        raise error
    console.print(f"{verb}ed {model} in {time.monotonic() - started:.1f} s")


def _show_progress(
    worker: threading.Thread, watcher: ServerClient, verb: str, model: str, started: float
) -> None:
    live = interactive()
    said = ""
    spinner = console.status(f"{verb}ing {model}") if live else None
    if spinner is not None:
        spinner.start()
    try:
        while worker.is_alive():
            phase = _phase(watcher, verb, model)
            elapsed = time.monotonic() - started
            if spinner is not None:
                spinner.update(f"{phase} ({elapsed:.0f} s)")
            elif phase != said:
                # Piped: one line when the phase changes, never a redrawn line.
                console.print(f"{phase} ({elapsed:.1f} s)")
                said = phase
            worker.join(0.5)
    finally:
        if spinner is not None:
            spinner.stop()


def _phase(watcher: ServerClient, verb: str, model: str) -> str:
    """``loading X`` while our operation holds the GPU, else who it waits for."""
    try:
        gpu = watcher.get("/admin/gpu?recent=0")
    except ServerError:
        return f"{verb}ing {model}"
    holder = gpu.get("current")
    if holder and not (holder.get("operation") == verb and holder.get("model") == model):
        return f"waiting for the GPU (held by {holder['operation']})"
    return f"{verb}ing {model}"


def ps(url: UrlOption = None, token: TokenOption = None, as_json: JsonOption = False) -> None:
    """The loaded models (size, VRAM, processor, until), the GPU lease holder and its queue."""
    (status,) = _get(url, token, "/admin/status")
    rows = ps_rows(status)
    snapshot = status["gpu"]
    gpus = status.get("gpus", [])
    if as_json:
        # Several GPUs add each one's snapshot; one GPU's answer keeps its shape.
        print_json(
            {
                "models": rows,
                "holder": snapshot.get("holder"),
                "waiters": snapshot.get("waiters", []),
                **({"gpus": gpus} if len(gpus) > 1 else {}),
            }
        )
        return
    console.print(ps_table(rows) if rows else "no model is loaded")
    console.print(f"GPU lease: {holder_text(snapshot.get('holder'))}")
    console.print(f"queue: {queue_text(snapshot.get('waiters', []))}")
    for line in gpu_lines(gpus):
        console.print(line, soft_wrap=True, markup=False, highlight=False)
