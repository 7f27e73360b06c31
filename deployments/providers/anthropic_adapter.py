"""Anthropic messages API on the official ``anthropic`` SDK."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anthropic
from anthropic import AsyncAnthropic

from deployments.providers import anthropic_messages as wire
from deployments.providers._transport import translate_transport_error
from deployments.providers.base import (
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
    ProviderBadRequestError,
    ProviderConnectionError,
    ProviderError,
    ProviderStreamError,
    ProviderTimeoutError,
    parse_retry_after,
    provider_error_for_status,
)

DEFAULT_MAX_TOKENS = 1024  # the messages API requires max_tokens; OpenAI's does not


class AnthropicAdapter:
    def __init__(self, provider: str, endpoint: Endpoint) -> None:
        self.provider = provider
        self._prompt_caching = endpoint.prompt_caching
        self._client = AsyncAnthropic(
            api_key=endpoint.api_key,
            base_url=endpoint.base_url,
            max_retries=0,
            timeout=anthropic.Timeout(endpoint.read_timeout_s, connect=endpoint.connect_timeout_s),
            default_headers=endpoint.extra_headers or None,
        )

    def _params(self, request: ProviderRequest) -> dict[str, Any]:
        if request.response_format is not None and request.tools:
            raise ProviderBadRequestError(
                "Anthropic cannot combine tools with response_format (structured output is a forced tool)",
                provider=self.provider,
                model=request.model,
                status_code=400,
            )
        params: dict[str, Any] = {
            "model": request.model,
            "messages": wire.messages(request.dialogue()),
            "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
            **wire.tool_params(request),
        }
        if request.user is not None:
            params["metadata"] = {"user_id": request.user}
        system = wire.system_param(request, self._prompt_caching)
        if system:
            params["system"] = system
        # The SDK (1.0 and later) dropped its sampling keywords; the API still takes them on the
        # models that allow sampling, so they go in the body as they are on the wire.
        sampling: dict[str, float] = {}
        if request.temperature is not None:
            sampling["temperature"] = min(request.temperature, 1.0)  # Anthropic's range is [0, 1]
        if request.top_p is not None:
            sampling["top_p"] = request.top_p
        if sampling:
            params["extra_body"] = sampling
        if request.stop:
            params["stop_sequences"] = request.stop
        params.update(wire.thinking_params(request, DEFAULT_MAX_TOKENS))  # thinking and its max_tokens
        return params

    async def complete(self, request: ProviderRequest) -> Completion:
        try:
            message = await self._client.messages.create(**self._params(request))
        except Exception as exc:
            raise self._translate(exc, request.model, streaming=False) from exc
        text = "".join(block.text for block in message.content if block.type == "text")
        calls = [
            ToolCall(block.id, block.name, json.dumps(block.input))
            for block in message.content
            if block.type == "tool_use"
        ]
        finish = map_finish_reason(message.stop_reason)
        if request.response_format is not None:  # the forced tool's input is the answer
            text = calls[0].arguments if calls else text
            calls, finish = [], ("stop" if finish == "tool_calls" else finish)
        return Completion(
            text=text,
            finish_reason=finish,
            usage=_usage(message.usage, message.usage.output_tokens),
            provider_model=message.model or request.model,
            tool_calls=calls,
        )

    async def stream(self, request: ProviderRequest) -> AsyncIterator[StreamDelta]:
        started = False
        start_usage: Any = None
        structured = request.response_format is not None
        tool_index: dict[int, int] = {}  # content block index -> our tool call index
        try:
            events = await self._client.messages.create(**self._params(request), stream=True)
            async for event in events:
                started = True
                if event.type == "message_start":
                    start_usage = event.message.usage
                elif event.type == "content_block_start" and event.content_block.type == "tool_use":
                    if not structured:
                        tool_index[event.index] = len(tool_index)
                        block = event.content_block
                        yield StreamDelta(
                            tool_calls=[ToolCallDelta(tool_index[event.index], block.id, block.name)]
                        )
                elif event.type == "content_block_delta" and event.delta.type == "text_delta":
                    if event.delta.text:
                        yield StreamDelta(text=event.delta.text)
                elif event.type == "content_block_delta" and event.delta.type == "input_json_delta":
                    piece = event.delta.partial_json
                    if structured and piece:
                        yield StreamDelta(text=piece)
                    elif piece and event.index in tool_index:
                        yield StreamDelta(
                            tool_calls=[ToolCallDelta(tool_index[event.index], arguments=piece)]
                        )
                elif event.type == "message_delta":
                    usage = _usage(start_usage, event.usage.output_tokens) if start_usage else None
                    finish = map_finish_reason(event.delta.stop_reason)
                    if structured and finish == "tool_calls":
                        finish = "stop"
                    yield StreamDelta(finish_reason=finish, usage=usage)
        except ProviderError:
            raise
        except Exception as exc:
            raise self._translate(exc, request.model, streaming=started) from exc

    async def aclose(self) -> None:
        await self._client.close()

    def _translate(self, exc: BaseException, model: str, *, streaming: bool) -> ProviderError:
        p = self.provider
        if isinstance(exc, anthropic.APIStatusError):
            if exc.status_code < 400:
                # An `event: error` inside a 200 stream (overloaded_error and the like).
                return ProviderStreamError(
                    f"error event in stream: {_message(exc.body)}", provider=p, model=model
                )
            return provider_error_for_status(
                exc.status_code,
                f"{p} answered {exc.status_code}: {_message(exc.body)}",
                provider=p,
                model=model,
                retry_after=parse_retry_after(exc.response.headers),
            )
        if isinstance(exc, anthropic.APITimeoutError):
            return ProviderTimeoutError("request timed out", provider=p, model=model)
        if isinstance(exc, anthropic.APIConnectionError):
            if streaming:
                return ProviderStreamError("stream cut by the provider", provider=p, model=model)
            return ProviderConnectionError("connection failed", provider=p, model=model)
        if isinstance(exc, anthropic.APIError):
            return ProviderStreamError(f"provider error: {exc.message}", provider=p, model=model)
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


def _usage(raw: Any, output_tokens: int | None) -> Usage:
    cache_read = getattr(raw, "cache_read_input_tokens", None) or 0
    cache_write = getattr(raw, "cache_creation_input_tokens", None) or 0
    return Usage(
        input_tokens=(getattr(raw, "input_tokens", 0) or 0) + cache_read + cache_write,
        output_tokens=output_tokens or 0,
        cached_tokens=cache_read,
        cache_write_tokens=cache_write,
    )
