"""Request bodies of the OpenAI-compatible routes.

Every documented chat-completions parameter has a field here and becomes part of
:class:`~gpuguard.llm.ChatOptions`; the backend forwards it or refuses it. So do llama.cpp's
samplers (``top_k``, ``min_p``, ``repeat_penalty``, ``mirostat``...), which llama-server and
vLLM take as extra fields of the same request and clients such as Open WebUI send there. A
field that is neither documented here nor harmless metadata (:data:`IGNORED_FIELDS`) is
refused with a 400 naming it (:meth:`OpenAIRequest.refuse_unknown`), never dropped silently.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any, Literal, cast

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
    model_validator,
)

from .._exceptions import InvalidRequest, UnsupportedParameter
from ..llm import ChatMessage, ChatOptions

__all__ = [
    "IGNORED_FIELDS",
    "MAX_EMBEDDING_INPUTS",
    "ChatCompletionRequest",
    "ChatMessageIn",
    "CompletionRequest",
    "EmbeddingRequest",
    "TextPart",
]

MAX_MESSAGES = 256
MAX_EMBEDDING_INPUTS = 2048
MAX_TOKENS_PER_INPUT = 8192
MAX_EMBEDDING_TOKENS = 300_000
MAX_STOP = 4

#: Fields OpenAI clients send that change nothing about the answer: accepted, not used.
IGNORED_FIELDS = frozenset(
    {"user", "metadata", "store", "service_tier", "parallel_tool_calls", "prompt_cache_key"}
)

Stop = str | Annotated[list[str], Field(max_length=MAX_STOP)] | None


class TextPart(BaseModel):
    """One part of a multi-part message; only text is supported."""

    type: Literal["text"]
    text: str


class FunctionCall(BaseModel):
    """The function an assistant turn called (``arguments`` is a JSON string)."""

    name: str
    arguments: str = ""


class ToolCall(BaseModel):
    """A tool call of an earlier assistant turn."""

    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessageIn(BaseModel):
    """One chat turn as OpenAI clients send it."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    @model_validator(mode="after")
    def _content_unless_calling_tools(self) -> ChatMessageIn:
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError(
                "content is required (only an assistant turn with tool_calls may omit it)"
            )
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool turn needs the tool_call_id it answers")
        return self

    def to_message(self) -> ChatMessage:
        """The gateway's message type (a developer turn counts as a system turn)."""
        content = self.content or ""
        text = content if isinstance(content, str) else "".join(part.text for part in content)
        return ChatMessage(
            "system" if self.role == "developer" else self.role,
            text,
            tool_calls=tuple(call.model_dump() for call in self.tool_calls or ()),
            tool_call_id=self.tool_call_id,
        )


class StreamOptions(BaseModel):
    """``stream_options``: ``include_usage`` adds a last chunk with the usage."""

    include_usage: StrictBool = False


class JsonSchemaFormat(BaseModel):
    """``response_format.json_schema``."""

    model_config = ConfigDict(extra="allow")

    name: str
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    """``response_format``: plain text, JSON mode or a JSON schema."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class FunctionSpec(BaseModel):
    """A function the model may call."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    parameters: dict[str, Any] | None = None


class ToolSpec(BaseModel):
    """One entry of ``tools``."""

    type: Literal["function"]
    function: FunctionSpec


class NamedTool(BaseModel):
    """``tool_choice`` naming one function."""

    type: Literal["function"]
    function: dict[str, str]


