"""``bench/gpu/run.sh --device cpu`` runs the GPU benchmark at tiny sizes, so it cannot rot."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ROW = re.compile(r"^\| ([a-z ]+) \| (.*) \|$", re.MULTILINE)


def test_the_gpu_benchmark_runs_on_the_cpu_and_prints_every_arrangement() -> None:
    done = subprocess.run(
        [str(ROOT / "bench" / "gpu" / "run.sh"), "--device", "cpu", "--seconds", "0.5"],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=300,  # a hang fails here instead of wedging the suite
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {
        m.group(1): m.group(2) for m in re.finditer(r"^\| ([a-z ]+) \| (.*) \|$", done.stdout, re.M)
    }
    assert {"llm alone", "embed alone", "unguarded", "exclusive", "budget"} <= set(rows)
    budget = [cell.strip() for cell in rows["budget"].split("|")]
    assert int(budget[0]) > 0  # it embedded
    assert float(budget[2]) > 0  # and it generated tokens
    assert re.search(r"LLM [\d.]+ MiB measured, [\d.]+ MiB predicted", done.stdout)
