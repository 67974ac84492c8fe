"""Process benchmark: what the server and the CLI cost before they do any work, side by side.

Every row runs in a child process over one source tree's gpuguard (``--baseline SRC`` adds
a column for another tree's ``src/``), rows interleaved; the load average is printed before
and after. Rows:

1. ``serve``: ``gpuguard serve`` on the default settings (a temporary data dir, a free port
   on 127.0.0.1): seconds from spawn to a 200 from ``/health``, and the server's RSS then
   (idle); after one embedding request (which loads the "GPU" and the CPU embedder), the
   RSS of the server and of its whole process tree (the worker processes included).
2. ``serve-hash``: the same with the hash embedder (no model), for scale.
3. ``cli``: ``gpuguard --version`` and ``gpuguard --help`` against ``python -c pass``, best
   wall time of ``--runs`` each.

Usage: ``python bench/processes.py [--baseline SRC] [--runs N] [--rows serve,serve-hash,cli]``.
Every process it starts is stopped, the data dir removed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from _trees import load_average, print_side_by_side, run_in_tree, source_trees

HERE = Path(__file__).resolve()
ROWS = ("serve", "serve-hash", "cli")
TOKEN = "bench-processes-token"
# The CLI as its console script runs it (a tree may have no ``python -m gpuguard``).
CLI = "import sys; sys.argv[0] = 'gpuguard'; from gpuguard.cli import main; main()"
HASH = {"GPUGUARD_EMBEDDINGS__GPU_ENGINE": "hash", "GPUGUARD_EMBEDDINGS__CPU_ENGINE": "hash"}
START_TIMEOUT_S = 120.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def rss_kb(pid: int) -> int:
    """VmRSS of ``pid`` (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_pids(root: int) -> list[int]:
    """``root`` and every living descendant of it."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def request(url: str, body: dict[str, Any] | None = None) -> int:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    with urllib.request.urlopen(
        urllib.request.Request(url, data=data, headers=headers), timeout=600
    ) as answer:
        answer.read()
        status: int = answer.status
        return status


def row_serve(extra_env: dict[str, str]) -> dict[str, Any]:
    """Start ``gpuguard serve``, time it to /health, measure RSS idle and loaded, stop it."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="gpuguard-bench-processes-") as data:
        env = {
            **os.environ,
            **extra_env,
            "GPUGUARD_DATA_DIR": data,
            "GPUGUARD_SERVER__TOKEN": TOKEN,
            "XDG_RUNTIME_DIR": data,  # the server file goes with the data dir
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
        }
        command = [sys.executable, "-c", CLI, "serve", "--port", str(port)]
        started = time.perf_counter()
        server = subprocess.Popen(
            command,
            env=env,
            cwd=data,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            while True:
                if server.poll() is not None:
                    raise RuntimeError(f"gpuguard serve exited with {server.returncode}")
                if time.perf_counter() - started > START_TIMEOUT_S:
                    raise RuntimeError("gpuguard serve did not answer /health")
                try:
                    if request(f"{url}/health") == 200:
                        break
                except (urllib.error.URLError, ConnectionError):
                    time.sleep(0.02)
            to_health_s = time.perf_counter() - started
            idle_kb = rss_kb(server.pid)
            query = {"model": "all-MiniLM-L6-v2", "input": "how big is a process?"}
            request(f"{url}/v1/embeddings", query)
            pids = tree_pids(server.pid)
            return {
                "to_health_s": to_health_s,
                "idle_mb": idle_kb / 1024,
                "loaded_mb": rss_kb(server.pid) / 1024,
                "tree_mb": sum(rss_kb(pid) for pid in pids) / 1024,
                "processes": len(pids),
            }
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()


def best_wall_s(command: list[str], runs: int) -> float:
    """The best wall time of ``runs`` runs of ``command`` (noise only slows)."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - started)
    return min(times)


def row_cli(runs: int) -> dict[str, Any]:
    return {
        "pass_ms": best_wall_s([sys.executable, "-c", "pass"], runs) * 1000,
        "version_ms": best_wall_s([sys.executable, "-c", CLI, "--version"], runs) * 1000,
        "help_ms": best_wall_s([sys.executable, "-c", CLI, "--help"], runs) * 1000,
    }


def child(args: argparse.Namespace) -> None:
    if args.row == "cli":
        result = row_cli(args.runs)
    else:
        result = row_serve(HASH if args.row == "serve-hash" else {})
    print(json.dumps(result))


Line = tuple[str, str]


def report(row: str, result: dict[str, Any]) -> list[Line]:
    if row == "cli":
        return [
            ("python -c pass (ms)", f"{result['pass_ms']:.0f}"),
            ("gpuguard --version (ms)", f"{result['version_ms']:.0f}"),
            ("gpuguard --help (ms)", f"{result['help_ms']:.0f}"),
        ]
    name = "serve, hash embedder" if row == "serve-hash" else "serve, default settings"
    return [
        (f"{name}: spawn to /health (s)", f"{result['to_health_s']:.2f}"),
        (f"{name}: idle server RSS (MB)", f"{result['idle_mb']:.0f}"),
        (f"{name}: server RSS, models loaded (MB)", f"{result['loaded_mb']:.0f}"),
        (
            f"{name}: tree RSS, models loaded (MB)",
            f"{result['tree_mb']:.0f} ({result['processes']} proc)",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", metavar="SRC", help="also run the gpuguard under SRC")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"some of {','.join(ROWS)}")
    parser.add_argument("--runs", type=int, default=10, help="CLI runs each (the best counts)")
    parser.add_argument("--row", choices=ROWS)
    args = parser.parse_args()
    if args.row:
        child(args)
        return
    trees = source_trees(args.baseline)
    load_before = load_average()
    print(
        f"machine: {platform.node()} | {platform.machine()} | {os.cpu_count()} CPUs | "
        f"Python {platform.python_version()} | load {load_before:.2f}"
    )
    reports: dict[str, list[Line]] = {name: [] for name in trees}
    for row in [row for row in args.rows.split(",") if row]:
        for name, src in trees.items():  # interleaved: new, baseline, per row
            command = [str(HERE), "--row", row, "--runs", str(args.runs)]
            reports[name] += report(row, run_in_tree(command, src))
    table = [
        (metric, *(reports[name][at][1] for name in trees))
        for at, (metric, _) in enumerate(reports["new"])
    ]
    print_side_by_side(("metric", *trees), table)
    print(f"load average {load_before:.2f} -> {load_average():.2f}")


if __name__ == "__main__":
    main()
