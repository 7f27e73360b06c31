"""Tools, images and structured output on the three wire protocols: reading them from a request
(with the checks the real APIs make) and writing tool calls, whole and streamed."""

from __future__ import annotations

import itertools
import json
from typing import Any

from serve_app.emulator.tools import EmuToolCall, ToolRequest, pieces


class WireError(Exception):
    """The request's tools, tool turns or format are not valid for this protocol (a 400)."""


def _get(d: dict[str, Any], *names: str) -> Any:
    """The first of ``names`` present: the Gemini SDK writes camelCase, raw callers snake_case."""
    for name in names:
        if name in d:
            return d[name]
    return None


# -- OpenAI ---------------------------------------------------------------------------------------


def openai_request(body: dict[str, Any]) -> ToolRequest:
    req = ToolRequest()
    for tool in body.get("tools") or []:
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise WireError("tools: each tool needs type 'function' and function.name")
        req.tools.append((fn["name"], fn.get("parameters") or {"type": "object"}))
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        req.named = (choice.get("function") or {}).get("name")
    elif isinstance(choice, str):
        req.choice = choice
    if choice is not None and not req.tools and choice != "none":
        raise WireError("'tool_choice' is only allowed when 'tools' are specified")
    req.parallel = body.get("parallel_tool_calls") is not False
    called: set[str] = set()
    messages = body.get("messages") or []
    for m in messages:
        if not isinstance(m, dict):
            continue
        for call in m.get("tool_calls") or []:
            called.add(call.get("id"))
        if m.get("role") == "tool" and m.get("tool_call_id") not in called:
            raise WireError(
                "messages with role 'tool' must be a response to a preceding 'tool_calls' message"
            )
        content = m.get("content")
        if isinstance(content, list):
            req.images += sum(
                1 for part in content if isinstance(part, dict) and part.get("type") == "image_url"
            )
    req.after_tool_result = (
        bool(messages) and isinstance(messages[-1], dict) and messages[-1].get("role") == "tool"
    )
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        req.json_schema = (fmt.get("json_schema") or {}).get("schema") or {"type": "object"}
    req.json_object = fmt.get("type") == "json_object"
    return req


def openai_message_calls(calls: list[EmuToolCall]) -> list[dict[str, Any]]:
    return [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments_json}}
        for c in calls
    ]


def openai_stream_deltas(calls: list[EmuToolCall]) -> list[dict[str, Any]]:
    """Chunk deltas: each call's id and name first, then its arguments in pieces."""
    out: list[dict[str, Any]] = []
    for i, c in enumerate(calls):
        out.append(
            {
                "tool_calls": [
                    {
                        "index": i,
                        "id": c.id,
                        "type": "function",
                        "function": {"name": c.name, "arguments": ""},
                    }
                ]
            }
        )
        out += [
            {"tool_calls": [{"index": i, "function": {"arguments": p}}]} for p in pieces(c.arguments_json)
        ]
    return out


# -- Anthropic ------------------------------------------------------------------------------------


def anthropic_request(body: dict[str, Any]) -> ToolRequest:
    req = ToolRequest()
    for tool in body.get("tools") or []:
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str) or "input_schema" not in tool:
            raise WireError("tools: each tool needs name and input_schema")
        req.tools.append((tool["name"], tool["input_schema"]))
    choice = body.get("tool_choice") or {}
    kind = choice.get("type")
    req.choice = (
        {"auto": "auto", "any": "required", "none": "none"}.get(str(kind)) if kind != "tool" else None
    )
    req.named = choice.get("name") if kind == "tool" else None
    req.parallel = not choice.get("disable_parallel_tool_use", False)
    if choice and not req.tools:
        raise WireError("tool_choice may only be specified while providing tools")
    used: set[str] = set()
    messages = body.get("messages") or []
    roles = [m.get("role") for m in messages if isinstance(m, dict)]
    if any(a == b for a, b in itertools.pairwise(roles)):
        raise WireError("messages: roles must alternate between 'user' and 'assistant'")
    last_results = False
    for m in messages:
        blocks = m.get("content") if isinstance(m.get("content"), list) else []
        results = [b for b in blocks if isinstance(b, dict) and b.get("type") == "tool_result"]
        for b in blocks:
            if isinstance(b, dict) and b.get("type") == "tool_use":
                used.add(str(b.get("id")))
            if isinstance(b, dict) and b.get("type") == "image":
                req.images += 1
        for r in results:
            if r.get("tool_use_id") not in used:
                raise WireError("tool_result block(s) provided for an unknown tool_use id")
        last_results = bool(results) and m.get("role") == "user"
    req.after_tool_result = last_results
    return req


