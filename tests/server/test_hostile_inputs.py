"""Inputs no client should send still get a 2xx or a 4xx with a clear JSON body, never a 5xx."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import EMBEDDER, MODEL, Live

LONE = "a\ud800b"


def raw_json(document: Any) -> bytes:
    """JSON as an ASCII-escaping client sends it: a lone surrogate becomes ``\\ud800``."""
    return json.dumps(document).encode("ascii")


async def post_raw(live: Live, path: str, document: Any) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    return await live.http.post(path, content=raw_json(document), headers=headers)


async def test_lone_surrogate_in_a_non_streamed_chat_is_answered(live: Live) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": LONE}]}
    response = await post_raw(live, "/v1/chat/completions", body)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "echo: a\ufffdb"


async def test_lone_surrogate_in_a_streamed_chat_is_answered(live: Live) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": LONE}], "stream": True}
    response = await post_raw(live, "/v1/chat/completions", body)
    assert response.status_code == 200
    assert "a\ufffdb" in "".join(
        json.loads(line[6:])["choices"][0]["delta"].get("content", "")
        for line in response.text.splitlines()
        if line.startswith("data: {")
    )


@pytest.mark.parametrize(
    ("path", "document", "status"),
    [
        (
            "/v1/chat/completions",
            {"model": LONE, "messages": [{"role": "user", "content": "x"}]},
            404,
        ),
        ("/v1/chat/completions", {"model": MODEL, "messages": [], LONE: 1}, 400),
        ("/v1/embeddings", {"model": EMBEDDER, "input": [LONE, "\udfff"]}, 200),
        ("/v1/embeddings", {"model": LONE, "input": "x"}, 404),
        ("/admin/models/load", {"model": "\udc80"}, 404),
        ("/admin/models/prewarm", {"model": "\udc80", "make_current": True}, 404),
    ],
)
async def test_lone_surrogates_anywhere_never_give_a_5xx(
    live: Live, path: str, document: Any, status: int
) -> None:
    response = await post_raw(live, path, document)
    assert response.status_code == status, response.text
    assert "\ud800" not in response.text
    json.loads(response.content.decode("utf-8"))  # valid UTF-8 JSON


async def test_surrogate_pairs_are_kept(live: Live) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "smile \U0001f600"}]}
    response = await post_raw(live, "/v1/chat/completions", body)
    assert response.json()["choices"][0]["message"]["content"] == "echo: smile \U0001f600"


@dataclass
class ListedJob:
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"id": "j1", "kind": "rag-indexing", "status": "failed", "detail": self.detail}


@dataclass
class OneJob:
    """A job runner that lists one job whose detail names a file that is not UTF-8."""

    jobs: list[ListedJob] = field(default_factory=list)

    async def start_schema_refresh(
        self, database_url: str, *, schemas: Sequence[str] | None = None, caller: str = ""
    ) -> ListedJob:
        raise NotImplementedError

    async def start_rag(self, path: Path, *, caller: str = "") -> ListedJob:
        raise NotImplementedError

    def list(self) -> Sequence[ListedJob]:
        return self.jobs

    def get(self, job_id: str) -> ListedJob:
        return self.jobs[0]

    async def cancel(self, job_id: str) -> ListedJob:
        return self.jobs[0]


async def test_a_file_name_that_is_not_utf8_can_be_listed(live: Live) -> None:
    name = os.fsdecode(b"/docs/caf\xe9.txt")
    live.app_context().jobs = OneJob([ListedJob(f"cannot read {name}")])
    response = await live.http.get("/admin/jobs")
    assert response.status_code == 200
    assert response.json()["jobs"][0]["detail"] == f"cannot read {name}"


async def test_a_failed_prewarm_never_becomes_the_current_model(live: Live) -> None:
    response = await live.http.post(
        "/admin/models/prewarm", json={"model": "nope", "make_current": True}
    )
    assert response.status_code == 404
    assert live.gateway.model == MODEL
    assert (await live.http.get("/admin/status")).json()["model"] == MODEL

    switched = await live.http.post(
        "/admin/models/prewarm", json={"model": "other-llm", "make_current": True}
    )
    assert switched.status_code == 200
    assert switched.json() == {"model": "other-llm", "status": "ready"}
    assert live.gateway.model == "other-llm"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/admin/models/prewarm", {"make_current": 0}),
        ("/admin/models/prewarm", {"model": MODEL, "make_current": "yes"}),
        ("/admin/models/load", {"model": 5}),
    ],
)
async def test_admin_bodies_take_json_types_as_described(
    live: Live, path: str, body: dict[str, Any]
) -> None:
    response = await live.http.post(path, json=body)
    assert response.status_code == 400, response.text
    assert live.gateway.model == MODEL


async def test_the_description_lists_the_statuses_the_server_answers(live: Live) -> None:
    description = (await live.http.get("/openapi.json")).json()
    load = description["paths"]["/admin/models/load"]["post"]["responses"]
    assert "422" not in load
    assert {"200", "400", "404", "503"} <= set(load)
    assert load["404"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorResponse"
    }
    assert "404" in description["paths"]["/admin/jobs/{job_id}"]["get"]["responses"]
    assert "HTTPValidationError" not in description["components"]["schemas"]