class OpenAIRequest(BaseModel):
    """What every generation request shares: sampling options and the unknown-field rule."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=256)
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    stop: Stop = None
    seed: StrictInt | None = None
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    n: int = Field(default=1, ge=1, le=128)
    top_k: StrictInt | None = Field(default=None, ge=0)
    min_p: float | None = Field(default=None, ge=0.0, le=1.0)
    typical_p: float | None = Field(default=None, ge=0.0, le=1.0)
    repeat_penalty: float | None = Field(default=None, ge=0.0)
    repeat_last_n: StrictInt | None = Field(default=None, ge=-1)
    mirostat: StrictInt | None = Field(default=None, ge=0, le=2)
    mirostat_tau: float | None = Field(default=None, ge=0.0)
    mirostat_eta: float | None = Field(default=None, ge=0.0)
    n_keep: StrictInt | None = Field(default=None, ge=-1)

    def refuse_unknown(self) -> None:
        """Raise :class:`UnsupportedParameter` for a field gpuguard does not know."""
        for name in self.model_extra or {}:
            if name not in IGNORED_FIELDS:
                raise UnsupportedParameter(name, "is not a parameter gpuguard supports")

    def _sampling(self, max_tokens: int | None) -> ChatOptions:
        """The options every generation request shares, at most ``max_tokens`` tokens."""
        if self.stop is None:
            stop: tuple[str, ...] = ()
        else:
            stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)
        return ChatOptions(
            max_tokens=max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            stop=stop,
            seed=self.seed,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            n=self.n,
            top_k=self.top_k,
            min_p=self.min_p,
            typical_p=self.typical_p,
            repeat_penalty=self.repeat_penalty,
            repeat_last_n=self.repeat_last_n,
            mirostat=self.mirostat,
            mirostat_tau=self.mirostat_tau,
            mirostat_eta=self.mirostat_eta,
            n_keep=self.n_keep,
        )


class ChatCompletionRequest(OpenAIRequest):
    """``POST /v1/chat/completions``.

    ``retrieval`` (gpuguard's own, sent by the openai client through ``extra_body``) puts the
    index's best passages for the last user message into a system message first.
    """

    messages: list[ChatMessageIn] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    response_format: ResponseFormat | None = None
    tools: list[ToolSpec] | None = Field(default=None, max_length=128)
    tool_choice: Literal["none", "auto", "required"] | NamedTool | None = None
    logprobs: StrictBool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    retrieval: StrictBool = False

    @property
    def token_limit(self) -> int | None:
        """``max_completion_tokens`` (the newer name) or ``max_tokens``."""
        return self.max_completion_tokens or self.max_tokens

    def options(self, max_tokens: int | None = None) -> ChatOptions:
        """The generation options asked for (``max_tokens`` overrides the request's)."""
        response_format = None
        if self.response_format is not None and self.response_format.type != "text":
            response_format = self.response_format.model_dump(by_alias=True, exclude_none=True)
        choice = self.tool_choice
        return replace(
            self._sampling(max_tokens if max_tokens is not None else self.token_limit),
            response_format=response_format,
            tools=tuple(tool.model_dump(exclude_none=True) for tool in self.tools or ()),
            tool_choice=choice.model_dump() if isinstance(choice, NamedTool) else choice,
            logprobs=self.logprobs,
            top_logprobs=self.top_logprobs,
        )

    def chat_messages(self) -> list[ChatMessage]:
        """The conversation in the gateway's type."""
        return [m.to_message() for m in self.messages]

    def last_user_text(self) -> str:
        """The text of the last user turn ('' when there is none)."""
        users = [m.to_message().content for m in self.messages if m.role == "user"]
        return users[-1] if users else ""


class CompletionRequest(OpenAIRequest):
    """``POST /v1/completions`` (legacy): one prompt, answered through the chat route.

    ``echo``, ``suffix``, ``best_of`` > 1 and ``logprobs`` are refused (400 naming them):
    the backends generate from a chat conversation, not from raw text.
    """

    prompt: (
        Annotated[str, StringConstraints(max_length=1_000_000)]
        | Annotated[list[str], Field(min_length=1, max_length=1)]
    )
    max_tokens: int | None = Field(default=16, ge=1)
    echo: StrictBool = False
    suffix: str | None = None
    best_of: int | None = Field(default=None, ge=1, le=20)
    logprobs: int | None = Field(default=None, ge=0, le=5)

    @property
    def text(self) -> str:
        """The one prompt."""
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]

    def refuse_unknown(self) -> None:
        """Also refuse what a chat backend cannot honour: echo, suffix, best_of, logprobs."""
        super().refuse_unknown()
        asked = {
            "echo": self.echo,
            "suffix": self.suffix is not None,
            "best_of": (self.best_of or 1) > 1,
            "logprobs": self.logprobs is not None,
        }
        for name, given in asked.items():
            if given:
                raise UnsupportedParameter(name, "is not supported by gpuguard's completions")

    def options(self) -> ChatOptions:
        """The generation options asked for."""
        return self._sampling(self.max_tokens)


TokenIds = Annotated[list[StrictInt], Field(min_length=1, max_length=MAX_TOKENS_PER_INPUT)]


class EmbeddingRequest(BaseModel):
    """``POST /v1/embeddings``: a string, or 1 to 2048 strings or token arrays.

    Token arrays are read as ``[embeddings] token_arrays`` says (``cl100k_base`` ids, OpenAI's
    meaning, by default): at most 8192 per input and 300,000 per request, as OpenAI allows.
    """

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=256)
    input: (
        str
        | Annotated[list[str], Field(min_length=1, max_length=MAX_EMBEDDING_INPUTS)]
        | TokenIds
        | Annotated[list[TokenIds], Field(min_length=1, max_length=MAX_EMBEDDING_INPUTS)]
    )
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None

    @property
    def texts(self) -> list[str] | None:
        """The inputs as strings, or ``None`` when they are token arrays."""
        if isinstance(self.input, str):
            return [self.input]
        if all(isinstance(item, str) for item in self.input):
            return [str(item) for item in self.input]
        return None

    @property
    def token_ids(self) -> list[list[int]]:
        """The inputs as token arrays (a flat array is one input), at most 300,000 ids in all.

        Call it when :attr:`texts` is ``None``.
        """
        flat = not isinstance(self.input, str) and all(isinstance(t, int) for t in self.input)
        arrays = cast(list[list[int]], [self.input] if flat else self.input)
        total = sum(len(array) for array in arrays)
        if total > MAX_EMBEDDING_TOKENS:
            raise InvalidRequest(
                "input", f"has {total} token ids in all; at most {MAX_EMBEDDING_TOKENS} per request"
            )
        return arrays
