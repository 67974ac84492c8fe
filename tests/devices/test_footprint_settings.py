"""``[models."NAME"] vram_mb`` overrides, GGUF predictions and the data dir, from the settings."""

from __future__ import annotations

from pathlib import Path

from gpuguard.devices import FakeDevices, predict_gguf_footprint
from gpuguard.llm.tiny_model import write_tiny_gguf
from gpuguard.settings import LlmSettings, ModelSettings, Settings, build_footprints

MIB = 1024 * 1024


def test_overrides_predictions_and_the_file_come_from_the_settings(tmp_path: Path) -> None:
    tiny = write_tiny_gguf(tmp_path / "tiny.gguf")
    settings = Settings(
        data_dir=tmp_path / "data",
        llm=LlmSettings(backend="llama-cpp"),
        models={
            "chat": ModelSettings(id="chat-id", vram_mb=6000),
            "tiny": ModelSettings(path=tiny, context_size=64),
        },
    )
    book, meter = build_footprints(settings, detect=lambda: None)
    assert meter is None  # no GPU NVML can read: nothing measured
    assert book["chat-id"] == 6000 * MIB
    assert book.predicted("tiny") == predict_gguf_footprint(tiny, context_tokens=64).total_bytes
    assert book.predicted("chat-id") is None
    book.remember("tiny", 5 * MIB)
    assert (tmp_path / "data" / "footprints.json").is_file()
    assert book.engine == "llama-cpp"


def test_a_gpu_gives_a_meter(tmp_path: Path) -> None:
    devices = FakeDevices.with_gpus(24 * 1024)
    _, meter = build_footprints(Settings(data_dir=tmp_path), detect=lambda: devices)
    assert meter is not None
    assert meter() == 0
