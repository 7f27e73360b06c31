"""The OpenAI chat completions request as the ingress accepts it, and the response bodies it writes.

Validation errors become 400s in OpenAI's envelope whose message names the field
(``messages.0.role: ...``). Parameters the router cannot honour yet are refused with a clear 400
rather than dropped silently.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from deployments.providers.base import ChatMessage, ProviderRequest, Usage
from serve_app.errors import InvalidRequestError, UnsupportedParameterError


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class FusionOptions(BaseModel):
    """Router options a client may send in the body's ``fusion`` field (extra_body in the SDKs)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    allow_continuation: bool = True  # a stream broken after tokens were sent goes on on another model
    max_latency_ms: float | None = Field(
        default=None, gt=0, description="models whose rolling p95 latency is higher are tried last"
    )


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    include_usage: bool = False


# Accepted by OpenAI, not honoured by the router yet: a request that sets them is refused (400).
_UNSUPPORTED = (
    "tools",
    "tool_choice",
    "functions",
    "function_call",
    "logprobs",
    "top_logprobs",
    "audio",
    "modalities",
    "prediction",
    "logit_bias",
    "parallel_tool_calls",
    "response_format",
)
# Accepted and passed over without effect on any provider (documented in the README).
_IGNORED = (
    "seed",
    "user",
    "metadata",
    "store",
    "service_tier",
    "presence_penalty",
    "frequency_penalty",
    "reasoning_effort",
)


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    model: Annotated[str, Field(min_length=1, max_length=256)]
    messages: Annotated[list[Message], Field(min_length=1)]
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: Annotated[int | None, Field(ge=1, le=1_000_000)] = None
    max_completion_tokens: Annotated[int | None, Field(ge=1, le=1_000_000)] = None
    temperature: Annotated[float | None, Field(ge=0, le=2)] = None
    top_p: Annotated[float | None, Field(ge=0, le=1)] = None
    stop: str | Annotated[list[str], Field(max_length=4)] | None = None
    n: Annotated[int, Field(ge=1, le=1)] = 1
    fusion: FusionOptions | None = None

    @field_validator("messages")
    @classmethod
    def _has_user_turn(cls, messages: list[Message]) -> list[Message]:
        if not any(m.role == "user" for m in messages):
            raise ValueError("at least one message must have role 'user'")
        return messages

    @model_validator(mode="after")
    def _refuse_unsupported(self) -> ChatCompletionRequest:
        extra = self.model_extra or {}
        for key in _UNSUPPORTED:
            value = extra.get(key)
            if value is None or (key == "response_format" and _is_text_format(value)):
                continue
            raise UnsupportedParameterError(f"'{key}' is not supported by Fusion Router yet", param=key)
        unknown = sorted(k for k in extra if k not in _UNSUPPORTED and k not in _IGNORED)
        if unknown:
            raise InvalidRequestError(
                f"Unrecognized request argument supplied: {', '.join(unknown)}", param=unknown[0]
            )
        return self

    def to_provider_request(self, provider_model: str) -> ProviderRequest:
        stop = [self.stop] if isinstance(self.stop, str) else self.stop
        return ProviderRequest(
            model=provider_model,
            messages=[
                ChatMessage("system" if m.role in ("system", "developer") else m.role, m.text())  # type: ignore[arg-type]
                for m in self.messages
            ],
            max_tokens=self.max_completion_tokens or self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            stop=stop or None,
        )

    def estimated_tokens(self) -> int:
        """Prompt plus requested output, estimated before routing (4 characters a token)."""
        prompt = sum(len(m.text()) for m in self.messages) // 4 + 4 * len(self.messages)
        return prompt + (self.max_completion_tokens or self.max_tokens or 0)

    def prompt_tokens_upper(self) -> int:
        """A cautious prompt size for budget reservations: 3 bytes a token (English text averages
        about 4 characters a token in the vendors' tokenizers, code about 3), 4 tokens a message."""
        return sum(len(m.text().encode()) for m in self.messages) // 3 + 4 * len(self.messages) + 8

    def output_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def continued(self, sent_text: str, instruction: str) -> ChatCompletionRequest:
        """This conversation with the partial answer as an assistant turn and a request to go on."""
        messages = [
            *self.messages,
            Message(role="assistant", content=sent_text),
            Message(role="user", content=instruction),
        ]
        return self.model_copy(update={"messages": messages})

    def routing_text(self) -> str:
        """What the classifier reads: the last user turn (the one the answer is for)."""
        for m in reversed(self.messages):
            if m.role == "user":
                return m.text()
        return ""


def _is_text_format(value: Any) -> bool:
    return isinstance(value, dict) and value.get("type") == "text"


def parse_request(payload: Any) -> ChatCompletionRequest:
    """Validate a decoded JSON body; every problem becomes an InvalidRequestError naming the field."""
    if not isinstance(payload, dict):
        raise InvalidRequestError("The request body must be a JSON object.")
    try:
        return ChatCompletionRequest.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        ctx_error = (first.get("ctx") or {}).get("error")
        if isinstance(ctx_error, InvalidRequestError):
            raise ctx_error from None
        where = ".".join(str(p) for p in first["loc"])
        more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
        raise InvalidRequestError(f"{where}: {first['msg']}{more}", param=where or None) from None


def usage_body(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def completion_body(
    request_id: str, model: str, text: str, finish_reason: str, usage: Usage, fusion: dict[str, Any]
) -> dict[str, Any]:
    return {
        "id": request_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason}
        ],
        "usage": usage_body(usage),
        "fusion": fusion,
    }


def chunk_body(
    request_id: str, model: str, created: int, delta: dict[str, Any], finish_reason: str | None = None
) -> dict[str, Any]:
    return {
        "id": request_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }
