"""How emulated models use tools and answer in JSON, deterministically.

- A request with tools whose last turn is not a tool result calls tools: the named one
  (``tool_choice`` naming a function), else the first; with ``auto``, parallel calls allowed and two
  or more tools, the first two at once. Arguments are sampled from each tool's JSON Schema.
- A request whose last turn is a tool result answers in text (unless a call is required).
- Structured output: an object sampled from the requested schema (``{"answer": ...}`` for a bare
  JSON object), sent as the answer's text.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class EmuToolCall:
    id: str
    name: str
    arguments: dict[str, Any]

    @property
    def arguments_json(self) -> str:
        return json.dumps(self.arguments, separators=(",", ":"))


@dataclass
class ToolRequest:
    """What a parsed request asks of tools and output format, in any of the three protocols."""

    tools: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (name, JSON Schema)
    choice: str | None = None  # auto, none, required; None means auto
    named: str | None = None  # a function the model must call
    parallel: bool = True
    after_tool_result: bool = False  # the last turn carries tool results
    json_schema: dict[str, Any] | None = None
    json_object: bool = False
    images: int = 0


def sample(schema: Any, depth: int = 0) -> Any:
    """A value that satisfies a (simple) JSON Schema: enums, consts, objects, arrays, scalars."""
    if not isinstance(schema, dict) or depth > 6:
        return "example"
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return sample(schema[key][0], depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or (kind is None and "properties" in schema):
        props = schema.get("properties") or {}
        return {name: sample(sub, depth + 1) for name, sub in props.items()}
    if kind == "array":
        return [sample(schema.get("items", {}), depth + 1)]
    if kind == "integer":
        return int(schema.get("minimum", 1))
    if kind == "number":
        return float(schema.get("minimum", 1.5))
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return "example"


def plan_calls(req: ToolRequest, model: str, prompt_text: str) -> list[EmuToolCall]:
    if not req.tools or req.choice == "none":
        return []
    forced = req.choice == "required" or req.named is not None
    if req.after_tool_result and not forced:
        return []
    by_name = dict(req.tools)
    if req.named is not None:
        names = [req.named] if req.named in by_name else []
    elif req.choice in (None, "auto") and req.parallel and len(req.tools) >= 2:
        names = [req.tools[0][0], req.tools[1][0]]
    else:
        names = [req.tools[0][0]]
    calls = []
    for i, name in enumerate(names):
        digest = hashlib.blake2b(f"{model}\x00{prompt_text}\x00{i}".encode(), digest_size=8).hexdigest()
        calls.append(EmuToolCall(f"call_{digest}", name, sample(by_name[name])))
    return calls


def json_answer(req: ToolRequest) -> str | None:
    """The answer's text for structured output, or None for free text."""
    if req.json_schema is not None:
        return json.dumps(sample(req.json_schema), separators=(",", ":"))
    if req.json_object:
        return json.dumps({"answer": "example"}, separators=(",", ":"))
    return None


def pieces(text: str, size: int = 8) -> list[str]:
    """Text in stream-sized pieces."""
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]
