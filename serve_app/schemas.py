"""The OpenAI chat completions request as the ingress accepts it, and the response bodies it writes.

Validation errors become 400s in OpenAI's envelope whose message names the field
(``messages.0.role: ...``). Parameters the router cannot honour yet are refused with a clear 400
rather than dropped silently.
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any, Literal, cast

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from deployments.providers.base import ProviderRequest, ReasoningEffort, ToolCall, Usage
from serve_app.chat_types import (
    IMAGE_TOKENS_ESTIMATE,
    Message,
    NamedToolChoice,
    ResponseFormatIn,
    ToolSpec,
    provider_messages,
    provider_tools,
)
from serve_app.errors import InvalidRequestError, UnsupportedParameterError


class FusionOptions(BaseModel):
    """Router options a client may send in the body's ``fusion`` field (extra_body in the SDKs)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    allow_continuation: bool = True  # a stream broken after tokens were sent goes on on another model
    max_latency_ms: float | None = Field(
        default=None, gt=0, description="models whose rolling p95 latency is higher are tried last"
    )
    quality_target: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="with model auto: route to the cheapest model predicted to meet this quality, as "
        "model auto:<target> does",
    )
    max_cost_usd: float | None = Field(
        default=None,
        gt=0,
        le=1_000_000,
        description="no model whose worst case for this request (its prompt, and max_tokens of output) "
        "costs more is called; the header x-fusion-max-cost-usd says the same",
    )


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    include_usage: bool = False


def _asks_nothing(key: str, value: Any) -> bool:
    """An unsupported parameter at a value that asks for nothing (what many clients send by
    default): absent or null, false, empty, ``top_logprobs: 0``, ``modalities: ["text"]``."""
    if value is None or value is False or value == [] or value == {}:
        return True
    return (key == "top_logprobs" and value == 0) or (key == "modalities" and value == ["text"])


def _document_extras(schema: dict[str, Any]) -> None:
    """The request's schema names the parameters accepted without effect and the unsupported ones
    at the values that ask nothing; any other property is refused."""
    properties = schema.setdefault("properties", {})
    for name in IGNORED_PARAMS:
        properties[name] = {"description": "accepted without effect"}
    nothing: list[dict[str, Any]] = [
        {"type": "null"},
        {"const": False},
        {"type": "array", "maxItems": 0},
        {"type": "object", "maxProperties": 0},
    ]
    for name in _UNSUPPORTED:
        values = list(nothing)
        if name == "top_logprobs":
            values.append({"const": 0})
        if name == "modalities":
            values.append({"const": ["text"]})
        properties[name] = {
            "description": "not supported yet: only a value that asks nothing",
            "anyOf": values,
        }
    schema["additionalProperties"] = False


# Accepted by OpenAI, not honoured by the router yet: a request that sets them is refused (400).
_UNSUPPORTED = (
    "functions",  # deprecated by OpenAI for tools
    "function_call",
    "logprobs",
    "top_logprobs",
    "audio",
    "modalities",
    "prediction",
    "logit_bias",
)
# Accepted and passed over without effect on any provider (documented in the README).
IGNORED_PARAMS = (
    "metadata",
    "store",
    "service_tier",
)
# Optional parameters some providers cannot honour: a request that sets one goes only to providers
# that can (``ProviderConfig.honours``), or that are configured to drop it. A penalty of 0 is none.
OPTIONAL_PARAMS = ("seed", "user", "presence_penalty", "frequency_penalty")


