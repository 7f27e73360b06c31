"""The provider interface: what the router hands an adapter and what it gets back.

Each adapter module (anthropic_adapter, openai_adapter, google_adapter) is the only module that
imports its SDK. It turns a ``ProviderRequest`` into the SDK call, the SDK's answer into a
``Completion`` or a stream of ``StreamDelta``, and the SDK's exceptions into
``serve_app.errors.ProviderError`` subclasses. SDK retries are always off: the router owns them.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True)
class ImagePart:
    """An image in a user message: a URL, or base64 ``data`` with its ``media_type``."""

    url: str | None = None
    media_type: str | None = None
    data: str | None = None

    @classmethod
    def from_openai(cls, url: str) -> ImagePart:
        """OpenAI's ``image_url.url``: an http(s) URL or a ``data:<type>;base64,<data>`` URL."""
        if url.startswith("data:") and ";base64," in url:
            head, data = url[5:].split(";base64,", 1)
            return cls(media_type=head or "image/png", data=data)
        return cls(url=url)

    def openai_url(self) -> str:
        return self.url if self.url is not None else f"data:{self.media_type};base64,{self.data}"


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as OpenAI carries it


@dataclass(frozen=True)
class ChatMessage:
    role: Role
    content: str
    images: tuple[ImagePart, ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()  # an assistant turn that called tools
    tool_call_id: str | None = None  # a tool turn: the call it answers
    name: str | None = None  # a tool turn: the function's name (Gemini's functionResponse needs it)


@dataclass(frozen=True)
class Tool:
    name: str
    description: str | None
    parameters: dict[str, Any]  # JSON Schema of the arguments


@dataclass(frozen=True)
class ResponseFormat:
    """``json_object`` (any JSON object) or ``json_schema`` (an object matching ``schema``)."""

    type: Literal["json_object", "json_schema"]
    schema: dict[str, Any] | None = None
    name: str = "response"
    strict: bool | None = None


ToolChoice = Literal["auto", "none", "required"]
ReasoningEffort = Literal["minimal", "low", "medium", "high", "xhigh"]


@dataclass(frozen=True)
class ProviderRequest:
    model: str  # the provider's own model ID
    messages: list[ChatMessage]
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] | None = None
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice | None = None
    tool_choice_function: str | None = None  # a named function the model must call
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    seed: int | None = None
    user: str | None = None
    presence_penalty: float | None = None  # OpenAI's meaning: -2 to 2, None (or 0) for none
    frequency_penalty: float | None = None
    reasoning_effort: ReasoningEffort | None = None  # only for models with the reasoning capability

    def system_text(self) -> str | None:
        parts = [m.content for m in self.messages if m.role == "system"]
        return "\n\n".join(parts) if parts else None

    def dialogue(self) -> list[ChatMessage]:
        return [m for m in self.messages if m.role != "system"]


@dataclass
class Usage:
    """Tokens of one call, as every provider bills them.

    ``input_tokens`` counts every prompt token, those read from or written to the prompt cache
    included; ``cached_tokens`` (cache reads) and ``cache_write_tokens`` are parts of it, billed at
    their own prices. ``output_tokens`` counts every generated token, the hidden reasoning
    (thinking) tokens included; ``reasoning_tokens`` is that part.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cache_write_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cached_tokens=self.cached_tokens + other.cached_tokens,
            reasoning_tokens=self.reasoning_tokens + other.reasoning_tokens,
            cache_write_tokens=self.cache_write_tokens + other.cache_write_tokens,
        )

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


FinishReason = Literal["stop", "length", "content_filter", "tool_calls"]


@dataclass
class Completion:
    text: str
    finish_reason: FinishReason
    usage: Usage
    provider_model: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    # for a call through a provider's deployment (0 for one made in the ingress): how late that
    # replica's loop ran over the last second, and how long it had spent on the call when it sent
    # this; the ingress's hedge guard reads both (serve_app/loop_lag.py: Lateness)
    replica_lag_s: float = 0.0
    replica_s: float = 0.0


@dataclass
class ToolCallDelta:
    """A piece of a streamed tool call, as OpenAI's chunks carry it: the first piece of call
    ``index`` has its id and name, the others append to its arguments."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass
class StreamDelta:
    """One step of a stream: text and/or tool-call pieces, and/or the finish reason, and/or the
    final usage."""

    text: str = ""
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    tool_calls: list[ToolCallDelta] = field(default_factory=list)
    replica_lag_s: float = 0.0  # as Completion's
    replica_s: float = 0.0


@dataclass(frozen=True)
class Endpoint:
    """Where and how an adapter reaches its provider."""

    base_url: str | None
    api_key: str
    emulated: bool
    connect_timeout_s: float = 2.0
    read_timeout_s: float = 30.0
    extra_headers: dict[str, str] = field(default_factory=dict)
    prompt_caching: bool = False  # Anthropic: mark long system prompts and tools cache_control


class ProviderAdapter(Protocol):
    provider: str

    async def complete(self, request: ProviderRequest) -> Completion: ...

    def stream(self, request: ProviderRequest) -> AsyncIterator[StreamDelta]: ...

    async def aclose(self) -> None: ...


def _finite(text: str) -> float:
    value = float(text)  # NaN, Infinity, -Infinity and 1e400 alike
    if not math.isfinite(value):
        raise ValueError(f"{text} is not a JSON number a provider takes")
    return value


def parse_arguments(text: str) -> dict[str, Any]:
    """A tool call's JSON arguments as an object (the Anthropic and Gemini APIs want objects).
    Text that is not strict JSON (NaN and infinities included: the SDKs refuse to send them) is
    kept whole as ``{"_raw": text}``."""
    try:
        value = json.loads(text or "{}", parse_float=_finite, parse_constant=_finite)
    except ValueError:  # JSONDecodeError is one
        return {"_raw": text}
    return value if isinstance(value, dict) else {"value": value}


def map_finish_reason(raw: str | None) -> FinishReason:
    """Normalise provider finish/stop reasons to OpenAI's vocabulary."""
    if raw is None:
        return "stop"
    value = raw.lower()
    if value in ("length", "max_tokens", "model_context_window_exceeded"):
        return "length"
    if value in ("content_filter", "safety", "refusal", "recitation", "blocklist", "prohibited_content"):
        return "content_filter"
    if value in ("tool_calls", "tool_use", "function_call"):
        return "tool_calls"
    return "stop"
