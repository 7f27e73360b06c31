"""Google Gemini generateContent on the official ``google-genai`` SDK."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from deployments.providers._transport import http_timeout, translate_transport_error
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
    parse_arguments,
)
from serve_app.errors import (
    ProviderError,
    ProviderStreamError,
    parse_retry_after,
    provider_error_for_status,
)

# reasoning_effort -> Gemini's thinking budget in tokens (2.5 Pro takes 128 to 32,768 and always thinks)
THINKING_BUDGET = {"minimal": 128, "low": 1024, "medium": 8192, "high": 24576, "xhigh": 32768}
MIN_THINKING = 128


def _thinking(request: ProviderRequest) -> genai_types.ThinkingConfig | None:
    """The thinking budget for the request's reasoning_effort; with max_tokens (which thinking
    counts against) at most half of it, so that the answer keeps the rest."""
    if request.reasoning_effort is None:
        return None
    budget = THINKING_BUDGET[request.reasoning_effort]
    if request.max_tokens is not None:
        budget = max(MIN_THINKING, min(budget, request.max_tokens // 2))
    return genai_types.ThinkingConfig(thinking_budget=budget)


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
        fmt = request.response_format
        config = genai_types.GenerateContentConfig(
            system_instruction=request.system_text(),
            max_output_tokens=request.max_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            stop_sequences=request.stop or None,
            seed=request.seed,
            presence_penalty=request.presence_penalty,
            frequency_penalty=request.frequency_penalty,
            thinking_config=_thinking(request),
            tools=_tools(request) or None,
            tool_config=_tool_config(request),
            response_mime_type="application/json" if fmt is not None else None,
            response_json_schema=fmt.schema if fmt is not None and fmt.type == "json_schema" else None,
        )
        return {"model": request.model, "contents": _contents(request.dialogue()), "config": config}

    async def complete(self, request: ProviderRequest) -> Completion:
        try:
            response = await self._client.aio.models.generate_content(**self._call(request))
        except Exception as exc:
            raise self._translate(exc, request.model, streaming=False) from exc
        text, finish = _text_and_finish(response)
        calls = [ToolCall(i, n, a) for i, n, a in _function_calls(response, 0)]
        return Completion(
            text=text,
            finish_reason="tool_calls" if calls else map_finish_reason(finish),
            usage=_usage(response.usage_metadata),
            provider_model=response.model_version or request.model,
            tool_calls=calls,
        )

    async def stream(self, request: ProviderRequest) -> AsyncIterator[StreamDelta]:
        started = False
        try:
            chunks = await self._client.aio.models.generate_content_stream(**self._call(request))
            calls = 0
            async for chunk in chunks:
                started = True
                text, finish = _text_and_finish(chunk)
                delta = StreamDelta(text=text)
                for call_id, name, args in _function_calls(chunk, calls):  # Gemini sends each call whole
                    delta.tool_calls.append(ToolCallDelta(calls, call_id, name, args))
                    calls += 1
                if finish is not None:
                    delta.finish_reason = "tool_calls" if calls else map_finish_reason(finish)
                    delta.usage = _usage(chunk.usage_metadata)
                if delta.text or delta.tool_calls or delta.finish_reason:
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


def _contents(dialogue: list[ChatMessage]) -> list[genai_types.Content]:
    """Turns as Gemini contents: tool calls as functionCall parts of the model's turn, tool results
    as functionResponse parts of the user's, images as inline data (or file data for URLs)."""
    out: list[genai_types.Content] = []
    for m in dialogue:
        parts: list[genai_types.Part] = []
        if m.role == "tool":
            role = "user"
            response = genai_types.FunctionResponse(
                id=m.tool_call_id, name=m.name or "tool", response=_result(m.content)
            )
            parts.append(genai_types.Part(function_response=response))
        elif m.role == "assistant":
            role = "model"
            parts += [genai_types.Part(text=m.content)] if m.content else []
            parts += [
                genai_types.Part(
                    function_call=genai_types.FunctionCall(
                        id=c.id, name=c.name, args=parse_arguments(c.arguments)
                    )
                )
                for c in m.tool_calls
            ]
        else:
            role = "user"
            for img in m.images:
                if img.data is not None:
                    blob = genai_types.Blob(mime_type=img.media_type, data=base64.b64decode(img.data))
                    parts.append(genai_types.Part(inline_data=blob))
                else:
                    parts.append(genai_types.Part(file_data=genai_types.FileData(file_uri=img.url)))
            parts += [genai_types.Part(text=m.content)] if m.content or not m.images else []
        if out and out[-1].role == role and out[-1].parts is not None:
            out[-1].parts.extend(parts)
        else:
            out.append(genai_types.Content(role=role, parts=parts))
    return out


def _result(content: str) -> dict[str, Any]:
    """A tool's result as the object functionResponse wants: its JSON object, or {"result": text}."""
    try:
        value = json.loads(content)
    except json.JSONDecodeError:
        return {"result": content}
    return value if isinstance(value, dict) else {"result": value}


def _tools(request: ProviderRequest) -> list[Any]:
    if not request.tools:
        return []
    declarations = [
        genai_types.FunctionDeclaration(
            name=t.name, description=t.description, parameters_json_schema=t.parameters
        )
        for t in request.tools
    ]
    return [genai_types.Tool(function_declarations=declarations)]


def _tool_config(request: ProviderRequest) -> genai_types.ToolConfig | None:
    if not request.tools:
        return None
    if request.tool_choice_function is not None:
        mode, allowed = genai_types.FunctionCallingConfigMode.ANY, [request.tool_choice_function]
    else:
        modes = {"required": "ANY", "none": "NONE"}
        mode = genai_types.FunctionCallingConfigMode(modes.get(request.tool_choice or "auto", "AUTO"))
        allowed = None
    config = genai_types.FunctionCallingConfig(mode=mode, allowed_function_names=allowed)
    return genai_types.ToolConfig(function_calling_config=config)


def _function_calls(response: Any, first: int) -> list[tuple[str, str, str]]:
    """(id, name, JSON arguments) of each functionCall part; calls without an id get one."""
    if not response.candidates or not response.candidates[0].content:
        return []
    parts = response.candidates[0].content.parts or []
    calls = [p.function_call for p in parts if p.function_call is not None]
    return [
        (c.id or f"call_{uuid.uuid4().hex[:16]}_{first + i}", c.name or "", json.dumps(c.args or {}))
        for i, c in enumerate(calls)
    ]


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
