"""Benchmarks side by side: this tree's gpuguard against a baseline source tree, in one run.

A bench measures each row in a child process whose ``PYTHONPATH`` is one tree's ``src/``
(:func:`run_in_tree`), rows interleaved over the trees (new, baseline, new, ...) so that
the noise of a shared machine lands on both, and prints one table with a column per tree
(:func:`print_side_by_side`) between two load averages (:func:`load_average`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["load_average", "print_side_by_side", "run_in_tree", "source_trees"]

Line = tuple[str, ...]


def source_trees(baseline: str | None) -> dict[str, Path]:
    """``{"new": this tree's src}``, and ``"baseline"``: ``baseline`` when given."""
    trees = {"new": Path(__file__).resolve().parent.parent / "src"}
    if baseline:
        trees["baseline"] = Path(baseline).resolve()
    return trees


def run_in_tree(command: Sequence[str], src: Path, *, timeout_s: float = 1800) -> Any:
    """Run ``python *command`` over the gpuguard in ``src``; its last stdout line, as JSON."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    done = subprocess.run(
        [sys.executable, *command],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def load_average() -> float:
    """The one-minute load average."""
    return os.getloadavg()[0]


def print_side_by_side(header: Line, table: Sequence[Line]) -> None:
    """``table`` under ``header``, columns padded to their widest cell."""
    widths = [max(len(line[i]) for line in (*table, header)) for i in range(len(header))]
    for line in (header, tuple("-" * width for width in widths), *table):
        print(" | ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)))
