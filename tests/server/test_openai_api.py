"""The OpenAI-compatible routes, driven by the official openai client over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence

import openai
import pytest

from gpuguard.llm import ChatChunk, ChatMessage, ChatOptions
from gpuguard.testing import FakeBackend

from .conftest import EMBEDDER, MODEL, Live, LiveFactory


async def test_models_lists_the_backend_models(live: Live) -> None:
    models = await live.client.models.list()
    assert [m.id for m in models.data] == [MODEL, "other-llm", EMBEDDER]
    assert models.data[0].owned_by == "fake"


async def test_models_say_what_each_can_do_and_a_chat_with_the_embedder_is_a_400(
    live: Live,
) -> None:
    models = {m.id: m.model_extra or {} for m in (await live.client.models.list()).data}
    assert models[MODEL]["gpuguard"]["capabilities"] == ["chat"]
    assert models[EMBEDDER]["gpuguard"]["capabilities"] == ["embeddings"]
    assert (await live.client.models.retrieve(f"{EMBEDDER}:latest")).id == EMBEDDER
    for name in (EMBEDDER, f"{EMBEDDER}:latest"):
        with pytest.raises(openai.BadRequestError) as refused:
            await live.client.chat.completions.create(
                model=name, messages=[{"role": "user", "content": "hi"}]
            )
        error = refused.value.body
        assert isinstance(error, dict)
        assert error["param"] == "model"
        assert "embedding model" in error["message"]
    ollama_chat = await live.http.post(
        "/api/chat", json={"model": EMBEDDER, "messages": [{"role": "user", "content": "hi"}]}
    )
    assert ollama_chat.status_code == 400
    assert "embedding model" in ollama_chat.json()["error"]
    assert live.backend.calls == []


async def test_chat_completion_not_streamed(live: Live) -> None:
    reply = await live.client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hello there"}]
    )
    assert reply.choices[0].message.content == "echo: hello there"
    assert reply.choices[0].finish_reason == "stop"
    assert live.guard.current is None


async def test_chat_completion_streamed(live: Live) -> None:
    stream = await live.client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": [{"type": "text", "text": "one two three"}]}],
        stream=True,
        stream_options={"include_usage": True},
    )
    parts = []
    finish = []
    async for chunk in stream:
        for choice in chunk.choices:
            parts.append(choice.delta.content or "")
            finish.append(choice.finish_reason)
    assert "".join(parts) == "echo: one two three"
    assert finish[-1] == "stop"


async def test_embeddings_float_and_base64(live: Live) -> None:
    as_base64 = await live.client.embeddings.create(model=EMBEDDER, input=["a b", "c"])
    as_float = await live.client.embeddings.create(
        model=EMBEDDER, input="a b", encoding_format="float"
    )
    assert len(as_base64.data) == 2
    assert len(as_base64.data[0].embedding) == 384
    assert as_base64.data[0].embedding == as_float.data[0].embedding
    operations = [e.to_dict()["operation"] for e in live.guard.events.history(kinds={"gpu"})]
    assert "embed" in operations  # on the GPU embedder, under the lease


class RecordingBackend(FakeBackend):
    """Remembers the messages of every chat."""

    def __init__(self) -> None:
        super().__init__([MODEL])
        self.seen: list[list[ChatMessage]] = []

    def chat(
        self,
        model: str,
        messages: Sequence[ChatMessage],
        options: ChatOptions | None = None,
    ) -> AsyncGenerator[ChatChunk, None]:
        self.seen.append(list(messages))
        return super().chat(model, messages, options)


async def test_retrieval_puts_passages_in_a_system_message(make_live: LiveFactory) -> None:
    questions: list[str] = []

    async def retriever(question: str) -> list[str]:
        questions.append(question)
        return ["the orders table holds one row per order"]

    backend = RecordingBackend()
    async with make_live(backend=backend, retriever=retriever) as live:
        await live.client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "where are orders?"}],
            extra_body={"retrieval": True},
        )
    assert questions == ["where are orders?"]
    system = backend.seen[0][0]
    assert system.role == "system"
    assert "one row per order" in system.content
