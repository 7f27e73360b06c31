"""Our chat request in the Anthropic messages API's shape, and its tool calls back in ours. Plain
dicts, no SDK (``anthropic_adapter.py`` sends them).

- system turns -> ``system``; user and assistant turns alternate (runs of one role are merged);
- image parts -> ``image`` blocks (base64 or URL source);
- an assistant turn's tool calls -> ``tool_use`` blocks; ``tool`` turns -> ``tool_result`` blocks
  in the next user turn;
- tools -> ``tools`` with ``input_schema``; tool_choice auto / none / required / a function ->
  ``auto`` / ``none`` / ``any`` / ``tool``; parallel_tool_calls false -> disable_parallel_tool_use;
- structured output has no native switch: it is one forced tool whose input schema is the
  requested schema, and the tool's input is the answer's text (``FORMAT_TOOL``).
"""

from __future__ import annotations

from typing import Any

from deployments.providers.base import ChatMessage, ProviderRequest, parse_arguments

FORMAT_TOOL = "json_response"  # the tool that carries a structured answer


def _image(m: ChatMessage) -> list[dict[str, Any]]:
    out = []
    for img in m.images:
        if img.url is not None:
            out.append({"type": "image", "source": {"type": "url", "url": img.url}})
        else:
            out.append(
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": img.media_type, "data": img.data},
                }
            )
    return out


def messages(dialogue: list[ChatMessage]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in dialogue:
        blocks: list[dict[str, Any]]
        if m.role == "tool":
            role, blocks = (
                "user",
                [{"type": "tool_result", "tool_use_id": m.tool_call_id, "content": m.content}],
            )
        elif m.role == "assistant":
            role = "assistant"
            blocks = [{"type": "text", "text": m.content}] if m.content else []
            blocks += [
                {"type": "tool_use", "id": c.id, "name": c.name, "input": parse_arguments(c.arguments)}
                for c in m.tool_calls
            ]
        else:
            role = "user"
            blocks = _image(m) + ([{"type": "text", "text": m.content}] if m.content or not m.images else [])
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    return out


CACHE_MIN_CHARS = 4096  # about 1,024 tokens: the least Anthropic caches (Sonnet and Opus)


def system_param(request: ProviderRequest, prompt_caching: bool) -> str | list[dict[str, Any]] | None:
    """The system prompt; with prompt caching on and a prompt long enough to be cached, one text
    block marked ``cache_control`` (the tools, which come before it, are cached with it)."""
    system = request.system_text()
    if not system:
        return None
    if not prompt_caching or len(system) < CACHE_MIN_CHARS:
        return system
    return [{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}]


def tool_params(request: ProviderRequest) -> dict[str, Any]:
    """``tools`` and ``tool_choice`` for the request, the structured-output tool included."""
    fmt = request.response_format
    if fmt is not None:
        schema = fmt.schema if fmt.type == "json_schema" and fmt.schema else {"type": "object"}
        tool = {
            "name": FORMAT_TOOL,
            "description": "Give the answer as this JSON object.",
            "input_schema": schema,
        }
        return {"tools": [tool], "tool_choice": {"type": "tool", "name": FORMAT_TOOL}}
    if not request.tools:
        return {}
    tools = [
        {"name": t.name, "description": t.description or "", "input_schema": t.parameters}
        for t in request.tools
    ]
    choice: dict[str, Any]
    if request.tool_choice_function is not None:
        choice = {"type": "tool", "name": request.tool_choice_function}
    else:
        choice = {"type": {"required": "any", "none": "none"}.get(request.tool_choice or "auto", "auto")}
    if request.parallel_tool_calls is False and choice["type"] != "none":
        choice["disable_parallel_tool_use"] = True
    return {"tools": tools, "tool_choice": choice}
