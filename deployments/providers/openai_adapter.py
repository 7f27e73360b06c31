"""OpenAI chat completions (and OpenAI-compatible servers such as vLLM) on the official ``openai`` SDK."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import openai
from openai import AsyncOpenAI

from deployments.providers._transport import translate_transport_error
from deployments.providers.base import (
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
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
        }
        if request.max_tokens is not None:
            # OpenAI's current models take max_completion_tokens; vLLM and others take max_tokens.
            params["max_tokens" if self._compatible else "max_completion_tokens"] = request.max_tokens
        if request.temperature is not None:
            params["temperature"] = request.temperature
        if request.top_p is not None:
            params["top_p"] = request.top_p
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
        return Completion(
            text=choice.message.content or "",
            finish_reason=map_finish_reason(choice.finish_reason),
            usage=_usage(response.usage),
            provider_model=response.model or request.model,
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
                    if choice.finish_reason is not None:
                        delta.finish_reason = map_finish_reason(choice.finish_reason)
                if chunk.usage is not None:
                    delta.usage = _usage(chunk.usage)
                if delta.text or delta.finish_reason or delta.usage:
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
