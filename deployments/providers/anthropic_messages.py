"""Our chat request in the Anthropic messages API's shape, and its tool calls back in ours. Plain
dicts, no SDK (``anthropic_adapter.py`` sends them).

- system turns -> ``system``; user and assistant turns alternate (runs of one role are merged);
- image parts -> ``image`` blocks (base64 or URL source);
- an assistant turn's tool calls -> ``tool_use`` blocks; ``tool`` turns -> ``tool_result`` blocks
  in the next user turn;
- tools -> ``tools`` with ``input_schema``; tool_choice auto / none / required / a function ->
  ``auto`` / ``none`` / ``any`` / ``tool``; parallel_tool_calls false -> disable_parallel_tool_use;
- structured output has no native switch: it is one forced tool whose input schema is the
  requested schema, and the tool's input is the answer's text (``FORMAT_TOOL``);
- reasoning_effort -> extended thinking with a budget per effort (``thinking_params``); the
  thinking blocks of the answer are not passed on (OpenAI's chat shape has no place for them).
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


# Extended thinking for reasoning_effort: the thinking budget per effort (Anthropic's least is 1024).
THINKING_BUDGET = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 16384, "xhigh": 32768}
MIN_THINKING = 1024


def thinking_params(request: ProviderRequest, default_max_tokens: int) -> dict[str, Any]:
    """``thinking`` and ``max_tokens`` for a request's reasoning_effort, or {} where Anthropic
    cannot think under the request's other settings: a temperature other than 1, top_p under 0.95,
    a forced tool (tool_choice required or named, or structured output, which is a forced tool), or
    tool turns in the conversation (their signed thinking blocks cannot be sent back through
    OpenAI's shape). Without max_tokens the answer keeps ``default_max_tokens`` beside the budget;
    with it, thinking takes at most half of it."""
    effort = request.reasoning_effort
    if effort is None:
        return {}
    forced = request.tool_choice == "required" or request.tool_choice_function is not None
    tool_turns = any(m.role == "tool" or m.tool_calls for m in request.messages)
    if (
        (request.temperature is not None and request.temperature != 1)
        or (request.top_p is not None and request.top_p < 0.95)
        or forced
        or request.response_format is not None
        or tool_turns
    ):
        return {}
    budget = THINKING_BUDGET[effort]
    if request.max_tokens is None:
        max_tokens = budget + default_max_tokens
    else:
        max_tokens = request.max_tokens
        budget = min(budget, max_tokens // 2)
        if budget < MIN_THINKING:
            return {}
    return {"thinking": {"type": "enabled", "budget_tokens": budget}, "max_tokens": max_tokens}
