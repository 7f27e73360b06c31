"""The three wire protocols the emulator speaks: request parsing, bodies, SSE frames, error formats."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Protocol

from serve_app.emulator import tool_wire
from serve_app.emulator.engine import Answer
from serve_app.emulator.tools import ToolRequest


class BadRequest(Exception):
    """The body is not a valid request of this protocol."""


class Parsed:
    def __init__(
        self,
        model: str,
        prompt_text: str,
        *,
        stream: bool,
        max_tokens: int | None,
        stop: list[str] | None,
        include_usage: bool = False,
        cache_prefix: str | None = None,
        explicit_cache: bool = False,
        tools: ToolRequest | None = None,
        sampling: dict[str, float | str] | None = None,
        thinking_tokens: int = 0,
    ) -> None:
        self.model = model
        self.sampling = sampling or {}  # temperature, top_p, penalties, reasoning as sent
        self.thinking_tokens = thinking_tokens  # what the emulated model thinks (billed as output)
        self.prompt_text = prompt_text
        self.stream = stream
        self.max_tokens = max_tokens
        self.stop = stop
        self.include_usage = include_usage
        self.cache_prefix = cache_prefix  # the prompt text a provider's prompt cache may hold
        self.explicit_cache = explicit_cache  # Anthropic: cached only where cache_control marks it
        self.tools = tools or ToolRequest()  # tools, tool choice, images, structured output


class WireProtocol(Protocol):
    name: str
    media_type: str

    def parse(self, body: Any, model_from_path: str | None, stream_from_path: bool) -> Parsed: ...
    def error_body(self, status: int, message: str) -> dict[str, Any]: ...
    def full_body(self, p: Parsed, answer: Answer) -> dict[str, Any]: ...
    def stream_head(self, p: Parsed, answer: Answer) -> list[str]: ...
    def stream_token(self, p: Parsed, answer: Answer, index: int, token: str) -> str: ...
    def stream_tail(self, p: Parsed, answer: Answer) -> list[str]: ...
    def stream_tool_calls(self, p: Parsed, answer: Answer) -> list[str]: ...
    def malformed_frame(self) -> str: ...


def _sse(data: Any, event: str | None = None, sep: str = "\n\n") -> str:
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}{sep}"


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def _blocks(content: Any) -> list[tuple[str, bool]]:
    """An Anthropic system or message content as (text, marked with cache_control) blocks."""
    if isinstance(content, str):
        return [(content, False)]
    if isinstance(content, list):
        return [
            (str(part.get("text", "")), part.get("cache_control") is not None)
            for part in content
            if isinstance(part, dict)
        ]
    return []


def _stop_list(raw: Any) -> list[str] | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list) and all(isinstance(s, str) for s in raw):
        return list(raw)
    raise BadRequest("stop must be a string or a list of strings")


def _sampling(source: dict[str, Any], limits: dict[str, tuple[str, float, float]]) -> dict[str, float | str]:
    """The sampling parameters present in ``source`` ({our name: (wire name, low, high)}), checked
    against the provider's ranges the way its API checks them (400 outside)."""
    found: dict[str, float | str] = {}
    for ours, (wire, low, high) in limits.items():
        raw = source.get(wire)
        if raw is None:
            continue
        if isinstance(raw, bool) or not isinstance(raw, int | float) or not low <= raw <= high:
            raise BadRequest(f"{wire}: must be a number between {low:g} and {high:g}")
        found[ours] = float(raw)
    return found


# Each protocol's sampling parameters: our name -> (its wire name, its range); the penalties'
# range is -2 to 2 at OpenAI and Gemini, Anthropic has none
OPENAI_SAMPLING = {
    "temperature": ("temperature", 0.0, 2.0),
    "top_p": ("top_p", 0.0, 1.0),
    "presence_penalty": ("presence_penalty", -2.0, 2.0),
    "frequency_penalty": ("frequency_penalty", -2.0, 2.0),
}
ANTHROPIC_SAMPLING = {"temperature": ("temperature", 0.0, 1.0), "top_p": ("top_p", 0.0, 1.0)}
GEMINI_SAMPLING = {
    "temperature": ("temperature", 0.0, 2.0),
    "top_p": ("topP", 0.0, 1.0),
    "presence_penalty": ("presencePenalty", -2.0, 2.0),
    "frequency_penalty": ("frequencyPenalty", -2.0, 2.0),
}
# What an emulated model thinks for a reasoning effort or a thinking budget (a small share of it)
EFFORT_THINKING = {"none": 0, "minimal": 8, "low": 32, "medium": 64, "high": 128, "xhigh": 256}


