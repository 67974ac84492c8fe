"""Footprints measured and remembered: each model's GPU memory per engine, in the data dir.

A :class:`FootprintBook` is what the budget policy reads as its footprints (a mapping from
model to bytes, read at every decision, so a footprint learned by a load counts at once):
a configured override (``[models."NAME"] vram_mb``) first, else what a load of that model by
this engine measured. A model served by another engine beside it (the GPU embedding model)
is kept in the same book under that engine's name (:meth:`FootprintBook.assign`), so the
budget knows every model's size from one mapping. Beside each model's load, the book keeps
what one embedding batch of it was measured to add (:meth:`FootprintBook.remember_batch`, in
the file's ``batches`` section, apart from the models so that the mapping lists models
only). Measurements live in one small JSON file,
written whole to a temporary file beside it, flushed, and renamed over it (a crash leaves
the old file or the new one, never half of one), readable by its owner only (``0600``). A
file that cannot be read is logged and started afresh: footprints are an optimisation,
never a reason not to serve.

:class:`ProcessGpuMemory` is the meter: what the driver lists on a GPU for this process (and
the processes it started, such as an inference worker), read on the GPU the work runs on,
before and after a load or a batch.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Final

from ._protocol import Devices

__all__ = ["FOOTPRINTS_FILE", "FootprintBook", "ProcessGpuMemory"]

_log = logging.getLogger("gpuguard.devices")

FOOTPRINTS_FILE: Final = "footprints.json"
"""The file's name in the data dir."""

_VERSION: Final = 1


