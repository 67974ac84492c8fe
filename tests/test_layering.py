"""Each subpackage imports with only its own extra's dependencies; no product code uses testing.

Every case runs in a fresh interpreter whose import system refuses the third-party packages
the subpackage must not need, as on a machine where only that extra is installed.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "gpuguard"

THIRD_PARTY = {
    "httpx",
    "numpy",
    "torch",
    "sentence_transformers",
    "fastembed",
    "onnxruntime",
    "sqlalchemy",
    "sqlean",
    "sqlite_vec",
    "psycopg",
    "pymysql",
    "pypdf",
    "docx",
    "fastapi",
    "uvicorn",
    "starlette",
    "sse_starlette",
    "prometheus_client",
    "pydantic",
    "pydantic_settings",
    "typer",
    "rich",
    "redis",
    "llama_cpp",
}
INDEX_EXTRA = {"numpy", "sqlalchemy", "sqlean", "sqlite_vec", "psycopg", "pymysql", "pypdf"}
INDEX_EXTRA |= {"docx"}

# subpackage -> the third-party packages its extra brings
ALLOWED = {
    "gpuguard": set(),
    "gpuguard.llm": {"httpx"},
    "gpuguard.embed": {"numpy"},
    "gpuguard.index": INDEX_EXTRA,
    "gpuguard.gateway": {"numpy"},
    "gpuguard.jobs": INDEX_EXTRA,
}

BLOCKER = textwrap.dedent(
    """
    import sys

    class Refuse:
        def __init__(self, names):
            self.names = names

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in self.names:
                raise ImportError(f"{name} is not installed (blocked by the layering test)")
            return None

    sys.meta_path.insert(0, Refuse(set(sys.argv[1].split(","))))
    import importlib
    importlib.import_module(sys.argv[2])
    """
)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_subpackage_imports_with_only_its_own_extra(package: str) -> None:
    refused = ",".join(sorted(THIRD_PARTY - ALLOWED[package]))
    result = subprocess.run(
        [sys.executable, "-c", BLOCKER, refused, package],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_product_code_never_imports_the_testing_package() -> None:
    offenders = []
    for path in SRC.rglob("*.py"):
        if "testing" in path.relative_to(SRC).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module is not None:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            if any(name == "testing" or ".testing" in f".{name}" for name in names):
                offenders.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert offenders == []
