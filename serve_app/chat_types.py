"""The parts of an OpenAI chat request: messages (text and image parts, tool calls, tool results),
tools, tool choice and response format, and their translation into the provider interface
(``deployments/providers/base.py``). ``serve_app/schemas.py`` holds the request itself.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from deployments.providers.base import ChatMessage, ImagePart, ResponseFormat, Tool, ToolCall

# What an image costs before routing (OpenAI bills 85-1,105 tokens an image by size; the others alike)
IMAGE_TOKENS_ESTIMATE = 800


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ImageUrl(_Strict):
    url: Annotated[str, Field(min_length=1)]
    detail: Literal["auto", "low", "high"] | None = None


class ImagePartIn(_Strict):
    type: Literal["image_url"]
    image_url: ImageUrl


Part = Annotated[TextPart | ImagePartIn, Field(discriminator="type")]


class FunctionCall(_Strict):
    name: Annotated[str, Field(min_length=1)]
    arguments: str


class ToolCallIn(_Strict):
    id: Annotated[str, Field(min_length=1)]
    type: Literal["function"] = "function"
    function: FunctionCall


def _schema_by_role(schema: dict[str, Any]) -> None:
    """Message's JSON schema, one variant per role, stating what ``_shape`` checks: the OpenAPI
    document (and the fuzz test that reads it) then describes which messages are valid."""
    props = schema["properties"]
    string, parts, _ = props["content"]["anyOf"]
    text_part = parts["items"]["oneOf"][0]  # the TextPart reference, in the caller's ref template
    texts = {"anyOf": [string, {"type": "array", "items": text_part}]}
    tool_calls = props["tool_calls"]["anyOf"][0]

    def variant(roles: list[str], required: list[str], **fields: Any) -> dict[str, Any]:
        return {
            "type": "object",
            "additionalProperties": False,
            "properties": {"role": {"type": "string", "enum": roles}, "name": props["name"], **fields},
            "required": ["role", *required],
        }

    variants = [
        variant(["system", "developer"], ["content"], content=texts),
        variant(["user"], ["content"], content={"anyOf": [string, parts]}),
        variant(["assistant"], ["content"], content=texts, tool_calls=tool_calls, refusal=props["refusal"]),
        variant(
            ["assistant"],
            ["tool_calls"],
            content={"anyOf": [*texts["anyOf"], {"type": "null"}]},
            tool_calls={**tool_calls, "minItems": 1},
            refusal=props["refusal"],
        ),
        variant(
            ["tool"],
            ["content", "tool_call_id"],
            content=texts,
            tool_call_id={"type": "string", "minLength": 1},
        ),
    ]
    title = schema.get("title", "Message")
    schema.clear()
    schema.update({"title": title, "anyOf": variants})


class Message(_Strict):
    model_config = ConfigDict(json_schema_extra=_schema_by_role)  # merged with _Strict's

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[Part] | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None  # assistant
    tool_call_id: str | None = None  # tool
    refusal: str | None = None  # assistant turns echoed back by clients

    @model_validator(mode="after")
    def _shape(self) -> Message:
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a 'tool' message needs tool_call_id (the call it answers)")
        if self.tool_calls is not None and self.role != "assistant":  # an empty list too
            raise ValueError("only an 'assistant' message can carry tool_calls")
        if self.tool_call_id is not None and self.role != "tool":
            raise ValueError("only a 'tool' message carries tool_call_id")
        if self.refusal is not None and self.role != "assistant":
            raise ValueError("only an 'assistant' message carries refusal")
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError("content is required (it may be null only on an assistant turn with tool_calls)")
        if self.role != "user" and isinstance(self.content, list):
            if any(isinstance(p, ImagePartIn) for p in self.content):
                raise ValueError("image parts are allowed in 'user' messages only")
        return self

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content if isinstance(part, TextPart))

    def images(self) -> tuple[ImagePart, ...]:
        if not isinstance(self.content, list):
            return ()
        return tuple(
            ImagePart.from_openai(p.image_url.url) for p in self.content if isinstance(p, ImagePartIn)
        )


class FunctionSpec(_Strict):
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9_-]+$")]
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolSpec(_Strict):
    type: Literal["function"]
    function: FunctionSpec


class NamedFunction(_Strict):
    name: str


class NamedToolChoice(_Strict):
    type: Literal["function"]
    function: NamedFunction


class JsonSchemaSpec(_Strict):
    name: Annotated[str, Field(min_length=1, max_length=64)] = "response"
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormatIn(_Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaSpec | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormatIn:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("response_format of type json_schema needs a json_schema object")
        return self

    def to_provider(self) -> ResponseFormat | None:
        if self.type == "text":
            return None
        if self.type == "json_object":
            return ResponseFormat("json_object")
        spec = self.json_schema
        assert spec is not None
        return ResponseFormat("json_schema", spec.schema_ or {"type": "object"}, spec.name, spec.strict)


def provider_messages(messages: list[Message]) -> list[ChatMessage]:
    """Our messages in the provider interface; a tool result carries its function's name, found on
    the assistant turn that made the call."""
    names: dict[str, str] = {}
    out: list[ChatMessage] = []
    for m in messages:
        calls = tuple(ToolCall(c.id, c.function.name, c.function.arguments) for c in m.tool_calls or ())
        for c in calls:
            names[c.id] = c.name
        role = "system" if m.role in ("system", "developer") else m.role
        out.append(
            ChatMessage(
                role,  # type: ignore[arg-type]
                m.text(),
                images=m.images(),
                tool_calls=calls,
                tool_call_id=m.tool_call_id,
                name=names.get(m.tool_call_id or "", m.name) if m.role == "tool" else None,
            )
        )
    return out


def provider_tools(tools: list[ToolSpec] | None) -> tuple[Tool, ...]:
    return tuple(
        Tool(
            t.function.name,
            t.function.description,
            t.function.parameters or {"type": "object", "properties": {}},
        )
        for t in tools or ()
    )
