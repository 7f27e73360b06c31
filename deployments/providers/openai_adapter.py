"""OpenAI chat completions (and OpenAI-compatible servers such as vLLM) on the official ``openai`` SDK."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import openai
from openai import AsyncOpenAI

from deployments.providers._transport import translate_transport_error
from deployments.providers.base import (
    ChatMessage,
    Completion,
    Endpoint,
    ProviderRequest,
    StreamDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
    map_finish_reason,
)
from serve_app.errors import (
    ProviderConnectionError,
    ProviderError,
    ProviderStreamError,
    ProviderTimeoutError,
    parse_retry_after,
    provider_error_for_status,
)


class OpenAIAdapter:
    """``kind: openai`` and ``kind: openai_compatible`` providers."""

    def __init__(self, provider: str, endpoint: Endpoint, *, compatible: bool = False) -> None:
        self.provider = provider
        self._compatible = compatible
        self._client = AsyncOpenAI(
            api_key=endpoint.api_key,
            base_url=endpoint.base_url,
            max_retries=0,
            timeout=openai.Timeout(endpoint.read_timeout_s, connect=endpoint.connect_timeout_s),
            default_headers=endpoint.extra_headers or None,
        )

    def _params(self, request: ProviderRequest) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": request.model,
            "messages": [_wire_message(m) for m in request.messages],
        }
        if request.tools:
            params["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description or "",
                        "parameters": t.parameters,
                    },
                }
                for t in request.tools
            ]
            if request.tool_choice_function is not None:
                params["tool_choice"] = {
                    "type": "function",
                    "function": {"name": request.tool_choice_function},
                }
            elif request.tool_choice is not None:
                params["tool_choice"] = request.tool_choice
            if request.parallel_tool_calls is not None:
                params["parallel_tool_calls"] = request.parallel_tool_calls
        fmt = request.response_format
        if fmt is not None and fmt.type == "json_object":
            params["response_format"] = {"type": "json_object"}
        elif fmt is not None:
            spec: dict[str, Any] = {"name": fmt.name, "schema": fmt.schema}
            if fmt.strict is not None:
                spec["strict"] = fmt.strict
            params["response_format"] = {"type": "json_schema", "json_schema": spec}
        if request.seed is not None:
            params["seed"] = request.seed
        if request.user is not None:
            params["user"] = request.user
        if request.max_tokens is not None:
            # OpenAI's current models take max_completion_tokens; vLLM and others take max_tokens.
            params["max_tokens" if self._compatible else "max_completion_tokens"] = request.max_tokens
        if request.temperature is not None:
            params["temperature"] = request.temperature
        if request.top_p is not None:
            params["top_p"] = request.top_p
        if request.presence_penalty is not None:
            params["presence_penalty"] = request.presence_penalty
        if request.frequency_penalty is not None:
            params["frequency_penalty"] = request.frequency_penalty
        if request.reasoning_effort is not None:  # o-series, gpt-5 and the like (capabilities.reasoning)
            params["reasoning_effort"] = request.reasoning_effort
        if request.stop:
            params["stop"] = request.stop
        return params

    async def complete(self, request: ProviderRequest) -> Completion:
        try:
            response = await self._client.chat.completions.create(**self._params(request))
        except Exception as exc:
            raise self._translate(exc, request.model, streaming=False) from exc
        if not response.choices:
            raise ProviderStreamError("response without choices", provider=self.provider, model=request.model)
        choice = response.choices[0]
        calls = [
            ToolCall(c.id, c.function.name, c.function.arguments or "{}")
            for c in choice.message.tool_calls or []
            if c.type == "function"
        ]
        return Completion(
            text=choice.message.content or "",
            finish_reason=map_finish_reason(choice.finish_reason),
            usage=_usage(response.usage),
            provider_model=response.model or request.model,
            tool_calls=calls,
        )

    async def stream(self, request: ProviderRequest) -> AsyncIterator[StreamDelta]:
        started = False
        try:
            stream = await self._client.chat.completions.create(
                **self._params(request), stream=True, stream_options={"include_usage": True}
            )
            async for chunk in stream:
                started = True
                delta = StreamDelta()
                if chunk.choices:
                    choice = chunk.choices[0]
                    delta.text = choice.delta.content or ""
                    delta.tool_calls = [
                        ToolCallDelta(
                            c.index,
                            c.id,
                            c.function.name if c.function else None,
                            (c.function.arguments if c.function else None) or "",
                        )
                        for c in choice.delta.tool_calls or []
                    ]
                    if choice.finish_reason is not None:
                        delta.finish_reason = map_finish_reason(choice.finish_reason)
                if chunk.usage is not None:
                    delta.usage = _usage(chunk.usage)
                if delta.text or delta.tool_calls or delta.finish_reason or delta.usage:
                    yield delta
        except ProviderError:
            raise
        except Exception as exc:
            raise self._translate(exc, request.model, streaming=started) from exc

    async def aclose(self) -> None:
        await self._client.close()

    def _translate(self, exc: BaseException, model: str, *, streaming: bool) -> ProviderError:
        p = self.provider
        if isinstance(exc, openai.APIStatusError):
            return provider_error_for_status(
                exc.status_code,
                f"{p} answered {exc.status_code}: {_message(exc.body)}",
                provider=p,
                model=model,
                retry_after=parse_retry_after(exc.response.headers),
            )
        if isinstance(exc, openai.APITimeoutError):
            return ProviderTimeoutError("request timed out", provider=p, model=model)
        if isinstance(exc, openai.APIConnectionError):
            if streaming:
                return ProviderStreamError("stream cut by the provider", provider=p, model=model)
            return ProviderConnectionError("connection failed", provider=p, model=model)
        if isinstance(exc, openai.APIError):
            # An error event inside a stream, or a body the SDK could not validate.
            return ProviderStreamError(f"provider error in stream: {exc.message}", provider=p, model=model)
        mapped = translate_transport_error(exc, provider=p, model=model, streaming=streaming)
        if mapped is not None:
            return mapped
        return ProviderStreamError(f"unexpected response ({type(exc).__name__})", provider=p, model=model)


def _message(body: object) -> str:
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])
    return "error"


def _wire_message(m: ChatMessage) -> dict[str, Any]:
    if m.role == "tool":
        return {"role": "tool", "tool_call_id": m.tool_call_id, "content": m.content}
    if m.images:
        parts: list[dict[str, Any]] = [{"type": "text", "text": m.content}] if m.content else []
        parts += [{"type": "image_url", "image_url": {"url": img.openai_url()}} for img in m.images]
        return {"role": m.role, "content": parts}
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.tool_calls:
        out["content"] = m.content or None
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in m.tool_calls
        ]
    return out


def _usage(raw: Any) -> Usage:
    if raw is None:
        return Usage()
    cached = getattr(getattr(raw, "prompt_tokens_details", None), "cached_tokens", None) or 0
    reasoning = getattr(getattr(raw, "completion_tokens_details", None), "reasoning_tokens", None) or 0
    return Usage(
        input_tokens=raw.prompt_tokens or 0,
        output_tokens=raw.completion_tokens or 0,
        cached_tokens=cached,
        reasoning_tokens=reasoning,
    )
