"""Benchmark: bulk embedding beside a generating LLM, unguarded, exclusive and budget.

Run it through ``bench/gpu/run.sh`` (``--device cuda`` on a GPU, ``--device cpu --seconds 1``
to check that it runs). One process, two models with random weights built from a config (no
downloads): a MiniLM-L6-shaped encoder that embeds batches of sentences (background priority,
one lease per batch) and a TinyLlama-1.1B-shaped LLM that streams chats (interactive, one
lease per whole chat), each in its own thread as gpuguard's engines run them. Rows:

* ``llm alone`` / ``embed alone``: each model by itself, the baselines;
* ``unguarded``: both at once, no lease;
* ``exclusive``: both behind the exclusive policy;
* ``budget``: both behind the budget policy, each declaring its measured footprint.

Columns: embedding sentences/s; the chat's time to first token and ms/token (p50, p99); how
long a chat waited for its lease (p99); the peak GPU memory reserved. On the CPU the sizes are
tiny, a fake 80 GiB GPU stands in for NVML, and the figures say only that the script works.
Targets (on a GPU): budget embedding >= 0.95 x unguarded, budget chat ms/token p99 <= 1.1 x
the LLM alone, exclusive chat lease wait p99 <= 1.5 embedding batches.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import BertConfig, BertModel, LlamaConfig, LlamaForCausalLM

from gpuguard import GpuGuard, Priority
from gpuguard.devices import FakeDevices, detect_devices
from gpuguard.guard import in_thread
from gpuguard.guard.policies import EXCLUSIVE, Budget, GpuMemory, Policy
from gpuguard.guard.scopes.local import LocalArbiter

MIB = 1024 * 1024


@dataclass(frozen=True)
class Sizes:
    """Model shapes and workload for one device."""

    encoder: dict[str, Any]
    llm: dict[str, Any]
    batch: int
    sentence_tokens: int
    prompt_tokens: int
    chat_tokens: int


GPU_SIZES = Sizes(
    encoder={"hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12,
             "intermediate_size": 1536, "vocab_size": 30522},
    llm={"hidden_size": 2048, "num_hidden_layers": 22, "num_attention_heads": 32,
         "num_key_value_heads": 4, "intermediate_size": 5632, "vocab_size": 32000,
         "max_position_embeddings": 2048},
    batch=256, sentence_tokens=64, prompt_tokens=128, chat_tokens=64,
)  # fmt: skip
CPU_SIZES = Sizes(
    encoder={"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
             "intermediate_size": 128, "vocab_size": 1000},
    llm={"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2, "intermediate_size": 128, "vocab_size": 1000,
         "max_position_embeddings": 256},
    batch=16, sentence_tokens=16, prompt_tokens=16, chat_tokens=8,
)  # fmt: skip


@dataclass
class Figures:
    """What one arrangement measured."""

    sentences: int = 0
    batch_s: list[float] = field(default_factory=list)
    ttft_ms: list[float] = field(default_factory=list)
    token_ms: list[float] = field(default_factory=list)
    wait_ms: list[float] = field(default_factory=list)
    peak_mib: float | None = None


class Models:
    """The two models on one device, and one step of work for each."""

    def __init__(self, device: torch.device, sizes: Sizes) -> None:
        dtype = torch.float16 if device.type == "cuda" else torch.float32
        self.device, self.sizes = device, sizes
        torch.manual_seed(0)
        self.encoder = BertModel(BertConfig(**sizes.encoder), add_pooling_layer=False)
        self.embed_bytes = self._measured(self.encoder, dtype, self.embed_batch)
        self.llm = LlamaForCausalLM(LlamaConfig(**sizes.llm))
        self.llm_bytes = self._measured(self.llm, dtype, lambda: self.chat(None))
        shape = sizes.llm
        head_dim = shape["hidden_size"] // shape["num_attention_heads"]
        ctx = sizes.prompt_tokens + sizes.chat_tokens
        kv = 2 * shape["num_hidden_layers"] * shape["num_key_value_heads"] * head_dim * ctx * 2
        self.llm_predicted = _param_bytes(self.llm) + kv

    def _measured(
        self, model: torch.nn.Module, dtype: torch.dtype, warm: Callable[[], object]
    ) -> int:
        """Load ``model``; the bytes it takes plus its peak in one step (weights alone on CPU)."""
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize()
            before = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        model.to(self.device, dtype).eval()
        warm()
        if not cuda:
            return _param_bytes(model)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before

    @torch.inference_mode()
    def embed_batch(self) -> int:
        """Embed one batch of random sentences; returns how many."""
        s = self.sizes
        ids = torch.randint(0, s.encoder["vocab_size"], (s.batch, s.sentence_tokens))
        hidden = self.encoder(input_ids=ids.to(self.device)).last_hidden_state
        hidden.mean(dim=1).float().cpu()
        return s.batch

    @torch.inference_mode()
    def chat(self, figures: Figures | None) -> None:
        """Prefill a prompt, then generate token by token (greedy), timing each token."""
        s = self.sizes
        ids = torch.randint(0, s.llm["vocab_size"], (1, s.prompt_tokens), device=self.device)
        start = time.perf_counter()
        out = self.llm(input_ids=ids, use_cache=True)
        for n in range(s.chat_tokens):
            token = out.logits[:, -1].argmax(-1, keepdim=True)
            token.cpu()  # the token reaches the client: wait for the device
            now = time.perf_counter()
            if figures is not None:
                (figures.ttft_ms if n == 0 else figures.token_ms).append((now - start) * 1000)
            start = now
            out = self.llm(input_ids=token, past_key_values=out.past_key_values, use_cache=True)


class TorchMemory:
    """The GPU's memory from torch, where NVML is missing; this process's is what it reserved."""

    def __init__(self, index: int) -> None:
        self.free_bytes, self.total_bytes = torch.cuda.mem_get_info(index)

    def used_by(self, pids: set[int]) -> int:
        """What this process reserved, if ``pids`` names it."""
        return torch.cuda.memory_reserved() if os.getpid() in pids else 0


def gpu_reader(device: torch.device) -> tuple[Callable[[], GpuMemory], str]:
    """How the budget reads the GPU: NVML, else torch; a fake 80 GiB GPU on the CPU."""
    if device.type != "cuda":
        fake = FakeDevices.with_gpus(80 * 1024, name="fake 80 GiB GPU (cpu run)")
        return (lambda: fake.info(0)), fake.info(0).name
    index = device.index or 0
    nvml = detect_devices()
    if nvml is not None:
        return (lambda: nvml.info(index)), nvml.info(index).name
    return (lambda: TorchMemory(index)), torch.cuda.get_device_name(index)


async def run_arrangement(
    models: Models, guard: GpuGuard | None, seconds: float, *, embed: bool, chat: bool
) -> Figures:
    """Embed and/or chat for ``seconds``, through ``guard`` (``None``: no lease)."""
    figures = Figures()
    stop = time.perf_counter() + seconds
    cuda = models.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()

    async def step(op: str, model: str, priority: Priority, work: Callable[[], Any]) -> float:
        asked = time.perf_counter()
        if guard is None:
            await in_thread(work)
            return 0.0
        async with guard.hold(op, model=model, priority=priority) as lease:
            waited = time.perf_counter() - asked
            await lease.run(in_thread(work))
        return waited

    async def embedder() -> None:
        while time.perf_counter() < stop:
            began = time.perf_counter()
            await step("embed-batch", "embedder", Priority.BACKGROUND, models.embed_batch)
            figures.batch_s.append(time.perf_counter() - began)
            figures.sentences += models.sizes.batch

    async def chatter() -> None:
        while time.perf_counter() < stop:
            waited = await step(
                "chat", "chat-llm", Priority.INTERACTIVE, lambda: models.chat(figures)
            )
            figures.wait_ms.append(waited * 1000)

    await asyncio.gather(*([embedder()] if embed else []), *([chatter()] if chat else []))
    if cuda:
        figures.peak_mib = torch.cuda.max_memory_reserved() / MIB
    figures.sentences = int(figures.sentences / seconds)
    return figures


def guard_for(policy: Policy) -> GpuGuard:
    return GpuGuard(
        "bench-gpu", arbiter=LocalArbiter(aging_s=30.0, policy=policy), wait_timeout=None
    )


def _param_bytes(model: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def _pct(values: list[float], q: float) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    return f"{ordered[min(len(ordered) - 1, int(q * len(ordered)))]:.1f}"


def table(rows: dict[str, Figures]) -> str:
    head = ("arrangement", "embed sent/s", "TTFT p50 ms", "ms/token p50", "ms/token p99",
            "chat lease wait p99 ms", "peak GPU MiB")  # fmt: skip
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for name, f in rows.items():
        peak = "-" if f.peak_mib is None else f"{f.peak_mib:.0f}"
        embedded = str(f.sentences) if f.batch_s else "-"
        tokens = (_pct(f.ttft_ms, 0.5), _pct(f.token_ms, 0.5), _pct(f.token_ms, 0.99))
        cells = (name, embedded, *tokens, _pct(f.wait_ms, 0.99), peak)
        lines.append(" | ".join(cells))
    return "\n".join(f"| {line} |" for line in lines)


def verdicts(rows: dict[str, Figures]) -> list[str]:
    """The targets, each met or not, with the figures compared."""
    budget, free, exclusive = rows["budget"], rows["unguarded"], rows["exclusive"]
    batch_ms = statistics.median(rows["embed alone"].batch_s) * 1000
    p99 = {name: float(_pct(rows[name].token_ms, 0.99)) for name in ("budget", "llm alone")}
    wait = float(_pct(exclusive.wait_ms, 0.99))
    checks = [
        (budget.sentences >= 0.95 * free.sentences,
         f"budget embedding {budget.sentences}/s >= 0.95 x unguarded {free.sentences}/s"),
        (p99["budget"] <= 1.1 * p99["llm alone"],
         f"budget chat ms/token p99 {p99['budget']:.1f} <= 1.1 x alone {p99['llm alone']:.1f}"),
        (wait <= 1.5 * batch_ms,
         f"exclusive chat lease wait p99 {wait:.0f} ms <= 1.5 batches ({batch_ms:.0f} ms each)"),
    ]  # fmt: skip
    return [f"{'met' if ok else 'NOT met'}: {text}" for ok, text in checks]


async def main(args: argparse.Namespace) -> None:
    device = torch.device(
        args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    )
    if device.type == "cpu":
        torch.set_num_threads(1)
    sizes = GPU_SIZES if device.type == "cuda" else CPU_SIZES
    models = Models(device, sizes)
    read, gpu_name = gpu_reader(device)
    footprints = {"embedder": models.embed_bytes, "chat-llm": models.llm_bytes}
    budget = Budget(read, headroom_bytes=args.headroom_mb * MIB, footprints=footprints)
    s = args.seconds
    rows = {
        "llm alone": await run_arrangement(models, None, s, embed=False, chat=True),
        "embed alone": await run_arrangement(models, None, s, embed=True, chat=False),
        "unguarded": await run_arrangement(models, None, s, embed=True, chat=True),
        "exclusive": await run_arrangement(models, guard_for(EXCLUSIVE), s, embed=True, chat=True),
        "budget": await run_arrangement(models, guard_for(budget), s, embed=True, chat=True),
    }
    print(f"device: {device} ({gpu_name}); torch {torch.__version__}; {s:g} s per row")
    print(table(rows))
    print(
        f"footprints: embedder {models.embed_bytes / MIB:.1f} MiB measured; LLM "
        f"{models.llm_bytes / MIB:.1f} MiB measured, {models.llm_predicted / MIB:.1f} MiB "
        "predicted (weights + 2 x layers x kv_heads x head_dim x ctx x 2 bytes)"
    )
    for line in verdicts(rows):
        print(line if device.type == "cuda" else f"(cpu run, targets are for a GPU) {line}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--device", default="auto", help="auto, cuda, cuda:N or cpu")
    parser.add_argument("--seconds", type=float, default=None, help="per row (20 GPU, 2 CPU)")
    parser.add_argument("--headroom-mb", type=int, default=2048)
    args = parser.parse_args()
    if args.seconds is None:
        args.seconds = 2.0 if args.device == "cpu" else 20.0
    if args.seconds <= 0:
        parser.error("--seconds must be > 0")
    return args


if __name__ == "__main__":
    warnings.filterwarnings("ignore")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    asyncio.run(main(parse_args()))
