"""Names a package exports but imports only on first use (engines with heavy dependencies)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_getattr"]


def lazy_getattr(
    package: str, modules: Mapping[str, str], namespace: dict[str, Any]
) -> Callable[[str], object]:
    """A module ``__getattr__`` that imports ``name`` from ``modules[name]`` on first use.

    Module paths are relative to ``package``; the value is kept in ``namespace`` (the
    package's globals), so each name is imported once.
    """

    def __getattr__(name: str) -> object:
        if name not in modules:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(modules[name], package), name)
        namespace[name] = value
        return value

    return __getattr__
