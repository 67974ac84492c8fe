"""The load test at CI size: streamed chats, loads/unloads and indexing against a live server.

``bench/load.py --ci`` runs the server in a child process on 127.0.0.1 and drives it for
about 20 s; it stops by itself. Bigger runs: ``python bench/load.py`` (docs/benchmarks.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

LOAD = Path(__file__).parents[2] / "bench" / "load.py"


def test_no_request_is_lost_refusals_are_busy_and_memory_is_flat() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, str(LOAD), "--ci", "--json"],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        check=False,
    )
    table, _, last = done.stdout.rstrip().rpartition("\n")
    print(table)  # the figures, shown with -s or on failure
    assert done.returncode in (0, 1), done.stderr[-2000:]
    figures = json.loads(last)
    assert figures["lost"] == 0, figures["examples"]
    assert figures["failed"] == 0, figures["examples"]
    assert figures["flat"], figures["rss_round_ends_mb"]
    assert figures["jobs_settled"]
    assert figures["ok"] > 0
    assert done.returncode == 0


def test_attacks_leave_the_server_within_its_bounds() -> None:
    """Slowloris, idle event streams and stalled readers at CI size (about 15 s)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, str(LOAD), "--attacks", "--ci", "--json"],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        check=False,
    )
    table, _, last = done.stdout.rstrip().rpartition("\n")
    print(table)
    assert done.returncode in (0, 1), done.stderr[-2000:]
    figures = json.loads(last)
    assert [row["attack"] for row in figures["rows"]] == [
        "slowloris",
        "idle SSE subscribers",
        "stalled stream readers",
    ]
    assert all(row["chats_failed"] == 0 for row in figures["rows"]), figures["rows"]
    assert done.returncode == 0