class FootprintBook(Mapping[str, int]):
    """Bytes per model for one engine: overrides, else measurements kept in ``path``.

    Args:
        path: the JSON file (created on the first measurement, with its folder).
        engine: whose measurements these are (``llama-cpp``, ``ollama``...): one model takes
            different memory under different engines.
        overrides: bytes by model, from the settings; they win over any measurement.
        predict: a model's predicted bytes before it is measured (``None``: no prediction),
            shown beside the measurement in the log.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        engine: str,
        overrides: Mapping[str, int] | None = None,
        predict: Callable[[str], int | None] | None = None,
    ) -> None:
        self.path = Path(path)
        self.engine = engine
        self.overrides = dict(overrides or {})
        self._predict = predict
        self._engines: dict[str, str] = {}
        self._measured, self._batches = self._read()

    def assign(self, model: str, engine: str) -> None:
        """Keep and read ``model``'s footprint under ``engine`` (not the book's own engine)."""
        self._engines[model] = engine

    def engine_of(self, model: str) -> str:
        """The engine whose measurements of ``model`` this book keeps."""
        return self._engines.get(model, self.engine)

    def measured(self, model: str) -> int | None:
        """What a load of ``model`` by its engine last measured (``None``: never measured)."""
        return self._measured.get(self.engine_of(model), {}).get(model)

    def predicted(self, model: str) -> int | None:
        """The prediction for ``model`` (``None`` without one, or if it cannot be made)."""
        return None if self._predict is None else self._predict(model)

    def measured_batch(self, model: str) -> int | None:
        """What one embedding batch of ``model`` was measured to add to the GPU, if known."""
        return self._batches.get(self.engine_of(model), {}).get(model)

    def batch_need(self, model: str) -> int | None:
        """The GPU memory one embedding batch of ``model`` needs, for its lease.

        A configured footprint (``vram_mb``) is the whole figure; else the model's measured
        footprint plus what its batches were measured to add. ``None`` until both are known:
        the budget then counts the model's footprint, as for any operation on it.
        """
        if model in self.overrides:
            return self.overrides[model]
        weights, batch = self.measured(model), self.measured_batch(model)
        return None if weights is None or batch is None else weights + batch

    def remember(self, model: str, used_bytes: int) -> None:
        """Keep ``used_bytes`` as ``model``'s footprint under its engine, on disk at once.

        If the file cannot be written (disk full, read-only) the footprint still counts in
        this process, the old file stays whole, and the failure is logged.
        """
        self._keep(self._measured, model, used_bytes)

    def remember_batch(self, model: str, used_bytes: int) -> None:
        """Keep ``used_bytes`` as what one embedding batch of ``model`` adds, on disk at once.

        Kept like :meth:`remember`, apart from the models' own footprints.
        """
        self._keep(self._batches, model, used_bytes)

    def _keep(self, section: dict[str, dict[str, int]], model: str, used_bytes: int) -> None:
        if used_bytes < 0:
            raise ValueError("used_bytes must be >= 0")
        section.setdefault(self.engine_of(model), {})[model] = used_bytes
        try:
            self._write()
        except OSError as exc:
            _log.warning("footprint of %r not kept in %s (%s)", model, self.path, exc)

    def __getitem__(self, model: str) -> int:
        if model in self.overrides:
            return self.overrides[model]
        measured = self.measured(model)
        if measured is None:
            raise KeyError(model)
        return measured

    def __iter__(self) -> Iterator[str]:
        assigned = {model for model in self._engines if self.measured(model) is not None}
        own = {m: None for m in self._measured.get(self.engine, {}) if m not in self._engines}
        return iter({**own, **dict.fromkeys(assigned), **dict.fromkeys(self.overrides)})

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def _read(self) -> tuple[dict[str, dict[str, int]], dict[str, dict[str, int]]]:
        """The models' footprints and the batches', by engine (both empty when unreadable)."""
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}, {}
        except (OSError, ValueError) as exc:
            _log.warning("footprints in %s cannot be read (%s): measuring afresh", self.path, exc)
            return {}, {}
        engines = raw.get("engines") if isinstance(raw, dict) else None
        if not isinstance(engines, dict):
            _log.warning(
                "footprints in %s are not in the expected form: measuring afresh", self.path
            )
            return {}, {}
        batches = raw.get("batches")  # absent from files written before batches were measured
        return _sizes(engines), _sizes(batches) if isinstance(batches, dict) else {}

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(
            {"version": _VERSION, "engines": self._measured, "batches": self._batches},
            indent=1,
            sort_keys=True,
        )
        fd, temporary = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            os.fchmod(fd, 0o600)  # mkstemp makes it 0600 already; say so, whatever the umask
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def __repr__(self) -> str:
        return f"<FootprintBook {self.engine!r} {str(self.path)!r} models={len(self)}>"


def _sizes(engines: dict[object, object]) -> dict[str, dict[str, int]]:
    """The well-formed ``{engine: {model: bytes}}`` entries of one section of the file."""
    return {
        str(engine): {
            str(model): size
            for model, size in models.items()
            if isinstance(size, int) and not isinstance(size, bool) and size >= 0
        }
        for engine, models in engines.items()
        if isinstance(models, dict)
    }


class ProcessGpuMemory:
    """Bytes the driver lists on a GPU for this process and its children.

    Called with a GPU's index it reads that GPU, without one GPU ``index``; calling it may
    raise :class:`~gpuguard.DevicesUnavailable`.
    """

    def __init__(self, devices: Devices, index: int = 0, *, pid: int | None = None) -> None:
        self._devices = devices
        self._index = index
        self._pid = os.getpid() if pid is None else pid

    def __call__(self, index: int | None = None) -> int:
        """What this process tree uses on GPU ``index`` (default: its own GPU) now."""
        gpu = self._index if index is None else index
        return self._devices.info(gpu).used_by(_tree(self._pid))

    def __repr__(self) -> str:
        return f"<ProcessGpuMemory gpu={self._index} pid={self._pid}>"


def _tree(root: int) -> set[int]:
    """``root`` and its descendants (as ``/proc`` lists them; only ``root`` without it)."""
    found, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        children: set[int] = set()
        for listing in Path(f"/proc/{pid}/task").glob("*/children"):  # each thread's children
            try:
                children.update(int(child) for child in listing.read_text("ascii").split())
            except OSError:
                continue  # the thread or process has just ended
        children -= found
        found |= children
        frontier.extend(children)
    return found
