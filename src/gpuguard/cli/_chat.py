"""``gpuguard chat``: one question, or a conversation with history (like ``ollama run``)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ._client import ServerClient, ServerError, connected
from ._output import TokenOption, UrlOption, errors

if TYPE_CHECKING:
    pass

__all__ = ["chat"]

# The conversation's slash commands, as Ollama's REPL names them; a line starting with "/"
# is always a command, never a question for the model.
COMMANDS = {
    "/clear": "forget the conversation so far",
    "/load MODEL": "talk to another model from now on",
    "/show": "the model and how many turns the conversation has",
    "/bye": "end the conversation (or Ctrl-D; /exit and /quit too)",
    "/?, /help": "this list",
}
QUIT = frozenset({"/bye", "/exit", "/quit"})
HELP = frozenset({"/?", "/help"})


def chat(
    message: Annotated[
        str | None,
        typer.Argument(
            metavar="MESSAGE", help="What to ask; leave it out for a conversation (/bye ends it)."
        ),
    ] = None,
    url: UrlOption = None,
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
    from rich.text import Text

    prompting = sys.stdin.isatty()
    if prompting:
        errors.print(Text(f"chatting with {options['model']}: /? for help, /bye ends", "dim"))
    history: list[dict[str, str]] = []
    while True:
        try:
            line = input(">>> " if prompting else "")
        except (EOFError, KeyboardInterrupt):
            break
        text = line.strip()
        if not text:
            continue
        if text.startswith("/"):
            if text.split()[0] in QUIT:
                break
            history = _command(text, options, history)
            continue
        turns = [*history, {"role": "user", "content": text}]
        answer = _ask(client, options, turns)
        history = [*turns, {"role": "assistant", "content": answer}]


def _command(text: str, options: dict[str, Any], history: list[dict[str, str]]) -> list[Any]:
    """Carry out one slash command; the history to go on with."""
    from rich.text import Text

    name, _, argument = text.partition(" ")
    argument = argument.strip()
    if name in HELP:
        for usage, what in COMMANDS.items():
            errors.print(f"  {usage:<12} {what}", highlight=False)
    elif name == "/clear":
        errors.print(Text("(a new conversation)", "dim"))
        return []
    elif name == "/load":
        if not argument:
            errors.print("usage: /load MODEL", highlight=False)
        else:
            options["model"] = argument
            errors.print(Text(f"(talking to {argument} from now on)", "dim"))
    elif name == "/show":
        errors.print(f"model {options['model']}, {len(history) // 2} turn(s)", highlight=False)
    else:
        errors.print(f"Unknown command {text!r}. Type /? for help", highlight=False)
    return history


def _ask(client: ServerClient, options: dict[str, Any], turns: list[dict[str, str]]) -> str:
    """Stream one answer to stdout (waiting notices to stderr); the answer's text."""
    from rich.text import Text

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
