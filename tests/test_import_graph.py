"""The house as docs/design.md draws it: no circle of imports, each room importing only below.

The graph is read from the source, every import counted (module level, inside functions and
under ``TYPE_CHECKING``): an import that only type checkers follow still ties two modules
together for whoever reads them.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "gpuguard"

# room -> the rooms it may import (besides itself); docs/design.md draws the same table.
MAY_IMPORT: dict[str, set[str]] = {
    "shared": set(),
    "guard.vocabulary": {"shared"},
    "guard.policies": {"shared", "guard.vocabulary"},
    "guard.arbiter": {"shared", "guard.vocabulary", "guard.policies"},
    "guard.scopes": {"shared", "guard.vocabulary", "guard.policies", "guard.arbiter"},
    "guard.machinery": {"shared", "guard.vocabulary", "guard.arbiter"},
    "guard.front": {
        "shared",
        "guard.vocabulary",
        "guard.policies",
        "guard.arbiter",
        "guard.scopes",
        "guard.machinery",
    },
    "devices": {"shared"},
    "worker": {"shared"},
    "gpuguard": {"shared", "guard.front", "guard.vocabulary", "guard.machinery"},
    "settings": {"shared", "guard.front", "guard.policies", "guard.scopes", "devices"},
    "llm": {"shared", "guard.front", "guard.vocabulary", "worker"},
    "embed": {"shared", "guard.front", "guard.vocabulary", "worker"},
    "index": {"shared", "embed"},
    "gateway": {"shared", "guard.front", "guard.vocabulary", "llm", "embed"},
    "jobs": {"shared", "embed", "index"},
    "testing": {"shared", "llm", "embed"},
    "server": {
        "shared",
        "gpuguard",
        "guard.front",
        "guard.vocabulary",
        "settings",
        "llm",
        "embed",
        "index",
        "gateway",
        "jobs",
    },
    "cli": {
        "shared",
        "gpuguard",
        "guard.front",
        "guard.vocabulary",
        "settings",
        "embed",
        "index",
        "server",
    },
}

GUARD_ROOMS = {
    "_tickets": "guard.vocabulary",
    "_queue": "guard.vocabulary",
    "_options": "guard.vocabulary",
    "_work": "guard.vocabulary",
    "_fences": "guard.vocabulary",
    "_arbiter": "guard.arbiter",
    "_lease": "guard.machinery",
    "_hold": "guard.machinery",
    "_keeper": "guard.machinery",
    "_deadlines": "guard.machinery",
    "_waiting": "guard.machinery",
    "_hung": "guard.machinery",
    "_telemetry": "guard.machinery",
    "_snapshot": "guard.machinery",
    "_guard": "guard.front",
    "_gpu_set": "guard.front",
}


# Being taken apart; each entry must still be true (so the lists only shrink).
KNOWN_CIRCLES: list[list[str]] = []
KNOWN_LARGE: set[str] = set()


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {_module_name(path): path for path in (SRC / PACKAGE).rglob("*.py")}


def _absolute(module: str, is_package: bool, level: int, name: str | None) -> str:
    if level == 0:
        return name or ""
    parts = module.split(".") if is_package else module.split(".")[:-1]
    parts = parts[: len(parts) - (level - 1)]
    return ".".join([*parts, *([name] if name else [])])


def _imports(module: str) -> set[str]:
    path = MODULES[module]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = _absolute(module, path.name == "__init__.py", node.level, node.module)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in MODULES else base)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name in MODULES and name != module}


GRAPH = {module: _imports(module) for module in MODULES}


def room(module: str) -> str:
    """The room of the house a module lives in (see :data:`MAY_IMPORT`)."""
    parts = module.split(".")[1:]
    if not parts:
        return "gpuguard"
    if parts[0] == "__main__":
        return "cli"  # ``python -m gpuguard`` is the command line's other door
    if parts[0].startswith("_"):
        return "shared"
    if parts[0] != "guard":
        return parts[0]
    if len(parts) == 1:
        return "guard.front"  # the package's facade
    if parts[1] in ("scopes", "policies"):
        return f"guard.{parts[1]}"
    return GUARD_ROOMS[parts[1]]


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_itself_through_others() -> None:
    assert _cycles(GRAPH) == KNOWN_CIRCLES


def test_the_cycle_finder_finds_a_circle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_every_room_imports_only_the_rooms_below_it() -> None:
    wrong = sorted(
        f"{module} ({room(module)}) imports {target} ({room(target)})"
        for module, targets in GRAPH.items()
        for target in targets
        if room(target) != room(module) and room(target) not in MAY_IMPORT[room(module)]
    )
    assert wrong == []


def test_every_module_lives_in_a_known_room() -> None:
    assert {room(module) for module in MODULES} <= set(MAY_IMPORT)


def test_no_module_is_over_400_lines() -> None:
    sizes = {
        str(path.relative_to(SRC)): len(path.read_text(encoding="utf-8").splitlines())
        for path in MODULES.values()
    }
    assert {name for name, lines in sizes.items() if lines > 400} == KNOWN_LARGE


def _design_tree() -> str:
    design = (SRC.parent / "docs" / "design.md").read_text(encoding="utf-8")
    house = design.split("## The house", 1)[1]
    return house.split("```", 2)[1]


def test_the_tree_in_the_design_doc_names_every_package_and_no_other() -> None:
    drawn = set(re.findall(r"([a-z_]+)/", _design_tree().split("\n", 2)[2]))
    packages = {path.parent.name for path in (SRC / PACKAGE).rglob("__init__.py")}
    assert drawn == packages - {PACKAGE}
