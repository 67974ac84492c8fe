"""Footprints remembered in the data dir: per engine, overridable, owner-only, written whole."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from gpuguard.devices import FakeDevices, FootprintBook, GpuProcess, ProcessGpuMemory

GIB = 1024**3


def test_a_measurement_is_remembered_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "data" / "footprints.json"
    FootprintBook(path, engine="llama-cpp").remember("qwen", 5 * GIB)
    again = FootprintBook(path, engine="llama-cpp")
    assert again.measured("qwen") == 5 * GIB
    assert dict(again) == {"qwen": 5 * GIB}


def test_footprints_are_per_engine(tmp_path: Path) -> None:
    path = tmp_path / "footprints.json"
    FootprintBook(path, engine="llama-cpp").remember("qwen", 5 * GIB)
    ollama = FootprintBook(path, engine="ollama")
    assert "qwen" not in ollama
    ollama.remember("qwen", 6 * GIB)
    assert FootprintBook(path, engine="llama-cpp")["qwen"] == 5 * GIB
    assert FootprintBook(path, engine="ollama")["qwen"] == 6 * GIB


def test_a_model_assigned_to_another_engine_is_kept_and_listed_under_it(tmp_path: Path) -> None:
    path = tmp_path / "footprints.json"
    book = FootprintBook(path, engine="llama-cpp")
    book.assign("bge", engine="sentence-transformers")
    book.remember("bge", GIB)
    book.remember("qwen", 5 * GIB)
    assert dict(book) == {"qwen": 5 * GIB, "bge": GIB}
    assert "bge" not in FootprintBook(path, engine="llama-cpp")
    assert FootprintBook(path, engine="sentence-transformers")["bge"] == GIB


def test_an_override_wins_over_a_measurement(tmp_path: Path) -> None:
    book = FootprintBook(tmp_path / "f.json", engine="e", overrides={"qwen": 9 * GIB})
    book.remember("qwen", 5 * GIB)
    assert book["qwen"] == 9 * GIB
    assert book.measured("qwen") == 5 * GIB
    assert book.get("other") is None


def test_the_file_is_owner_only_and_no_temporary_is_left(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        FootprintBook(tmp_path / "footprints.json", engine="e").remember("m", 1)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "footprints.json").stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["footprints.json"]


def test_a_failed_write_leaves_the_old_file_whole_and_still_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "footprints.json"
    book = FootprintBook(path, engine="e")
    book.remember("m", 1)
    before = path.read_bytes()

    def broken_replace(src: str, dst: Path) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with caplog.at_level(logging.WARNING, logger="gpuguard.devices"):
        book.remember("n", 2)
    assert "disk full" in caplog.text
    assert book["n"] == 2  # counted in this process all the same
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["footprints.json"]


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"engines": {"e": {"m": -5, "n": "x"}}}'])
def test_an_unreadable_file_is_measured_afresh(
    tmp_path: Path, text: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "footprints.json"
    path.write_text(text)
    with caplog.at_level(logging.WARNING, logger="gpuguard.devices"):
        book = FootprintBook(path, engine="e")
    assert dict(book) == {}
    book.remember("m", 3)
    assert json.loads(path.read_text())["engines"] == {"e": {"m": 3}}


def test_a_negative_footprint_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="used_bytes"):
        FootprintBook(tmp_path / "f.json", engine="e").remember("m", -1)


def test_the_meter_counts_this_process_and_its_children_only() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=-1)
    try:
        devices = FakeDevices.with_gpus(80 * 1024)
        devices.set_processes(
            0,
            GpuProcess(os.getpid(), 3 * GIB),
            GpuProcess(child.pid, 2 * GIB),
            GpuProcess(1, 7 * GIB),  # a foreign program
        )
        assert ProcessGpuMemory(devices)() == 5 * GIB
    finally:
        child.kill()
        child.wait()


def test_the_meter_counts_a_child_started_from_another_thread() -> None:
    """The kernel lists a child under the thread that started it while that thread lives."""
    started: list[subprocess.Popen[bytes]] = []
    spawned, measured = threading.Event(), threading.Event()

    def spawn() -> None:
        command = [sys.executable, "-c", "import sys; sys.stdin.read()"]
        started.append(subprocess.Popen(command, stdin=subprocess.PIPE))
        spawned.set()
        measured.wait()

    thread = threading.Thread(target=spawn)
    thread.start()
    spawned.wait()
    [child] = started
    try:
        devices = FakeDevices.with_gpus(80 * 1024)
        devices.set_processes(0, GpuProcess(child.pid, 2 * GIB))
        assert ProcessGpuMemory(devices)() == 2 * GIB
    finally:
        measured.set()
        thread.join()
        child.kill()
        child.wait()


def test_batch_footprints_are_kept_apart_under_the_models_engine(tmp_path: Path) -> None:
    path = tmp_path / "footprints.json"
    book = FootprintBook(path, engine="llama-cpp")
    book.assign("bge", engine="sentence-transformers")
    book.remember("bge", GIB)
    assert book.batch_need("bge") is None  # its batches not measured yet
    book.remember_batch("bge", GIB // 2)
    assert dict(book) == {"bge": GIB}  # the mapping lists models only
    assert book.batch_need("bge") == GIB + GIB // 2
    assert json.loads(path.read_text())["batches"] == {"sentence-transformers": {"bge": GIB // 2}}
    again = FootprintBook(path, engine="sentence-transformers")
    assert again.measured_batch("bge") == GIB // 2


def test_a_configured_footprint_is_a_batchs_whole_need(tmp_path: Path) -> None:
    book = FootprintBook(tmp_path / "f.json", engine="e", overrides={"bge": 3 * GIB})
    assert book.batch_need("bge") == 3 * GIB
    book.remember("bge", GIB)
    book.remember_batch("bge", GIB)
    assert book.batch_need("bge") == 3 * GIB


def test_a_file_from_before_batches_reads_as_before(tmp_path: Path) -> None:
    path = tmp_path / "footprints.json"
    path.write_text('{"version": 1, "engines": {"e": {"m": 7}}}')
    book = FootprintBook(path, engine="e")
    assert (dict(book), book.measured_batch("m")) == ({"m": 7}, None)


def test_the_meter_reads_the_gpu_it_is_asked_for() -> None:
    devices = FakeDevices.with_gpus(80 * 1024, 80 * 1024)
    devices.set_processes(0, GpuProcess(os.getpid(), 3 * GIB))
    devices.set_processes(1, GpuProcess(os.getpid(), 5 * GIB))
    meter = ProcessGpuMemory(devices)
    assert (meter(), meter(0), meter(1)) == (3 * GIB, 3 * GIB, 5 * GIB)
    assert ProcessGpuMemory(devices, 1)() == 5 * GIB
