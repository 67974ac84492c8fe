"""``gpuguard chat``: one question, or a conversation with history (like ``ollama run``)."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from rich.text import Text

from ._client import DEFAULT_URL, ServerClient, ServerError, connected
from ._output import TokenOption, UrlOption, errors

__all__ = ["chat"]

QUIT = frozenset({"/bye", "/exit", "/quit"})
CLEAR = "/clear"


def chat(
    message: Annotated[
        str | None,
        typer.Argument(
            metavar="MESSAGE", help="What to ask; leave it out for a conversation (/bye ends it)."
        ),
    ] = None,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    model: Annotated[
        str | None,
        typer.Option(metavar="MODEL", help="The model to ask (default: the server's current one)."),
    ] = None,
    retrieval: Annotated[
        bool, typer.Option(help="Put the index's best passages before the question.")
    ] = False,
    max_tokens: Annotated[
        int | None,
        typer.Option(min=1, metavar="N", help="Stop each answer after at most N tokens."),
    ] = None,
) -> None:
    """Ask the running server and stream the answer (and any "Waiting for GPU...")."""
    with connected(url, token, timeout=None) as client:
        chosen = model or _current_model(client)
        options = {"model": chosen, "retrieval": retrieval, "max_tokens": max_tokens}
        if message is not None:
            _ask(client, options, [{"role": "user", "content": message}])
        else:
            _converse(client, options)


def _converse(client: ServerClient, options: dict[str, Any]) -> None:
    """Read questions line by line; every answer joins the history sent with the next one."""
    prompting = sys.stdin.isatty()
    if prompting:
        errors.print(
            Text(f"chatting with {options['model']}: /clear forgets, /bye (or Ctrl-D) ends", "dim")
        )
    history: list[dict[str, str]] = []
    while True:
        try:
            line = input(">>> " if prompting else "")
        except (EOFError, KeyboardInterrupt):
            break
        text = line.strip()
        if not text:
            continue
        if text in QUIT:
            break
        if text == CLEAR:
            history = []
            errors.print(Text("(a new conversation)", "dim"))
            continue
        turns = [*history, {"role": "user", "content": text}]
        answer = _ask(client, options, turns)
        history = [*turns, {"role": "assistant", "content": answer}]


def _ask(client: ServerClient, options: dict[str, Any], turns: list[dict[str, str]]) -> str:
    """Stream one answer to stdout (waiting notices to stderr); the answer's text."""
    pieces: list[str] = []
    for payload in client.chat_stream({**options, "messages": turns}):
        notice = payload.get("gpuguard")
        if notice:
            errors.print(Text(str(notice.get("message", "")), "yellow"))
            continue
        for choice in payload.get("choices", []):
            piece = choice.get("delta", {}).get("content") or ""
            pieces.append(piece)
            sys.stdout.write(piece)
            sys.stdout.flush()
    sys.stdout.write("\n")
    sys.stdout.flush()
    return "".join(pieces)


def _current_model(client: ServerClient) -> str:
    models = client.get("/v1/models")["data"]
    current = [m["id"] for m in models if m.get("gpuguard", {}).get("current")]
    if current:
        return str(current[0])
    if models:
        return str(models[0]["id"])
    raise ServerError("the server lists no models; pass --model")