class ChatCompletionRequest(BaseModel):
    # extra="allow" so that OpenAI parameters the router does not take yet get their own 400 message;
    # any other argument is refused too (_refuse_unsupported), as the schema says
    model_config = ConfigDict(extra="allow", strict=True, json_schema_extra=_document_extras)

    model: Annotated[str, Field(min_length=1, max_length=256)]
    messages: Annotated[
        list[Message],
        Field(
            min_length=1,
            json_schema_extra={
                "contains": {
                    "type": "object",
                    "properties": {"role": {"const": "user"}},
                    "required": ["role"],
                }
            },
        ),
    ]
    stream: Annotated[bool, Field(json_schema_extra={"type": ["boolean", "null"]})] = False
    stream_options: StreamOptions | None = None
    max_tokens: Annotated[int | None, Field(ge=1, le=1_000_000)] = None
    max_completion_tokens: Annotated[int | None, Field(ge=1, le=1_000_000)] = None
    temperature: Annotated[float | None, Field(ge=0, le=2)] = None
    top_p: Annotated[float | None, Field(ge=0, le=1)] = None
    stop: str | Annotated[list[str], Field(max_length=4)] | None = None
    n: Annotated[int, Field(ge=1, le=1, json_schema_extra={"type": ["integer", "null"]})] = 1
    tools: Annotated[list[ToolSpec], Field(max_length=128)] | None = None
    tool_choice: Literal["auto", "none", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormatIn | None = None
    seed: int | None = None
    user: Annotated[str, Field(max_length=256)] | None = None
    presence_penalty: Annotated[float | None, Field(ge=-2, le=2)] = None
    frequency_penalty: Annotated[float | None, Field(ge=-2, le=2)] = None
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    fusion: FusionOptions | None = None

    @field_validator("presence_penalty", "frequency_penalty")
    @classmethod
    def _zero_is_no_penalty(cls, value: float | None) -> float | None:
        # 0 is their default (many clients send it): it asks nothing of a provider, nor of the cache key
        return value or None

    @field_validator("messages")
    @classmethod
    def _has_user_turn(cls, messages: list[Message]) -> list[Message]:
        if not any(m.role == "user" for m in messages):
            raise ValueError("at least one message must have role 'user'")
        return messages

    @field_validator("messages")
    @classmethod
    def _results_answer_calls(cls, messages: list[Message]) -> list[Message]:
        called: set[str] = set()
        for i, m in enumerate(messages):  # every provider refuses a result for a call never made
            called.update(c.id for c in m.tool_calls or ())
            if m.role == "tool" and m.tool_call_id not in called:
                raise ValueError(
                    f"message {i} answers tool_call_id '{m.tool_call_id}', which no earlier "
                    "assistant message's tool_calls made"
                )
        return messages

    @field_validator("reasoning_effort")
    @classmethod
    def _none_effort_asks_nothing(cls, value: str | None) -> str | None:
        return None if value == "none" else value  # no reasoning asked: as if absent

    def effort(self) -> ReasoningEffort | None:
        """The reasoning asked for, typed as the providers take it (the validator above has taken
        "none" as absent)."""
        return cast("ReasoningEffort | None", self.reasoning_effort)

    @field_validator("stream", "n", mode="before")
    @classmethod
    def _null_is_the_default(cls, value: Any, info: ValidationInfo) -> Any:
        # OpenAI takes null for these (clients that pass every argument send it): their default
        if value is None and info.field_name is not None:
            return cls.model_fields[info.field_name].default
        return value

    @model_validator(mode="after")
    def _refuse_unsupported(self) -> ChatCompletionRequest:
        extra = self.model_extra or {}
        for key in _UNSUPPORTED:
            if not _asks_nothing(key, extra.get(key)):
                raise UnsupportedParameterError(f"'{key}' is not supported by Fusion Router yet", param=key)
            extra.pop(key, None)  # asked nothing: as if absent (the cache key, the hops)
        names = [t.function.name for t in self.tools or ()]
        if self.tool_choice is not None and not names and self.tool_choice != "none":
            raise InvalidRequestError("tool_choice is set but no tools are given.", param="tool_choice")
        if isinstance(self.tool_choice, NamedToolChoice) and self.tool_choice.function.name not in names:
            raise InvalidRequestError(
                f"tool_choice names '{self.tool_choice.function.name}', which is not among the tools.",
                param="tool_choice",
            )
        if len(set(names)) != len(names):
            raise InvalidRequestError("Tool names must be unique.", param="tools")
        unknown = sorted(k for k in extra if k not in _UNSUPPORTED and k not in IGNORED_PARAMS)
        if unknown:
            raise InvalidRequestError(
                f"Unrecognized request argument supplied: {', '.join(unknown)}", param=unknown[0]
            )
        return self

    def to_provider_request(self, provider_model: str, drop: frozenset[str] = frozenset()) -> ProviderRequest:
        """The request for one provider; ``drop``: parameters that provider is configured to drop."""
        stop = [self.stop] if isinstance(self.stop, str) else self.stop
        choice = self.tool_choice
        return ProviderRequest(
            model=provider_model,
            messages=provider_messages(self.messages),
            max_tokens=self.max_completion_tokens or self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            stop=stop or None,
            tools=provider_tools(self.tools),
            tool_choice=choice if isinstance(choice, str) else ("required" if choice is not None else None),
            tool_choice_function=choice.function.name if isinstance(choice, NamedToolChoice) else None,
            parallel_tool_calls=self.parallel_tool_calls,
            response_format=self.response_format.to_provider() if self.response_format else None,
            seed=None if "seed" in drop else self.seed,
            user=None if "user" in drop else self.user,
            presence_penalty=None if "presence_penalty" in drop else self.presence_penalty,
            frequency_penalty=None if "frequency_penalty" in drop else self.frequency_penalty,
            reasoning_effort=None if "reasoning_effort" in drop else self.effort(),
        )

    def needs(self) -> set[str]:
        """The capabilities a model must have to serve this request (``ModelCapabilities``)."""
        out: set[str] = set()
        if self.tools or any(m.role == "tool" or m.tool_calls for m in self.messages):
            out.add("tools")  # a conversation with tool turns needs a model that reads them
        fmt = self.response_format.type if self.response_format else "text"
        if fmt != "text":
            out.add(fmt)
        images = [img for m in self.messages for img in m.images()]
        if images:
            out.add("vision")
        if any(img.url is not None for img in images):
            out.add("image_urls")
        return out

    def parameters_set(self) -> set[str]:
        """Optional parameters a provider may be unable to honour (``ProviderConfig.drop_params``)."""
        return {name for name in OPTIONAL_PARAMS if getattr(self, name) is not None}

    def estimated_tokens(self) -> int:
        """Prompt plus requested output, estimated before routing (4 characters a token)."""
        prompt = sum(len(m.text()) for m in self.messages) // 4 + 4 * len(self.messages)
        prompt += IMAGE_TOKENS_ESTIMATE * sum(len(m.images()) for m in self.messages)
        prompt += sum(len(json.dumps(t.function.model_dump())) for t in self.tools or ()) // 4
        return prompt + (self.max_completion_tokens or self.max_tokens or 0)

    def prompt_tokens_upper(self) -> int:
        """A cautious prompt size for budget reservations: 3 bytes a token (English text averages
        about 4 characters a token in the vendors' tokenizers, code about 3), 4 tokens a message."""
        text = sum(len(m.text().encode()) for m in self.messages)
        text += sum(len(json.dumps(t.function.model_dump())) for t in self.tools or ())
        images = IMAGE_TOKENS_ESTIMATE * 2 * sum(len(m.images()) for m in self.messages)
        return text // 3 + 4 * len(self.messages) + 8 + images

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


def tool_call_body(call: ToolCall) -> dict[str, Any]:
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}


def completion_body(
    request_id: str,
    model: str,
    text: str,
    finish_reason: str,
    usage: Usage,
    fusion: dict[str, Any],
    tool_calls: list[ToolCall] | None = None,
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text if text or not tool_calls else None}
    if tool_calls:
        message["tool_calls"] = [tool_call_body(c) for c in tool_calls]
    return {
        "id": request_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
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
