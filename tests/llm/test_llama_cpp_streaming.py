"""The embedded backend's worker process, with a scripted stand-in for ``llama_cpp.Llama``
imported by the worker: options, load and token timeouts that kill, abort, errors, crashes."""

from __future__ import annotations

import fcntl
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gpuguard import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    ModelLoadFailed,
    WorkerCrashed,
    WorkerKilled,
)
from gpuguard.llm import LlamaCppBackend

from .._processes import gone
from ._support import HELLO, collect

Script = Callable[..., Path]


def _fake_package(root: Path, body: str) -> Path:
    package = root / "fake-site" / "llama_cpp"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(body)
    return package.parent


@pytest.fixture
def own_llama_cpp() -> Iterator[None]:
    """Let this test import its own ``llama_cpp``, and give the real one back afterwards.

    Without it the stand-in stays in ``sys.modules`` and every later test in this process
    that imports ``llama_cpp`` gets it.
    """
    real = {name: module for name, module in sys.modules.items() if _is_llama_cpp(name)}
    for name in real:
        del sys.modules[name]
    yield
    for name in [name for name in sys.modules if _is_llama_cpp(name)]:
        del sys.modules[name]
    sys.modules.update(real)


def _is_llama_cpp(name: str) -> bool:
    return name == "llama_cpp" or name.startswith("llama_cpp.")


@pytest.fixture
def script(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, own_llama_cpp: None) -> Script:
    """Make ``import llama_cpp`` (here and in the worker) give the scripted Llama."""
    site = _fake_package(tmp_path, "from tests.llm.scripted_llama import Llama\n")
    monkeypatch.syspath_prepend(str(site))  # the worker is spawned with this sys.path

    def model(**steps: Any) -> Path:
        path = tmp_path / "model.gguf"
        path.write_text(json.dumps(steps))
        return path

    return model


async def test_load_passes_the_gpu_options(script: Script, tmp_path: Path) -> None:
    log = tmp_path / "options.json"
    path = script(options_log=str(log))
    backend = LlamaCppBackend(path, n_gpu_layers=12, n_ctx=1024)
    await backend.load("model")
    assert json.loads(log.read_text()) == {
        "model_path": str(path),
        "n_gpu_layers": 12,
        "n_ctx": 1024,
        "embedding": False,
        "verbose": False,
    }
    [loaded] = await backend.loaded_models()
    assert loaded.details["pid"] == backend.worker.pid
    await backend.aclose()
    assert await backend.loaded_models() == []


async def test_a_load_past_its_timeout_is_killed_not_left_running(
    script: Script, tmp_path: Path
) -> None:
    """Regression: the load used to go on in a thread after its timeout, so a retry could
    load a second copy into VRAM while the first was still loading."""
    lock, release = tmp_path / "loading.lock", tmp_path / "release"
    backend = LlamaCppBackend(
        script(hold_lock=str(lock), load_s=60, release=str(release)), load_timeout_s=0.5
    )
    try:
        with pytest.raises(BackendTimeout, match=r"took longer than 0\.5s"):
            await backend.load("model")
        with lock.open("w") as probe:
            try:
                fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pytest.fail("the timed-out load is still running: a retry would load a second copy")
        assert not backend.worker.alive
        assert await backend.loaded_models() == []
    finally:
        release.touch()  # lets a load that was left running finish
        await backend.aclose()


async def test_a_stalled_token_kills_the_worker_and_the_next_chat_restarts(
    script: Script,
) -> None:
    backend = LlamaCppBackend(script(stall_after=1), token_timeout_s=0.3)
    await backend.load("model")
    first_pid = backend.worker.pid
    assert first_pid is not None
    with pytest.raises(BackendTimeout, match="the worker process was killed"):
        await collect(backend.chat("model", HELLO))
    assert gone(first_pid)
    stream = backend.chat("model", HELLO)
    assert (await anext(stream)).content == "t1 "  # a new worker, the model reloaded
    assert backend.worker.pid not in (None, first_pid)
    await stream.aclose()
    await backend.aclose()


async def test_abort_kills_the_worker_mid_stream(script: Script) -> None:
    backend = LlamaCppBackend(script(stall_after=1))
    await backend.load("model")
    pid = backend.worker.pid
    assert pid is not None
    stream = backend.chat("model", HELLO)
    assert (await anext(stream)).content == "t1 "
    await backend.abort("model")  # returns once the process is reaped
    assert gone(pid)
    with pytest.raises(BackendError) as caught:
        await anext(stream)
    assert isinstance(caught.value.__cause__, WorkerKilled)
    assert [m.id for m in await backend.loaded_models()] == ["model"]
    await backend.abort("model")  # nothing running: a no-op
    await backend.aclose()


async def test_errors_and_crashes_in_the_worker_are_backend_errors(script: Script) -> None:
    backend = LlamaCppBackend(script(fail_after=3))
    await backend.load("model")
    with pytest.raises(BackendError, match="llama_decode") as caught:
        await collect(backend.chat("model", HELLO))
    assert isinstance(caught.value.__cause__, RuntimeError)
    await backend.aclose()

    crashing = LlamaCppBackend(script(crash_after=2))
    await crashing.load("model")
    with pytest.raises(BackendError, match="exit code 9") as crashed:
        await collect(crashing.chat("model", HELLO))
    assert isinstance(crashed.value.__cause__, WorkerCrashed)
    await crashing.aclose()


async def test_embeddings_cross_the_process_boundary(script: Script) -> None:
    backend = LlamaCppBackend(script(), embedding=True)
    await backend.load("model")
    assert await backend.embeddings("model", ["a", "bcd"]) == [[1.0, 1.0], [1.0, 3.0]]
    await backend.aclose()


async def test_missing_llama_cpp_is_unavailable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, own_llama_cpp: None
) -> None:
    site = _fake_package(tmp_path, "raise ImportError('no llama.cpp here')\n")
    monkeypatch.syspath_prepend(str(site))
    path = tmp_path / "model.gguf"
    path.write_text("{}")
    backend = LlamaCppBackend(path)
    with pytest.raises(BackendUnavailable, match="pip install"):
        await backend.load("model")
    assert not (await backend.health()).ok
    assert not backend.worker.alive


async def test_a_broken_model_file_is_a_load_failure(script: Script, tmp_path: Path) -> None:
    path = tmp_path / "broken.gguf"
    path.write_text("not json")
    backend = LlamaCppBackend(path)
    with pytest.raises(ModelLoadFailed, match="cannot load"):
        await backend.load("broken")
