"""The ONNX Runtime engine through fastembed, and :func:`export_onnx` to make a local model.

Execution providers follow the device: ``cuda`` -> CUDA, ``mps`` -> CoreML, ``cpu`` -> CPU,
each only when this machine's onnxruntime offers it.

To run the default all-MiniLM-L6-v2 on ONNX Runtime without downloading anything::

    from gpuguard.embed import FastEmbedEmbedder, export_onnx

    directory = export_onnx(None, "/var/cache/gpuguard/minilm-onnx")  # once; a few seconds
    embedder = FastEmbedEmbedder(model_path=directory, device="cpu")
"""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._exceptions import ConfigError, EmbedderUnavailable
from ._bundled import DEFAULT_MODEL, resolve_model
from ._local import LocalEmbedder

if TYPE_CHECKING:
    from ._protocol import Vectors

__all__ = ["MANIFEST_NAME", "FastEmbedEmbedder", "export_onnx"]

MANIFEST_NAME = "gpuguard-onnx.json"
"""The file :func:`export_onnx` writes next to the model to describe its pooling and size."""

_PROVIDERS = {
    "cuda": "CUDAExecutionProvider",
    "mps": "CoreMLExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
_TOKENIZER_FILES = ("tokenizer.json", "special_tokens_map.json", "config.json", "vocab.txt")
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")

# fastembed keeps custom models in a process-wide registry that refuses duplicates.
_registered: set[str] = set()
_registry_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class _Manifest:
    model: str
    dimension: int
    model_file: str
    pooling: str
    normalization: bool

    @classmethod
    def read(cls, directory: Path) -> _Manifest:
        try:
            data = json.loads((directory / MANIFEST_NAME).read_text())
            return cls(**data)
        except (OSError, ValueError, TypeError) as exc:
            raise EmbedderUnavailable(
                f"{directory} is not an ONNX model made by export_onnx ({MANIFEST_NAME}: {exc})"
            ) from exc


class FastEmbedEmbedder(LocalEmbedder):
    """An ONNX Runtime model through fastembed, encoded in a worker thread.

    Either ``model_path``, a directory made by :func:`export_onnx`, or ``model``, a model of
    fastembed's catalogue already in fastembed's cache (``cache_dir``): nothing is downloaded.
    ``device`` picks the execution provider and is refused (:class:`EmbedderUnavailable`)
    when this machine's onnxruntime lacks it.
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        model_path: str | Path | None = None,
        device: str = "cpu",
        batch_size: int = 32,
        cache_dir: str | Path | None = None,
        threads: int | None = None,
    ) -> None:
        if (model is None) == (model_path is None):
            raise ConfigError("give FastEmbedEmbedder exactly one of model or model_path")
        self._path = None if model_path is None else Path(model_path).resolve()
        self._manifest = None if self._path is None else _Manifest.read(self._path)
        name = self._manifest.model if self._manifest is not None else str(model)
        super().__init__(name=name, device=device)
        self._providers = _providers_for(device)
        if batch_size < 1:
            raise ConfigError("batch_size must be >= 1")
        self._batch_size = batch_size
        self._cache_dir = None if cache_dir is None else str(cache_dir)
        self._threads = threads
        self._engine: Any = None

    def _load_sync(self) -> int:
        from fastembed import TextEmbedding

        options: dict[str, Any] = {
            "providers": self._providers,
            "threads": self._threads,
            "local_files_only": True,
        }
        if self._path is not None:
            engine = TextEmbedding(
                _register(self._path), specific_model_path=str(self._path), **options
            )
        else:
            engine = TextEmbedding(self._name, cache_dir=self._cache_dir, **options)
        self._engine = engine
        return int(engine.embedding_size)

    def _encode_sync(self, texts: list[str]) -> Vectors:
        import numpy as np

        rows = list(self._engine.embed(texts, batch_size=self._batch_size))
        return np.stack(rows).astype(np.float32, copy=False)

    def _vocab_size_sync(self) -> int:
        return int(self._tokenizer().get_vocab_size(with_added_tokens=True))

    def _decode_sync(self, ids: list[list[int]]) -> list[str]:
        texts: list[str] = self._tokenizer().decode_batch(ids, skip_special_tokens=True)
        return texts

    def _token_lengths_sync(self, texts: list[str]) -> list[int] | None:
        # fastembed's tokenizer pads; the attention mask counts the real tokens.
        encodings = self._tokenizer().encode_batch(texts)
        return [sum(encoding.attention_mask) for encoding in encodings]

    def _tokenizer(self) -> Any:
        """The ``tokenizers.Tokenizer`` fastembed encodes with."""
        return self._engine.model.tokenizer

    def _unload_sync(self) -> None:
        self._engine = None


def _providers_for(device: str) -> list[str]:
    """The onnxruntime providers for ``device`` (the CPU as the fallback for unsupported ops)."""
    if device not in _PROVIDERS:
        raise ConfigError(f"unknown device {device!r}; expected one of {', '.join(_PROVIDERS)}")
    try:
        import onnxruntime
    except ImportError as exc:
        raise EmbedderUnavailable("the fastembed engine needs onnxruntime installed") from exc
    wanted = _PROVIDERS[device]
    available = onnxruntime.get_available_providers()
    if wanted not in available:
        raise EmbedderUnavailable(
            f"device {device!r} needs onnxruntime's {wanted}, but this machine only has "
            f"{', '.join(available)}"
        )
    return [wanted] if device == "cpu" else [wanted, _PROVIDERS["cpu"]]


def _register(directory: Path) -> str:
    """Register an exported model with fastembed (once per directory) and return its name."""
    manifest = _Manifest.read(directory)
    digest = hashlib.sha256(str(directory).encode()).hexdigest()[:12]
    name = f"gpuguard-local/{directory.name}-{digest}"
    with _registry_lock:
        if name not in _registered:
            from fastembed import TextEmbedding
            from fastembed.common.model_description import ModelSource, PoolingType

            TextEmbedding.add_custom_model(
                name,
                pooling=PoolingType(manifest.pooling),
                normalization=manifest.normalization,
                sources=ModelSource(hf=name),
                dim=manifest.dimension,
                model_file=manifest.model_file,
            )
            _registered.add(name)
    return name


def export_onnx(
    model_dir: str | Path | None, out_dir: str | Path, *, name: str | None = None
) -> Path:
    """Export a sentence-transformers BERT-style model to ONNX for :class:`FastEmbedEmbedder`.

    ``model_dir`` is the model's local directory (``None``: the default all-MiniLM-L6-v2).
    Writes ``model.onnx`` (token embeddings, dynamic batch and sequence axes), the tokenizer
    files with the model's own ``max_seq_length`` as the truncation limit (so that both
    engines see the same tokens), and a manifest declaring mean pooling and normalisation,
    which is how all-MiniLM-L6-v2 pools. Needs torch, transformers and onnx; runs offline.
    Returns ``out_dir``.
    """
    source = Path(resolve_model(None).source if model_dir is None else model_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    try:
        dimension = _export_model(source, out / "model.onnx")
    except ImportError as exc:
        raise EmbedderUnavailable("export_onnx needs torch, transformers and onnx") from exc
    for file_name in _TOKENIZER_FILES:
        if (source / file_name).exists():
            shutil.copy(source / file_name, out / file_name)
    tokenizer_config = json.loads((source / "tokenizer_config.json").read_text())
    tokenizer_config["model_max_length"] = _max_seq_length(source, tokenizer_config)
    (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))
    manifest = _Manifest(
        model=name or (DEFAULT_MODEL if model_dir is None else source.name),
        dimension=dimension,
        model_file="model.onnx",
        pooling="MEAN",
        normalization=True,
    )
    (out / MANIFEST_NAME).write_text(json.dumps(asdict(manifest), indent=2))
    return out


def _export_model(source: Path, target: Path) -> int:
    """Trace the transformer to ``target`` and return its hidden size."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    class _KeywordCall(torch.nn.Module):
        # transformers 5 models take their inputs by keyword; ONNX tracing passes positions.
        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            output = self.model(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            )
            return output.last_hidden_state

    model = AutoModel.from_pretrained(str(source), local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(source), local_files_only=True)
    sample = tokenizer(["an example", "a longer example"], return_tensors="pt", padding=True)
    axes = {name: {0: "batch", 1: "sequence"} for name in (*_INPUTS, "last_hidden_state")}
    # Tracing warns about Python branches frozen into the graph; with dynamic axes and the
    # model's attention mask as an input, the exported graph still handles every shape.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _KeywordCall(model),
            tuple(sample[name] for name in _INPUTS),
            str(target),
            input_names=list(_INPUTS),
            output_names=["last_hidden_state"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )
    return int(model.config.hidden_size)


def _max_seq_length(source: Path, tokenizer_config: dict[str, Any]) -> int:
    """The sentence-transformers truncation limit, else the tokenizer's own."""
    config_file = source / "sentence_bert_config.json"
    if config_file.exists():
        return int(json.loads(config_file.read_text())["max_seq_length"])
    return int(tokenizer_config.get("model_max_length", 512))
