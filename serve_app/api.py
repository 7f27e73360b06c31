"""The HTTP surface (FastAPI), built around a ``Gateway``; the ingress deployment serves it.

    POST /v1/chat/completions   OpenAI chat completions, streaming (SSE, ends with ``data: [DONE]``) or not
    GET  /v1/models             the routing policies and every configured model
    GET  /healthz               liveness, and which providers are emulated

Every error is OpenAI's envelope with the status of its class in ``serve_app.errors``; nothing
answers with a traceback.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from serve_app.config import FusionConfig
from serve_app.errors import (
    FusionError,
    InvalidRequestError,
    MethodNotAllowedError,
    NotFoundError,
    PayloadTooLargeError,
    ProviderError,
)
from serve_app.gateway import Gateway, StreamSession
from serve_app.route_info import RouteInfo
from serve_app.routing import POLICIES
from serve_app.schemas import ChatCompletionRequest, chunk_body, completion_body, parse_request, usage_body

logger = logging.getLogger("fusion_router")

_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {
        "description": text,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    for code, text in {
        400: "invalid request (bad JSON, missing or mistyped field, unsupported parameter)",
        401: "invalid API key",
        404: "unknown model",
        413: "request body over the configured limit",
        429: "rate limited",
        502: "no provider could serve the request",
        503: "every candidate provider is unavailable or overloaded",
        504: "every candidate provider timed out",
    }.items()
}


def error_response(exc: FusionError) -> JSONResponse:
    return JSONResponse(exc.envelope(), status_code=exc.http_status, headers=exc.headers())


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refusing (413) anything over ``limit`` bytes before reading it where possible."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise InvalidRequestError("Content-Length is not a number.") from None
        if size > limit:
            raise PayloadTooLargeError(f"Request body is {size} bytes; the limit is {limit} bytes.")
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise PayloadTooLargeError(f"Request body exceeds the limit of {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


def decode_json(body: bytes) -> Any:
    if not body.strip():
        raise InvalidRequestError("The request body is empty; send a JSON object.")
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(f"The request body is not valid JSON: {exc}.") from None


def create_api(
    config: FusionConfig,
    gateway: Gateway,
    provider_modes: dict[str, str],
    reset_board: Callable[[], Awaitable[None]] | None = None,
) -> FastAPI:
    """The FastAPI application. ``provider_modes`` maps provider -> live, emulated or local:<engine>;
    ``reset_board`` also closes the circuits shared by all ingress replicas."""
    app = FastAPI(
        title="Fusion Router", version="0.1.0", description="OpenAI-compatible multi-provider LLM router"
    )

    @app.exception_handler(FusionError)
    async def _fusion_error(request: Request, exc: FusionError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 405:
            return error_response(
                MethodNotAllowedError(f"Method {request.method} is not allowed on {request.url.path}.")
            )
        if exc.status_code == 404:
            return error_response(NotFoundError(f"No route for {request.method} {request.url.path}."))
        err = InvalidRequestError(str(exc.detail))
        return JSONResponse(err.envelope(), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(InvalidRequestError(str(exc.errors()[0].get("msg", "invalid request"))))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error on %s", request.url.path)
        body = {
            "error": {
                "message": "Internal error in the router; it has been logged.",
                "type": "api_error",
                "param": None,
                "code": "internal_error",
            }
        }
        return JSONResponse(body, status_code=500)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "providers": provider_modes, "circuits": gateway.health.states()}

    @app.post("/v1/router/circuits/reset")
    async def reset_circuits() -> dict[str, Any]:
        """Close every circuit breaker and refill the hedge budget (after an incident is over)."""
        gateway.reset()
        if reset_board is not None:
            await reset_board()
        return {"status": "ok", "circuits": gateway.health.states()}

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        created = 1_700_000_000
        data = [
            {"id": p, "object": "model", "created": created, "owned_by": "fusion-router"} for p in POLICIES
        ]
        data += [
            {"id": name, "object": "model", "created": created, "owned_by": spec.provider}
            for name, spec in config.models.items()
        ]
        return {"object": "list", "data": data}

    @app.post(
        "/v1/chat/completions",
        responses=_ERROR_RESPONSES,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/ChatCompletionRequest"}}
                },
            }
        },
    )
    async def chat_completions(request: Request) -> Response:
        body = await read_body(request, config.server.max_body_bytes)
        chat = parse_request(decode_json(body))
        request_id = f"chatcmpl-{uuid.uuid4().hex}"
        info = await gateway.plan(chat, request_id)
        if chat.stream:
            session = await gateway.open_stream(chat, info)
            return StreamingResponse(
                _sse(config, chat, session),
                media_type="text/event-stream",
                headers={**info.headers(), "cache-control": "no-cache", "x-accel-buffering": "no"},
            )
        result = await gateway.complete(chat, info)
        payload = completion_body(
            request_id,
            info.served_by.model if info.served_by else chat.model,
            result.text,
            result.finish_reason,
            result.usage,
            info.body(),
        )
        return JSONResponse(payload, headers=info.headers())

    _document_schemas(app)
    return app


def _sse_event(payload: Any) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


async def _sse(
    config: FusionConfig, chat: ChatCompletionRequest, session: StreamSession
) -> AsyncIterator[str]:
    info: RouteInfo = session.info
    model = info.served_by.model if info.served_by else chat.model
    created = int(time.time())
    rid = info.request_id
    finish = "stop"
    try:
        yield _sse_event(chunk_body(rid, model, created, {"role": "assistant", "content": ""}))
        try:
            async for delta in session.deltas():
                if delta.text:
                    yield _sse_event(chunk_body(rid, model, created, {"content": delta.text}))
                if delta.finish_reason is not None:
                    finish = delta.finish_reason
        except ProviderError as exc:
            # Tokens already reached the client and the answer could not be continued: end with an
            # error event in OpenAI's format, never a silent truncation.
            err = {
                "message": f"The stream from {exc.provider} broke after it started: {exc.message}",
                "type": "provider_error",
                "param": None,
                "code": exc.kind,
            }
            yield _sse_event({"error": err, "fusion": info.body()})
            return
        final = chunk_body(rid, model, created, {}, finish)
        final["fusion"] = info.body()
        yield _sse_event(final)
        if chat.stream_options is not None and chat.stream_options.include_usage:
            usage_chunk = chunk_body(rid, model, created, {})
            usage_chunk["choices"] = []
            usage_chunk["usage"] = usage_body(info.usage)
            yield _sse_event(usage_chunk)
        yield "data: [DONE]\n\n"
    finally:
        await session.aclose()


def _document_schemas(app: FastAPI) -> None:
    """Put the request and error schemas into the OpenAPI document (the body is parsed by hand)."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = original()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        request_schema = ChatCompletionRequest.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, sub in request_schema.pop("$defs", {}).items():
            components[name] = sub
        components["ChatCompletionRequest"] = request_schema
        components["Error"] = {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["message", "type"],
                    "properties": {
                        "message": {"type": "string"},
                        "type": {"type": "string"},
                        "param": {"type": ["string", "null"]},
                        "code": {"type": ["string", "null"]},
                    },
                }
            },
        }
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
