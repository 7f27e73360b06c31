"""Anthropic messages API on the official ``anthropic`` SDK."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anthropic
from anthropic import AsyncAnthropic

from deployments.providers._transport import translate_transport_error
from deployments.providers.base import (
    ChatMessage,
    Completion,
    Endpoint,
    ProviderRequest,
    StreamDelta,
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

DEFAULT_MAX_TOKENS = 1024  # the messages API requires max_tokens; OpenAI's does not


class AnthropicAdapter:
    def __init__(self, provider: str, endpoint: Endpoint) -> None:
        self.provider = provider
        self._client = AsyncAnthropic(
            api_key=endpoint.api_key,
            base_url=endpoint.base_url,
            max_retries=0,
            timeout=anthropic.Timeout(endpoint.read_timeout_s, connect=endpoint.connect_timeout_s),
            default_headers=endpoint.extra_headers or None,
        )

    def _params(self, request: ProviderRequest) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": request.model,
            "messages": _alternating(request.dialogue()),
            "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
        }
        system = request.system_text()
        if system:
            params["system"] = system
        if request.temperature is not None:
            params["temperature"] = min(request.temperature, 1.0)  # Anthropic's range is [0, 1]
        if request.top_p is not None:
            params["top_p"] = request.top_p
        if request.stop:
            params["stop_sequences"] = request.stop
        return params

    async def complete(self, request: ProviderRequest) -> Completion:
        try:
            message = await self._client.messages.create(**self._params(request))
        except Exception as exc:
            raise self._translate(exc, request.model, streaming=False) from exc
        text = "".join(block.text for block in message.content if block.type == "text")
        return Completion(
            text=text,
            finish_reason=map_finish_reason(message.stop_reason),
            usage=_usage(message.usage, message.usage.output_tokens),
            provider_model=message.model or request.model,
        )

    async def stream(self, request: ProviderRequest) -> AsyncIterator[StreamDelta]:
        started = False
        start_usage: Any = None
        try:
            events = await self._client.messages.create(**self._params(request), stream=True)
            async for event in events:
                started = True
                if event.type == "message_start":
                    start_usage = event.message.usage
                elif event.type == "content_block_delta" and event.delta.type == "text_delta":
                    if event.delta.text:
                        yield StreamDelta(text=event.delta.text)
                elif event.type == "message_delta":
                    usage = _usage(start_usage, event.usage.output_tokens) if start_usage else None
                    yield StreamDelta(finish_reason=map_finish_reason(event.delta.stop_reason), usage=usage)
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


def _alternating(messages: list[ChatMessage]) -> list[dict[str, str]]:
    """Anthropic requires user/assistant turns to alternate: merge runs of the same role."""
    out: list[dict[str, str]] = []
    for m in messages:
        if out and out[-1]["role"] == m.role:
            out[-1]["content"] += "\n\n" + m.content
        else:
            out.append({"role": m.role, "content": m.content})
    return out


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