def anthropic_content(calls: list[EmuToolCall]) -> list[dict[str, Any]]:
    return [
        {"type": "tool_use", "id": "toolu_" + c.id[5:], "name": c.name, "input": c.arguments} for c in calls
    ]


def anthropic_stream_frames(calls: list[EmuToolCall], first_index: int) -> list[tuple[str, dict[str, Any]]]:
    """(event, data) frames: each call's block start, its input in pieces, its block stop."""
    frames: list[tuple[str, dict[str, Any]]] = []
    for k, c in enumerate(calls):
        i = first_index + k
        start = {"type": "tool_use", "id": "toolu_" + c.id[5:], "name": c.name, "input": {}}
        frames.append(
            ("content_block_start", {"type": "content_block_start", "index": i, "content_block": start})
        )
        for p in pieces(c.arguments_json):
            delta = {"type": "input_json_delta", "partial_json": p}
            frames.append(
                ("content_block_delta", {"type": "content_block_delta", "index": i, "delta": delta})
            )
        frames.append(("content_block_stop", {"type": "content_block_stop", "index": i}))
    return frames


# -- Gemini ---------------------------------------------------------------------------------------


def gemini_request(body: dict[str, Any]) -> ToolRequest:
    req = ToolRequest()
    for tool in body.get("tools") or []:
        for fn in _get(tool, "functionDeclarations", "function_declarations") or []:
            schema = _get(fn, "parametersJsonSchema", "parameters_json_schema", "parameters") or {
                "type": "object"
            }
            req.tools.append((fn["name"], _lower_types(schema)))
    config = _get(
        _get(body, "toolConfig", "tool_config") or {}, "functionCallingConfig", "function_calling_config"
    )
    if isinstance(config, dict):
        mode = str(config.get("mode", "AUTO")).upper()
        req.choice = {"AUTO": "auto", "ANY": "required", "NONE": "none", "VALIDATED": "auto"}.get(
            mode, "auto"
        )
        allowed = _get(config, "allowedFunctionNames", "allowed_function_names") or []
        if mode == "ANY" and len(allowed) == 1:
            req.named = allowed[0]
    last_results = False
    for content in body.get("contents") or []:
        parts = content.get("parts") or [] if isinstance(content, dict) else []
        for part in parts:
            if _get(part, "inlineData", "inline_data", "fileData", "file_data") is not None:
                req.images += 1
        last_results = any(_get(p, "functionResponse", "function_response") for p in parts)
    req.after_tool_result = last_results
    gen = _get(body, "generationConfig", "generation_config") or {}
    if _get(gen, "responseMimeType", "response_mime_type") == "application/json":
        schema = _get(gen, "responseJsonSchema", "response_json_schema", "responseSchema", "response_schema")
        req.json_schema = _lower_types(schema) if schema else None
        req.json_object = schema is None
    return req


def _lower_types(schema: Any) -> Any:
    """Gemini's Schema objects spell types in capitals (STRING); JSON Schema in lower case."""
    if isinstance(schema, dict):
        return {
            k: (v.lower() if k == "type" and isinstance(v, str) else _lower_types(v))
            for k, v in schema.items()
        }
    if isinstance(schema, list):
        return [_lower_types(v) for v in schema]
    return schema


def gemini_parts(calls: list[EmuToolCall]) -> list[dict[str, Any]]:
    return [{"functionCall": {"id": c.id, "name": c.name, "args": c.arguments}} for c in calls]


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
