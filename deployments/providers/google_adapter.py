"""Google Gemini generateContent on the official ``google-genai`` SDK."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from deployments.providers._transport import http_timeout, translate_transport_error
from deployments.providers.base import (
    Completion,
    Endpoint,
    ProviderRequest,
    StreamDelta,
    Usage,
    map_finish_reason,
)
from serve_app.errors import (
    ProviderError,
    ProviderStreamError,
    parse_retry_after,
    provider_error_for_status,
)


class GoogleAdapter:
    def __init__(self, provider: str, endpoint: Endpoint) -> None:
        self.provider = provider
        # An explicit httpx client keeps google-genai off aiohttp, so that transport failures
        # arrive as the same httpx classes as with the other SDKs; retry_options=None means
        # one attempt (the router owns retries).
        self._http = httpx.AsyncClient(
            timeout=http_timeout(endpoint.connect_timeout_s, endpoint.read_timeout_s),
            limits=httpx.Limits(max_connections=1000, max_keepalive_connections=100),
        )
        options = genai_types.HttpOptions(
            base_url=endpoint.base_url,
            api_version="v1beta",
            timeout=int(endpoint.read_timeout_s * 1000),
            retry_options=None,
            httpx_async_client=self._http,
            headers=endpoint.extra_headers or None,
        )
        self._client = genai.Client(api_key=endpoint.api_key, http_options=options)

    def _call(self, request: ProviderRequest) -> dict[str, Any]:
        contents = [
            genai_types.Content(
                role="model" if m.role == "assistant" else "user",
                parts=[genai_types.Part(text=m.content)],
            )
            for m in request.dialogue()
        ]
        config = genai_types.GenerateContentConfig(
            system_instruction=request.system_text(),
            max_output_tokens=request.max_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            stop_sequences=request.stop or None,
        )
        return {"model": request.model, "contents": contents, "config": config}

    async def complete(self, request: ProviderRequest) -> Completion:
        try:
            response = await self._client.aio.models.generate_content(**self._call(request))
        except Exception as exc:
            raise self._translate(exc, request.model, streaming=False) from exc
        text, finish = _text_and_finish(response)
        return Completion(
            text=text,
            finish_reason=map_finish_reason(finish),
            usage=_usage(response.usage_metadata),
            provider_model=response.model_version or request.model,
        )

    async def stream(self, request: ProviderRequest) -> AsyncIterator[StreamDelta]:
        started = False
        try:
            chunks = await self._client.aio.models.generate_content_stream(**self._call(request))
            async for chunk in chunks:
                started = True
                text, finish = _text_and_finish(chunk)
                delta = StreamDelta(text=text)
                if finish is not None:
                    delta.finish_reason = map_finish_reason(finish)
                    delta.usage = _usage(chunk.usage_metadata)
                if delta.text or delta.finish_reason:
                    yield delta
        except ProviderError:
            raise
        except Exception as exc:
            raise self._translate(exc, request.model, streaming=started) from exc

    async def aclose(self) -> None:
        await self._http.aclose()

    def _translate(self, exc: BaseException, model: str, *, streaming: bool) -> ProviderError:
        p = self.provider
        if isinstance(exc, genai_errors.APIError):
            headers = getattr(getattr(exc, "response", None), "headers", None)
            if not exc.code or exc.code < 400:
                return ProviderStreamError(f"error in stream: {exc.message}", provider=p, model=model)
            return provider_error_for_status(
                exc.code,
                f"{p} answered {exc.code} {exc.status}: {exc.message}",
                provider=p,
                model=model,
                retry_after=parse_retry_after(headers),
            )
        if isinstance(exc, genai_errors.UnknownApiResponseError):
            return ProviderStreamError("malformed response from the provider", provider=p, model=model)
        mapped = translate_transport_error(exc, provider=p, model=model, streaming=streaming)
        if mapped is not None:
            return mapped
        return ProviderStreamError(f"unexpected response ({type(exc).__name__})", provider=p, model=model)


def _text_and_finish(response: Any) -> tuple[str, str | None]:
    if not response.candidates:
        return "", None
    candidate = response.candidates[0]
    parts = candidate.content.parts if candidate.content and candidate.content.parts else []
    text = "".join(part.text for part in parts if part.text and not part.thought)
    finish = candidate.finish_reason
    return text, (finish.value if hasattr(finish, "value") else finish)


def _usage(meta: Any) -> Usage:
    if meta is None:
        return Usage()
    return Usage(
        input_tokens=meta.prompt_token_count or 0,
        output_tokens=(meta.candidates_token_count or 0) + (meta.thoughts_token_count or 0),
        cached_tokens=meta.cached_content_token_count or 0,
        reasoning_tokens=meta.thoughts_token_count or 0,
    )
