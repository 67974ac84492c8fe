"""Where the CLI writes, and how: rich on a terminal, plain lines or JSON otherwise.

Every command that prints a table takes ``--json``; every live view (progress bars, the
lane, load spinners) falls back to one plain line per change when stdout is not a terminal,
so that piped output and logs stay readable.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer

if TYPE_CHECKING:
    from rich.console import Console

__all__ = [
    "JsonOption",
    "TokenOption",
    "UrlOption",
    "console",
    "errors",
    "fail",
    "interactive",
    "print_json",
    "repeated",
]


class _ConsoleOnFirstUse:
    """A rich ``Console`` made when first used.

    A command that draws nothing (``--version``, ``--help``) never imports rich.
    """

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._console: Console | None = None

    def _made(self) -> Console:
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._options)
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self._made(), name)

    def __enter__(self) -> Console:  # rich's live views buffer output in ``with console:``
        return self._made().__enter__()

    def __exit__(self, *exc_info: Any) -> None:
        self._made().__exit__(*exc_info)


console = cast("Console", _ConsoleOnFirstUse(highlight=False))
errors = cast("Console", _ConsoleOnFirstUse(stderr=True, highlight=False))

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        envvar="GPUGUARD_URL",
        metavar="URL",
        help="The running server's URL (default: from server.host and server.port).",
    ),
]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="GPUGUARD_SERVER__TOKEN",
        metavar="TOKEN",
        help="The server's bearer token.",
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print JSON instead of a table (for scripts).")
]


def repeated(metavar: str, help: str, *, default: str | None = None) -> Any:
    """A list option, given once per value; its help says so, and what giving none means."""
    note = "repeat" if default is None else f"repeat; default: {default}"
    return typer.Option(metavar=metavar, help=f"{help} ({note}).")


def interactive() -> bool:
    """True when stdout is a terminal: live views may redraw in place."""
    return console.is_terminal


def print_json(data: Any) -> None:
    """``data`` as indented JSON on stdout."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``error: message`` on stderr; the exit to raise."""
    from rich.text import Text

    errors.print(Text.assemble(("error:", "red"), " ", message), soft_wrap=True)
    return typer.Exit(code)