def _budget_thinking(budget: int) -> int:
    return max(0, min(budget // 16, 256))


def _openai_reasoning(body: dict[str, Any]) -> tuple[dict[str, float | str], int]:
    effort = body.get("reasoning_effort")
    if effort is None:
        return {}, 0
    if effort not in EFFORT_THINKING:
        raise BadRequest(f"reasoning_effort: Invalid value '{effort}'")
    return {"reasoning_effort": effort}, EFFORT_THINKING[effort]


def _anthropic_thinking(body: dict[str, Any], max_tokens: int) -> tuple[dict[str, float | str], int]:
    """Extended thinking, checked as the messages API checks it."""
    thinking = body.get("thinking")
    if thinking is None:
        return {}, 0
    if not isinstance(thinking, dict) or thinking.get("type") not in ("enabled", "disabled"):
        raise BadRequest("thinking: type must be 'enabled' or 'disabled'")
    if thinking["type"] == "disabled":
        return {}, 0
    budget = thinking.get("budget_tokens")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1024:
        raise BadRequest("thinking.enabled.budget_tokens: Input should be greater than or equal to 1024")
    if budget >= max_tokens:
        raise BadRequest("`max_tokens` must be greater than `thinking.budget_tokens`")
    if body.get("temperature") not in (None, 1, 1.0):
        raise BadRequest("`temperature` may only be set to 1 when thinking is enabled")
    top_p = body.get("top_p")
    if isinstance(top_p, int | float) and top_p < 0.95:
        raise BadRequest("`top_p` must be greater than or equal to 0.95 when thinking is enabled")
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") in ("any", "tool"):
        raise BadRequest("Thinking may not be enabled when tool_choice forces tool use.")
    return {"thinking_budget": float(budget)}, _budget_thinking(budget)


def _gemini_thinking(config: dict[str, Any]) -> tuple[dict[str, float | str], int]:
    thinking = config.get("thinkingConfig") or config.get("thinking_config")
    if not isinstance(thinking, dict):
        return {}, 0
    budget = thinking.get("thinkingBudget", thinking.get("thinking_budget"))
    if budget is None:
        return {}, 0
    if isinstance(budget, bool) or not isinstance(budget, int) or not -1 <= budget <= 32768:
        raise BadRequest("thinkingBudget: must be an integer from -1 (dynamic) to 32768")
    return {"thinking_budget": float(budget)}, _budget_thinking(budget if budget >= 0 else 8192)


def _int_or_none(raw: Any, name: str) -> int | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
        raise BadRequest(f"{name} must be a positive integer")
    return raw


class OpenAIProtocol:
    name = "openai"
    media_type = "text/event-stream"

    def parse(self, body: Any, model_from_path: str | None, stream_from_path: bool) -> Parsed:
        if not isinstance(body, dict):
            raise BadRequest("body must be a JSON object")
        model, messages = body.get("model"), body.get("messages")
        if not isinstance(model, str) or not model:
            raise BadRequest("model is required")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("messages must be a non-empty array")
        texts = [_text_of(m.get("content")) for m in messages if isinstance(m, dict)]
        text = "\n".join(texts)
        max_tokens = _int_or_none(body.get("max_completion_tokens", body.get("max_tokens")), "max_tokens")
        options = body.get("stream_options") or {}
        try:
            tools = tool_wire.openai_request(body)
        except tool_wire.WireError as exc:
            raise BadRequest(str(exc)) from None
        reasoning, thinking_tokens = _openai_reasoning(body)
        return Parsed(
            model,
            text,
            stream=bool(body.get("stream")),
            max_tokens=max_tokens,
            stop=_stop_list(body.get("stop")),
            include_usage=bool(options.get("include_usage")) if isinstance(options, dict) else False,
            cache_prefix="\n".join(texts[:-1]) or None,
            tools=tools,
            sampling=_sampling(body, OPENAI_SAMPLING) | reasoning,
            thinking_tokens=thinking_tokens,
        )

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        kind = {400: "invalid_request_error", 401: "invalid_request_error", 429: "rate_limit_exceeded"}
        return {
            "error": {
                "message": message,
                "type": kind.get(status, "server_error"),
                "param": None,
                "code": None,
            }
        }

    def _usage(self, p: Parsed, answer: Answer) -> dict[str, Any]:
        return {
            "prompt_tokens": answer.prompt_tokens,
            "completion_tokens": answer.completion_tokens + answer.reasoning_tokens,
            "total_tokens": answer.prompt_tokens + answer.completion_tokens + answer.reasoning_tokens,
            "prompt_tokens_details": {"cached_tokens": answer.cache_read_tokens},
            "completion_tokens_details": {"reasoning_tokens": answer.reasoning_tokens},
        }

    def _chunk(self, p: Parsed, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        return {
            "id": "chatcmpl-emu",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": p.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    def full_body(self, p: Parsed, answer: Answer) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": p.model,
            "choices": [
                {
                    "index": 0,
                    "message": self._message(answer),
                    "finish_reason": answer.finish_reason,
                }
            ],
            "usage": self._usage(p, answer),
        }

    @staticmethod
    def _message(answer: Answer) -> dict[str, Any]:
        if not answer.tool_calls:
            return {"role": "assistant", "content": answer.text}
        calls = tool_wire.openai_message_calls(answer.tool_calls)
        return {"role": "assistant", "content": None, "tool_calls": calls}

    def stream_tool_calls(self, p: Parsed, answer: Answer) -> list[str]:
        return [_sse(self._chunk(p, d, None)) for d in tool_wire.openai_stream_deltas(answer.tool_calls)]

    def stream_head(self, p: Parsed, answer: Answer) -> list[str]:
        return [_sse(self._chunk(p, {"role": "assistant", "content": ""}, None))]

    def stream_token(self, p: Parsed, answer: Answer, index: int, token: str) -> str:
        return _sse(self._chunk(p, {"content": token}, None))

    def stream_tail(self, p: Parsed, answer: Answer) -> list[str]:
        frames = [_sse(self._chunk(p, {}, answer.finish_reason))]
        if p.include_usage:
            usage_chunk = self._chunk(p, {}, None)
            usage_chunk["choices"] = []
            usage_chunk["usage"] = self._usage(p, answer)
            frames.append(_sse(usage_chunk))
        frames.append(_sse("[DONE]"))
        return frames

    def malformed_frame(self) -> str:
        return 'data: {"id": "chatcmpl-emu", "choices": [{"delta": \n\n'


_ANTHROPIC_ERRORS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


class AnthropicProtocol:
    name = "anthropic"
    media_type = "text/event-stream"

    def parse(self, body: Any, model_from_path: str | None, stream_from_path: bool) -> Parsed:
        if not isinstance(body, dict):
            raise BadRequest("body must be a JSON object")
        model, messages = body.get("model"), body.get("messages")
        if not isinstance(model, str) or not model:
            raise BadRequest("model: Field required")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("messages: at least one message is required")
        max_tokens = _int_or_none(body.get("max_tokens"), "max_tokens")
        if max_tokens is None:
            raise BadRequest("max_tokens: Field required")
        system = body.get("system")
        blocks = _blocks(system) if system else []
        for m in messages:
            if isinstance(m, dict):
                blocks += _blocks(m.get("content"))
        marked = [i for i, (_, cached) in enumerate(blocks) if cached]
        prefix = "\n".join(t for t, _ in blocks[: marked[-1] + 1]) if marked else None
        try:
            tools = tool_wire.anthropic_request(body)
        except tool_wire.WireError as exc:
            raise BadRequest(str(exc)) from None
        thinking, thinking_tokens = _anthropic_thinking(body, max_tokens)
        return Parsed(
            model,
            "\n".join(t for t, _ in blocks),
            stream=bool(body.get("stream")),
            max_tokens=max_tokens,
            stop=_stop_list(body.get("stop_sequences")),
            cache_prefix=prefix,
            explicit_cache=True,
            tools=tools,
            sampling=_sampling(body, ANTHROPIC_SAMPLING) | thinking,
            thinking_tokens=thinking_tokens,
        )

    @staticmethod
    def _usage(answer: Answer, output_tokens: int) -> dict[str, Any]:
        uncached = answer.prompt_tokens - answer.cache_read_tokens - answer.cache_write_tokens
        return {
            "input_tokens": uncached,
            "cache_creation_input_tokens": answer.cache_write_tokens,
            "cache_read_input_tokens": answer.cache_read_tokens,
            "output_tokens": output_tokens,
        }

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        return {
            "type": "error",
            "error": {"type": _ANTHROPIC_ERRORS.get(status, "api_error"), "message": message},
        }

    @staticmethod
    def _stop_reason(answer: Answer, p: Parsed) -> str:
        if answer.tool_calls:
            return "tool_use"
        if answer.finish_reason == "length":
            return "max_tokens"
        return "stop_sequence" if answer.stop_sequence is not None else "end_turn"

    def full_body(self, p: Parsed, answer: Answer) -> dict[str, Any]:
        return {
            "id": f"msg_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "model": p.model,
            "content": (
                tool_wire.anthropic_content(answer.tool_calls)
                if answer.tool_calls
                else [{"type": "text", "text": answer.text}]
            ),
            "stop_reason": self._stop_reason(answer, p),
            "stop_sequence": answer.stop_sequence,
            "usage": self._usage(answer, answer.completion_tokens + answer.reasoning_tokens),
        }

    def stream_head(self, p: Parsed, answer: Answer) -> list[str]:
        message: dict[str, Any] = {
            "id": f"msg_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "model": p.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": self._usage(answer, 1),
        }
        frames = [_sse({"type": "message_start", "message": message}, "message_start")]
        if not answer.tool_calls:
            frames.append(
                _sse(
                    {
                        "type": "content_block_start",
                        "index": 0,
                        "content_block": {"type": "text", "text": ""},
                    },
                    "content_block_start",
                )
            )
        return [*frames, _sse({"type": "ping"}, "ping")]

    def stream_tool_calls(self, p: Parsed, answer: Answer) -> list[str]:
        return [_sse(data, event) for event, data in tool_wire.anthropic_stream_frames(answer.tool_calls, 0)]

    def stream_token(self, p: Parsed, answer: Answer, index: int, token: str) -> str:
        return _sse(
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": token}},
            "content_block_delta",
        )

    def stream_tail(self, p: Parsed, answer: Answer) -> list[str]:
        stop = (
            []
            if answer.tool_calls
            else [_sse({"type": "content_block_stop", "index": 0}, "content_block_stop")]
        )
        return [
            *stop,
            _sse(
                {
                    "type": "message_delta",
                    "delta": {
                        "stop_reason": self._stop_reason(answer, p),
                        "stop_sequence": answer.stop_sequence,
                    },
                    "usage": {"output_tokens": answer.completion_tokens + answer.reasoning_tokens},
                },
                "message_delta",
            ),
            _sse({"type": "message_stop"}, "message_stop"),
        ]

    def malformed_frame(self) -> str:
        return 'event: content_block_delta\ndata: {"type": "content_block_delta", "delta": \n\n'


_GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


class GeminiProtocol:
    name = "google"
    media_type = "text/event-stream"

    def parse(self, body: Any, model_from_path: str | None, stream_from_path: bool) -> Parsed:
        if not isinstance(body, dict):
            raise BadRequest("body must be a JSON object")
        if not model_from_path:
            raise BadRequest("model is required in the path")
        contents = body.get("contents")
        if not isinstance(contents, list) or not contents:
            raise BadRequest("contents is not specified")
        texts: list[str] = []
        system = body.get("systemInstruction") or body.get("system_instruction")
        if isinstance(system, dict):
            texts.append(_text_of(system.get("parts")))
        texts += [_text_of(c.get("parts")) for c in contents if isinstance(c, dict)]
        config = body.get("generationConfig") or body.get("generation_config") or {}
        max_tokens = _int_or_none(
            config.get("maxOutputTokens", config.get("max_output_tokens")), "maxOutputTokens"
        )
        stop = _stop_list(config.get("stopSequences", config.get("stop_sequences")))
        try:
            tools = tool_wire.gemini_request(body)
        except (tool_wire.WireError, KeyError, TypeError) as exc:
            raise BadRequest(f"invalid tools: {exc}") from None
        thinking, thinking_tokens = _gemini_thinking(config)
        return Parsed(
            model_from_path,
            "\n".join(texts),
            stream=stream_from_path,
            max_tokens=max_tokens,
            stop=stop,
            cache_prefix="\n".join(texts[:-1]) or None,
            tools=tools,
            sampling=_sampling(config, GEMINI_SAMPLING) | thinking,
            thinking_tokens=thinking_tokens,
        )

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        return {
            "error": {"code": status, "message": message, "status": _GOOGLE_STATUS.get(status, "UNKNOWN")}
        }

    def _usage(self, answer: Answer, output_tokens: int) -> dict[str, Any]:
        usage = {
            "promptTokenCount": answer.prompt_tokens,
            "candidatesTokenCount": output_tokens,
            "totalTokenCount": answer.prompt_tokens + output_tokens + answer.reasoning_tokens,
        }
        if answer.reasoning_tokens:
            usage["thoughtsTokenCount"] = answer.reasoning_tokens
        if answer.cache_read_tokens:
            usage["cachedContentTokenCount"] = answer.cache_read_tokens
        return usage

    def _finish(self, answer: Answer) -> str:
        return "MAX_TOKENS" if answer.finish_reason == "length" else "STOP"

    def full_body(self, p: Parsed, answer: Answer) -> dict[str, Any]:
        return {
            "candidates": [
                {
                    "content": {"parts": self._parts(answer), "role": "model"},
                    "finishReason": self._finish(answer),
                    "index": 0,
                }
            ],
            "usageMetadata": self._usage(answer, answer.completion_tokens),
            "modelVersion": p.model,
        }

    @staticmethod
    def _parts(answer: Answer) -> list[dict[str, Any]]:
        return tool_wire.gemini_parts(answer.tool_calls) if answer.tool_calls else [{"text": answer.text}]

    def stream_tool_calls(self, p: Parsed, answer: Answer) -> list[str]:
        chunk = {
            "candidates": [{"content": {"parts": self._parts(answer), "role": "model"}, "index": 0}],
            "usageMetadata": self._usage(answer, answer.completion_tokens),
            "modelVersion": p.model,
        }
        return [_sse(chunk, sep="\r\n\r\n")]

    def stream_head(self, p: Parsed, answer: Answer) -> list[str]:
        return []

    def stream_token(self, p: Parsed, answer: Answer, index: int, token: str) -> str:
        chunk: dict[str, Any] = {
            "candidates": [{"content": {"parts": [{"text": token}], "role": "model"}, "index": 0}],
            "usageMetadata": self._usage(answer, index + 1),
            "modelVersion": p.model,
        }
        return _sse(chunk, sep="\r\n\r\n")

    def stream_tail(self, p: Parsed, answer: Answer) -> list[str]:
        chunk = {
            "candidates": [
                {
                    "content": {"parts": [{"text": ""}], "role": "model"},
                    "finishReason": self._finish(answer),
                    "index": 0,
                }
            ],
            "usageMetadata": self._usage(answer, answer.completion_tokens),
            "modelVersion": p.model,
        }
        return [_sse(chunk, sep="\r\n\r\n")]

    def malformed_frame(self) -> str:
        return 'data: {"candidates": [{"content": \r\n\r\n'


OPENAI = OpenAIProtocol()
ANTHROPIC = AnthropicProtocol()
GEMINI = GeminiProtocol()
