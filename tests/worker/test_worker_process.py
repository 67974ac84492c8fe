"""The supervised worker process, with real child processes: calls, streams with
backpressure, kill mid-call, crashes, restart, and no orphans when the parent dies."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gpuguard import ConfigError, WorkerCrashed, WorkerKilled
from gpuguard.worker import WorkerProcess

from .._processes import gone, wait_for

ENGINE = "tests.worker.engines:build"


@pytest.fixture
async def worker() -> AsyncIterator[WorkerProcess]:
    process = WorkerProcess(ENGINE, name="test", max_in_flight=4)
    yield process
    await process.kill()


async def test_lazy_start_calls_and_errors(worker: WorkerProcess) -> None:
    assert not worker.alive
    assert worker.pid is None
    assert await worker.call("echo", {"a": [1, 2]}) == {"a": [1, 2]}
    assert worker.alive
    child = await worker.call("pid")
    assert child == worker.pid != os.getpid()
    with pytest.raises(ValueError, match="bad input") as caught:
        await worker.call("fail")
    assert any("in worker 'test'" in note for note in caught.value.__notes__)
    with pytest.raises(TypeError, match="cannot be sent back"):
        await worker.call("unpicklable")
    with pytest.raises(TypeError, match="cannot send"):
        await worker.call("echo", lambda: None)
    assert await worker.call("pid") == child  # errors do not cost the process
    assert worker.starts == 1


async def test_openmp_threads_wait_passively_in_the_child(worker: WorkerProcess) -> None:
    assert await worker.call("env", "OMP_WAIT_POLICY") == "PASSIVE"


async def test_a_stream_arrives_whole_and_in_order(worker: WorkerProcess) -> None:
    assert [item async for item in worker.stream("count", 100)] == list(range(100))


async def test_the_child_runs_at_most_the_window_ahead(worker: WorkerProcess) -> None:
    stream = worker.stream("count")  # endless
    assert await anext(stream) == 0
    await stream.aclose()  # returns once the child has closed its iterator
    assert await worker.call("how_many") <= 4


async def test_kill_mid_call_fails_it_and_the_next_call_restarts(
    worker: WorkerProcess,
) -> None:
    stream = worker.stream("hang")
    assert await anext(stream) == "started"  # the child is inside the call now
    pid = worker.pid
    assert pid is not None
    await worker.kill()
    assert gone(pid), "kill() returned before the child was reaped"
    with pytest.raises(WorkerKilled, match="killed during 'hang'"):
        await anext(stream)
    assert not worker.alive
    assert await worker.call("pid") != pid
    assert worker.starts == 2


async def test_a_call_or_stream_past_its_timeout_kills_the_child(
    worker: WorkerProcess,
) -> None:
    pid = await worker.call("pid")
    with pytest.raises(TimeoutError, match="'sleep' hung; killed"):
        await worker.call("sleep", 3600, timeout_s=0.2)
    assert gone(pid)
    stream = worker.stream("hang", item_timeout_s=0.2)
    assert await anext(stream) == "started"
    pid = worker.pid
    assert pid is not None
    with pytest.raises(TimeoutError, match="'hang' hung; killed"):
        await anext(stream)
    assert gone(pid)
    assert await worker.call("echo", 3) == 3


async def test_a_cancelled_call_returns_once_the_child_has_finished_it(
    worker: WorkerProcess, tmp_path: Path
) -> None:
    started, release, finished = (tmp_path / name for name in ("started", "release", "done"))
    call = asyncio.ensure_future(
        worker.call("block_until", str(started), str(release), str(finished))
    )
    await asyncio.to_thread(wait_for, started.exists, "the child to start the call")
    call.cancel()
    await asyncio.sleep(0)
    call.cancel()  # a repeated cancel does not cut the wait short either
    await asyncio.sleep(0)
    assert not call.done()
    release.touch()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert finished.exists(), "the cancelled call returned while the child still ran it"


async def test_kill_fails_a_pending_unary_call(worker: WorkerProcess) -> None:
    hanging = worker.stream("hang")
    assert await anext(hanging) == "started"
    queued = asyncio.ensure_future(worker.call("echo", 1))  # waits behind the hung call
    await asyncio.sleep(0)
    await worker.kill()
    with pytest.raises(WorkerKilled):
        await queued
    await hanging.aclose()


async def test_kill_minus_nine_from_outside_is_a_crash(worker: WorkerProcess) -> None:
    stream = worker.stream("hang")
    assert await anext(stream) == "started"
    assert worker.pid is not None
    os.kill(worker.pid, signal.SIGKILL)  # as the OOM killer would
    with pytest.raises(WorkerCrashed, match="SIGKILL") as caught:
        await anext(stream)
    assert caught.value.exit_code == -signal.SIGKILL
    assert caught.value.operation == "hang"
    assert await worker.call("echo", "back") == "back"


async def test_a_crash_inside_a_call_reports_exit_code_and_stderr(
    worker: WorkerProcess,
) -> None:
    with pytest.raises(WorkerCrashed, match="exit code 3") as caught:
        await worker.call("crash")
    assert "dying now" in caught.value.stderr
    assert caught.value.worker == "test"
    with pytest.raises(WorkerCrashed, match="SIGSEGV") as segv:
        await worker.call("segfault")
    assert "Segmentation fault" in segv.value.stderr  # faulthandler's report
    assert await worker.call("echo", 2) == 2
    assert worker.starts == 3


async def test_a_failing_factory_is_its_error_and_leaves_no_process() -> None:
    worker = WorkerProcess("tests.worker.engines:build_failing", name="broken")
    with pytest.raises(RuntimeError, match="no model here"):
        await worker.start()
    with pytest.raises(ConfigError, match="module:function"):
        await WorkerProcess("no-colon", name="bad").start()


async def test_a_cancelled_start_kills_the_half_started_child(tmp_path: Path) -> None:
    marker = tmp_path / "building"
    worker = WorkerProcess("tests.worker.engines:build_slowly", (str(marker),), name="slow")
    starting = asyncio.ensure_future(worker.start())
    await asyncio.to_thread(wait_for, marker.exists, "the child to start building")
    pid = int(marker.read_text())
    starting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await starting
    assert gone(pid), "the cancelled start left its process loading"
    assert not worker.alive


async def test_stop_closes_the_engine_and_the_process_exits(worker: WorkerProcess) -> None:
    pid = await worker.call("pid")
    await worker.stop()
    assert gone(pid)
    assert not worker.alive
    await worker.stop()  # a no-op


def test_the_child_dies_with_its_parent(tmp_path: Path) -> None:
    script = (
        "import asyncio, os, signal, sys\n"
        "from gpuguard.worker import WorkerProcess\n"
        "async def main():\n"
        f"    worker = WorkerProcess({ENGINE!r}, name='orphan')\n"
        "    print(await worker.call('pid'), flush=True)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "asyncio.run(main())\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    parent = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60
    )
    assert parent.returncode == -signal.SIGKILL, parent.stderr
    child = int(parent.stdout.split()[0])
    wait_for(lambda: gone(child), "the orphaned worker to exit")


def test_impossible_settings_are_refused() -> None:
    with pytest.raises(ConfigError):
        WorkerProcess(ENGINE, name="x", max_in_flight=0)


def test_the_child_dies_with_its_parent_even_inside_a_call_holding_the_gil(
    tmp_path: Path,
) -> None:
    # The lifeline thread needs the GIL to exit; the kernel's death signal does not.
    marker = tmp_path / "inside"
    script = (
        "import asyncio, os, pathlib, signal, time\n"
        "from gpuguard.worker import WorkerProcess\n"
        "async def main():\n"
        f"    worker = WorkerProcess({ENGINE!r}, name='stuck')\n"
        f"    call = asyncio.ensure_future(worker.call('hold_gil', {str(marker)!r}, 3600))\n"
        f"    while not pathlib.Path({str(marker)!r}).exists():\n"
        "        await asyncio.sleep(0.01)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "asyncio.run(main())\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    log = tmp_path / "stderr"
    with log.open("w") as stderr:  # not a pipe: a surviving child would keep it open
        parent = subprocess.run([sys.executable, "-c", script], stderr=stderr, env=env, timeout=60)
    assert parent.returncode == -signal.SIGKILL, log.read_text()
    child = int(marker.read_text())
    try:
        wait_for(lambda: gone(child), "the worker stuck in a GIL-holding call to die")
    finally:
        if not gone(child):
            os.kill(child, signal.SIGKILL)


async def test_a_worker_started_from_a_thread_that_ends_lives_on() -> None:
    # The kernel kills a child when the *thread* that started it ends, not the process.
    worker = WorkerProcess(ENGINE, name="threaded")
    pids: list[int] = []
    thread = threading.Thread(target=lambda: pids.append(asyncio.run(worker.call("pid"))))
    thread.start()
    await asyncio.to_thread(thread.join)
    task = Path(f"/proc/self/task/{thread.native_id}")
    await asyncio.to_thread(wait_for, lambda: not task.exists(), "the thread to be gone")
    try:
        assert await worker.call("pid") == pids[0]
        assert worker.starts == 1
    finally:
        await worker.kill()
