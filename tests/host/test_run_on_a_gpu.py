"""``gpuguard run --gpu K``: each GPU's lease apart, the program shown its GPU only.

Real processes and an external ledger of ``CLOCK_MONOTONIC`` stamps: two programs on two
GPUs run at once; two on one GPU run one after the other.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from gpuguard import GpuGuard

from .conftest import Processes, line

# Stamps ``NAME enter NS`` in the ledger argv[1], says ``NAME <CUDA_VISIBLE_DEVICES>``, runs
# until the file argv[3] exists, stamps ``NAME leave NS``. One O_APPEND write per stamp.
STAMPED = """
import os, pathlib, sys, time
ledger, name, release = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3])
fd = os.open(ledger, os.O_WRONLY | os.O_APPEND)
os.write(fd, f"{name} enter {time.monotonic_ns()}\\n".encode())
seen = os.environ.get("CUDA_VISIBLE_DEVICES", "-"), os.environ.get("CUDA_DEVICE_ORDER", "-")
os.write(1, f"{name} {' '.join(seen)}\\n".encode())
while not release.exists():
    time.sleep(0.01)
os.write(fd, f"{name} leave {time.monotonic_ns()}\\n".encode())
"""

TWO_GPUS = {"GPUGUARD_GUARD__GPUS": "[0, 1]"}


@pytest.fixture(autouse=True)
def no_devices_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """The programs inherit no device list of this test's own environment."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("CUDA_DEVICE_ORDER", raising=False)


async def stamped(
    processes: Processes, gpu: int | None, name: str, ledger: Path, release: Path, **env: str
) -> asyncio.subprocess.Process:
    """``gpuguard run [--gpu GPU] -- STAMPED``, with GPUs 0 and 1 unless ``env`` says others."""
    chosen = [] if gpu is None else ["--gpu", str(gpu)]
    return await processes.gpuguard(
        "run", *chosen, "--operation", name, "--",
        sys.executable, "-c", STAMPED, str(ledger), name, str(release),
        **{**TWO_GPUS, **env},
    )  # fmt: skip


def intervals(ledger: Path) -> dict[str, tuple[int, int]]:
    """Each name's (enter, leave) stamps from the ledger."""
    stamps: dict[str, dict[str, int]] = {}
    for record in ledger.read_text().splitlines():
        name, what, ns = record.split()
        stamps.setdefault(name, {})[what] = int(ns)
    return {name: (s["enter"], s["leave"]) for name, s in stamps.items()}


async def test_programs_on_two_gpus_hold_at_once(processes: Processes, tmp_path: Path) -> None:
    ledger, release = tmp_path / "ledger", tmp_path / "release"
    ledger.touch()
    try:
        on_0 = await stamped(processes, 0, "zero", ledger, release)
        on_1 = await stamped(processes, 1, "one", ledger, release)
        # Each line is printed only once its program runs: both run before either may end.
        assert await line(on_0) == "zero 0 PCI_BUS_ID"
        assert await line(on_1) == "one 1 PCI_BUS_ID"
    finally:
        release.touch()
    assert await asyncio.wait_for(on_0.wait(), 30) == 0
    assert await asyncio.wait_for(on_1.wait(), 30) == 0
    spans = intervals(ledger)
    assert spans["one"][0] < spans["zero"][1], f"not at once: {spans}"
    assert spans["zero"][0] < spans["one"][1], f"not at once: {spans}"


async def test_programs_on_one_gpu_hold_one_after_the_other(
    processes: Processes, tmp_path: Path
) -> None:
    ledger, first_done, second_done = tmp_path / "ledger", tmp_path / "one", tmp_path / "two"
    ledger.touch()
    try:
        first = await stamped(processes, 1, "first", ledger, first_done)
        assert await line(first) == "first 1 PCI_BUS_ID"
        second = await stamped(processes, 1, "second", ledger, second_done)
        notice = await line(second, stderr=True)
        assert notice == f"Waiting for GPU... (held by first, pid {first.pid})"
        first_done.touch()
        assert await line(second) == "second 1 PCI_BUS_ID"
    finally:
        first_done.touch()
        second_done.touch()
    assert await asyncio.wait_for(first.wait(), 30) == 0
    assert await asyncio.wait_for(second.wait(), 30) == 0
    spans = intervals(ledger)
    assert spans["first"][1] < spans["second"][0], f"two holders on GPU 1 at once: {spans}"


async def test_devices_the_user_named_are_left_as_they_are(
    processes: Processes, tmp_path: Path
) -> None:
    ledger, release = tmp_path / "ledger", tmp_path / "release"
    ledger.touch()
    release.touch()  # it ends at once
    run = await stamped(processes, 1, "mine", ledger, release, CUDA_VISIBLE_DEVICES="GPU-5ec0a1b2")
    assert await line(run) == "mine GPU-5ec0a1b2 -"
    assert await asyncio.wait_for(run.wait(), 30) == 0


async def test_without_gpu_it_takes_the_first_of_the_gpus_configured(
    processes: Processes, tmp_path: Path, private_gpu_lock_dir: Path
) -> None:
    ledger, release = tmp_path / "ledger", tmp_path / "release"
    ledger.touch()
    try:
        run = await stamped(processes, None, "train", ledger, release, GPUGUARD_GUARD__GPUS="[1]")
        assert await line(run) == "train 1 PCI_BUS_ID"
        current = GpuGuard.host("gpu1", lock_dir=private_gpu_lock_dir).current
        assert current is not None
        assert current.operation == "train"
        assert GpuGuard.host(lock_dir=private_gpu_lock_dir).current is None
    finally:
        release.touch()
    assert await asyncio.wait_for(run.wait(), 30) == 0
