"""LM Studio, through its REST API v1 for models and ``/v1`` for chat and embeddings."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._exceptions import ModelLoadFailed
from ._protocol import BackendHealth, LoadedModel
from .openai_compat import OpenAICompatBackend

__all__ = ["LmStudioBackend"]


class LmStudioBackend(OpenAICompatBackend):
    """LM Studio through its REST API v1 (``/api/v1/models``, ``/load``, ``/unload``).

    A repeated load makes a second instance of the same model, so :meth:`load` checks
    ``loaded_instances`` first; :meth:`unload` unloads every instance by ``instance_id``.
    Chat and embeddings use the OpenAI-compatible ``/v1`` routes. :meth:`abort` closes the
    requests in flight, then unloads the model (LM Studio has no cancel API).
    """

    kind = "lmstudio"

    async def _models(self) -> dict[str, Mapping[str, Any]]:
        models = await self.http.listing("/api/v1/models", "models", operation="list")
        return {str(entry["key"]): entry for entry in models}

    async def _model(self, model: str) -> Mapping[str, Any]:
        models = await self._models()
        if model not in models:
            raise self._not_found(model, sorted(models))
        return models[model]

    async def health(self) -> BackendHealth:
        """``GET /api/v1/models`` with the short health timeout."""
        return await self.http.probe("/api/v1/models")

    async def list_models(self) -> list[str]:
        """Every downloaded model's key."""
        return sorted(await self._models())

    async def loaded_models(self) -> list[LoadedModel]:
        """Models with at least one loaded instance."""
        return [
            LoadedModel(
                id=key,
                details={
                    "instance_ids": [i["id"] for i in entry["loaded_instances"]],
                    "size_bytes": entry.get("size_bytes"),
                },
            )
            for key, entry in sorted((await self._models()).items())
            if entry.get("loaded_instances")
        ]

    async def load(self, model: str) -> None:
        """Load one instance, unless one is loaded already."""
        if (await self._model(model)).get("loaded_instances"):
            return
        answer = await self.http.json(
            "POST",
            "/api/v1/models/load",
            operation="load",
            timeout=self._timeouts.load_s,
            model=model,
            json_body={"model": model},
        )
        if not isinstance(answer, Mapping) or answer.get("status") != "loaded":
            raise self.http.errors.fault(
                ModelLoadFailed, f"load of {model!r} answered {answer!r:.200}", model=model
            )

    async def unload(self, model: str) -> None:
        """Unload every loaded instance of ``model``."""
        for instance in (await self._model(model)).get("loaded_instances") or []:
            await self.http.request(
                "POST",
                "/api/v1/models/unload",
                operation="unload",
                timeout=self._timeouts.unload_s,
                model=model,
                json_body={"instance_id": instance["id"]},
            )

    async def _stop_work(self, model: str) -> None:
        """LM Studio has no cancel: unload every instance of ``model``."""
        await self.unload(model)
