"""Help pages that read like the rest of the CLI: ``--url URL``, ``chat [OPTIONS] [MESSAGE]``.

Typer's own help labels every parameter with its Python type (``--help <bool>``) and wraps
required arguments in braces (``{message}``). These command classes name each value after
what it is instead, and show flags bare.
"""

from __future__ import annotations

from typing import Any

from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

__all__ = ["PlainCommand", "PlainGroup"]


def _no_type(ctx: Any) -> None:
    return None


def _label(params: list[Any]) -> list[Any]:
    """Give every parameter a readable label: nothing for a flag, NAME for a value."""
    for param in params:
        if isinstance(param, TyperArgument):
            param.metavar = param.metavar or (param.name or "value").upper()
            # An argument's label already says what it is; a "<str>" beside it adds nothing.
            param.display_type_rich = _no_type  # type: ignore[method-assign]
        elif isinstance(param, TyperOption) and param.metavar is None:
            flag = param.is_flag or param.count
            param.metavar = "" if flag else (param.name or "value").upper()
    return params


class PlainCommand(TyperCommand):
    """A command whose help names values (``--url URL``) instead of types."""

    def get_params(self, ctx: Any) -> list[Any]:
        """The parameters, each with a readable label."""
        return _label(super().get_params(ctx))

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        """``[OPTIONS] MESSAGE`` rather than ``[OPTIONS] {message}``."""
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument):
                name = param.metavar if param.required else f"[{param.metavar}]"
                pieces.append(f"{name}..." if param.nargs != 1 else str(name))
        return pieces


class PlainGroup(TyperGroup):
    """A command group with the same readable help as :class:`PlainCommand`."""

    def get_params(self, ctx: Any) -> list[Any]:
        """The parameters, each with a readable label."""
        return _label(super().get_params(ctx))
