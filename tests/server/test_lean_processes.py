"""A lean server: no engine library imported where no engine runs, one model for both roles.

The default GPU embedder runs in a worker process and resolves ``gpu_device="auto"`` there;
without a GPU it runs on the CPU, the CPU embedder's device, and its one model serves both
roles: the server itself never imports torch or sentence-transformers.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

from gpuguard.embed import (
    HashEmbedder,
    ProcessEmbedder,
    SentenceTransformerEmbedder,
    SharedModelEmbedder,
    Vectors,
    create_embedder_pair,
)
from gpuguard.llm.tiny_model import write_tiny_gguf
from gpuguard.server import open_runtime
from gpuguard.settings import load_settings

ENGINE_MODULES = ("torch", "sentence_transformers", "fastembed", "llama_cpp", "numpy")

_IN_A_FRESH_PROCESS = """
import asyncio, json, sys
from gpuguard.llm.tiny_model import write_tiny_gguf
from gpuguard.server import open_runtime
from gpuguard.settings import load_settings

async def main(embed):
    settings = load_settings(data_dir=sys.argv[1])
    async with open_runtime(settings, start=False) as runtime:
        gateway = runtime.gateway
        if embed:
            on_cpu = await gateway.embed(["a lean server"], use_gpu=False)
            on_gpu = await gateway.embed(["a lean server"], use_gpu=True)
            assert abs(on_cpu - on_gpu).max() < 1e-5
        gpu = gateway.gpu_embedder
        worker = getattr(gpu, "worker", None)
        print(json.dumps({
            "modules": sorted(m for m in MODULES if m in sys.modules),
            "gpu_device": gpu.device,
            "worker_alive": bool(worker and worker.alive),
        }))

asyncio.run(main(sys.argv[2] == "embed"))
"""


def _fresh_runtime(tmp_path: Path, *, embed: bool) -> dict[str, Any]:
    """Build the default runtime in a new interpreter (embedding once if ``embed``)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            f"MODULES = {ENGINE_MODULES!r}\n{_IN_A_FRESH_PROCESS}",
            str(tmp_path),
            "embed" if embed else "build",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_building_the_default_runtime_imports_no_engine(tmp_path: Path) -> None:
    """``gpu_device="auto"`` is not asked of torch here: the worker asks, when it starts.

    The tiny model is written first (a first start writes it with numpy); then nothing in
    the building needs numpy either.
    """
    model = load_settings(data_dir=tmp_path).generated_model_path
    model.parent.mkdir(parents=True)
    write_tiny_gguf(model)
    built = _fresh_runtime(tmp_path, embed=False)
    assert built == {"modules": [], "gpu_device": "auto", "worker_alive": False}


def _has_cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


@pytest.mark.skipif(_has_cuda(), reason="with a GPU the two roles run on two devices")
def test_without_a_gpu_one_model_in_the_worker_serves_both_roles(tmp_path: Path) -> None:
    """The CPU role embeds on the worker's model: the server holds no copy, nor torch.

    (numpy comes with the vectors the worker sends back, and with the tiny model written.)
    """
    embedded = _fresh_runtime(tmp_path, embed=True)
    assert embedded == {"modules": ["numpy"], "gpu_device": "cpu", "worker_alive": True}


def test_an_in_process_gpu_engine_on_the_cpu_is_the_cpu_embedder(tmp_path: Path) -> None:
    embeddings = {"gpu_process": False, "gpu_device": "cpu", "cpu_engine": "sentence-transformers"}
    settings = load_settings(data_dir=tmp_path, embeddings=embeddings)

    async def roles() -> tuple[object, object]:
        async with open_runtime(settings, start=False) as runtime:
            return runtime.gateway.gpu_embedder, runtime.gateway.cpu_embedder

    gpu, cpu = asyncio.run(roles())
    assert isinstance(gpu, SentenceTransformerEmbedder)
    assert cpu is gpu


class _Worker:
    """A :class:`ProcessEmbedder` stand-in whose worker says where its model runs."""

    def __init__(self, device: str) -> None:
        self.name = "m"
        self.device = "auto"
        self._probed = device
        self.dimension: int | None = None
        self.loads = 0

    async def probe_device(self) -> str:
        await asyncio.sleep(0)  # the worker answers later: concurrent callers interleave
        self.device = self._probed
        return self.device

    async def load(self) -> int:
        self.loads += 1
        self.dimension = 8
        return 8

    async def embed(self, texts: Sequence[str]) -> Vectors:
        await self.load()
        return np.ones((len(texts), 8), dtype=np.float32)


def _shared(device: str) -> tuple[SharedModelEmbedder, _Worker, list[HashEmbedder]]:
    worker = _Worker(device)
    built: list[HashEmbedder] = []

    def own() -> HashEmbedder:
        built.append(HashEmbedder(name="m", dimension=8))
        return built[-1]

    cpu = SharedModelEmbedder(cast(ProcessEmbedder, worker), cast(Callable[[], Any], own))
    return cpu, worker, built


async def test_the_cpu_role_uses_the_workers_model_when_it_runs_on_the_cpu() -> None:
    cpu, worker, built = _shared("cpu")
    assert cpu.shares_worker is None  # not known before the worker has said
    assert await cpu.load() == 8
    assert (await cpu.embed(["x", "y"])).shape == (2, 8)
    assert cpu.shares_worker
    assert (worker.loads, built) == (2, [])
    await cpu.abort()  # never kills the shared worker
    await cpu.aclose()


async def test_the_cpu_role_loads_its_own_copy_beside_a_gpu_worker() -> None:
    cpu, worker, built = _shared("cuda")
    await asyncio.gather(cpu.load(), cpu.load())  # two first calls: one copy
    await cpu.embed(["x"])
    assert (cpu.shares_worker, worker.loads, len(built)) == (False, 0, 1)
    assert built[0].calls == 1
    await cpu.aclose()


def test_different_models_or_engines_are_not_shared() -> None:
    gpu, cpu = create_embedder_pair(
        "hash", "hash", gpu_model="m", cpu_model="m", gpu_device="cpu", gpu_process=False
    )
    assert gpu is not cpu  # the test engine has no model to share
    gpu, cpu = create_embedder_pair(
        "sentence-transformers",
        "hash",
        gpu_model="all-MiniLM-L6-v2",
        cpu_model="all-MiniLM-L6-v2",
    )
    assert isinstance(gpu, ProcessEmbedder)
    assert isinstance(cpu, HashEmbedder)
