"""The HTTP surface (FastAPI), built around a ``Gateway``; the ingress deployment serves it.

    POST /v1/chat/completions   OpenAI chat completions, streaming (SSE, ends with ``data: [DONE]``) or not
    GET  /v1/models             the routing policies and every configured model
    GET  /v1/router/stats       per model: rolling latency, time to first token, error rate,
                                availability, cost per request, quality score (from feedback)
    POST /v1/router/feedback    {"request_id", "score" in [0, 1]}: a client's score of an answer
    GET  /healthz               liveness, which providers are emulated, circuits, the idle shortcut
    POST /v1/router/circuits/reset   close every circuit (the admin key, where one is set)
    /v1/admin/keys, /v1/admin/keys/{key_id}, /v1/admin/budgets, /v1/admin/usage, /v1/admin/cache:
                                behind the admin key
    GET  /openapi.json, /docs   the OpenAPI document (``serve_app/openapi_doc.py``)

With keys in use (``serve_app/keys.py``) every /v1 route needs a valid client key; budgets are
reserved and settled around each chat request (``serve_app/accounting.py``); with the response
cache on, a repeated request is answered from it before routing (``serve_app/caching.py``).

Every error is OpenAI's envelope with the status of its class in ``serve_app.errors``; nothing
answers with a traceback.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from deployments.providers.base import Completion, StreamDelta
from serve_app.accounting import Accountant
from serve_app.admin import BODIES, add_router_routes
from serve_app.bodies import decode_json, read_body
from serve_app.caching import Cache, Lookup, ReplaySession, StreamRecorder, cached_completion, hit_info
from serve_app.config import FusionConfig
from serve_app.errors import (
    FusionError,
    InvalidRequestError,
    MethodNotAllowedError,
    ModelNotFoundError,
    NotFoundError,
    ProviderError,
    RateLimitError,
)
from serve_app.gateway import Gateway, StreamSession
from serve_app.keys import KeyRecord
from serve_app.metrics import MemoryBackend, Metrics
from serve_app.openapi_doc import (
    CHAT_COMPLETION,
    SSE_EVENT,
    allowed_methods,
    document_schemas,
    error_responses,
    json_body,
)
from serve_app.rate_limits import headers as rate_headers
from serve_app.response_cache import parse_cache_control
from serve_app.route_info import RouteInfo
from serve_app.routing import POLICIES
from serve_app.schemas import ChatCompletionRequest, chunk_body, completion_body, parse_request, usage_body

logger = logging.getLogger("fusion_router")


def error_response(exc: FusionError) -> JSONResponse:
    return JSONResponse(exc.envelope(), status_code=exc.http_status, headers=exc.headers())


def create_api(
    config: FusionConfig,
    gateway: Gateway,
    provider_modes: dict[str, str],
    reset_board: Callable[[], Awaitable[None]] | None = None,
    accountant: Accountant | None = None,
    metrics: Metrics | None = None,
    idle_shortcut: Collection[str] | None = None,
    cache: Cache | None = None,
) -> FastAPI:
    """The FastAPI application. ``provider_modes`` maps provider -> live, emulated or local:<engine>;
    ``reset_board`` also closes the circuits shared by all ingress replicas; without an
    ``accountant`` there are no keys, budgets, stats economics or feedback; ``idle_shortcut``: the
    providers this replica calls itself while idle (a live view, read by /healthz); ``cache``: the
    response cache, where ``cache.enabled``."""
    metrics = metrics or Metrics(MemoryBackend())
    app = FastAPI(
        title="Fusion Router", version="0.1.0", description="OpenAI-compatible multi-provider LLM router"
    )

    app.state.gateway, app.state.accountant, app.state.metrics = gateway, accountant, metrics
    if accountant is not None:  # the self-tuned targets the ledger publishes reach the routing policy
        gateway.required_quality = accountant.required_quality

    @app.exception_handler(FusionError)
    async def _fusion_error(request: Request, exc: FusionError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 405:
            response = error_response(
                MethodNotAllowedError(f"Method {request.method} is not allowed on {request.url.path}.")
            )
            response.headers["allow"] = ", ".join(allowed_methods(app, request.scope))  # RFC 9110
            return response
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
        body: dict[str, Any] = {
            "status": "ok",
            "providers": provider_modes,
            "circuits": gateway.health.states(),
        }
        if idle_shortcut is not None:
            body["idle_shortcut"] = sorted(idle_shortcut)
        return body

    @app.post("/v1/router/circuits/reset", responses=error_responses(401))
    async def reset_circuits(request: Request) -> dict[str, Any]:
        """Close every circuit breaker and refill the hedge budget (after an incident is over). An
        operator's action: it needs the admin key wherever one is set."""
        if accountant is not None and accountant.admin_enabled:
            accountant.check_admin(request.headers.get("authorization"), request.headers.get("x-api-key"))
        gateway.reset()
        if reset_board is not None:
            await reset_board()
        return {"status": "ok", "circuits": gateway.health.states()}

    def caller(request: Request) -> KeyRecord | None:
        if accountant is None:
            return None
        try:
            return accountant.authenticate(
                request.headers.get("authorization"), request.headers.get("x-api-key")
            )
        except FusionError as exc:
            metrics.refused(exc.error_code or "unauthorized")
            raise

    def finish(info: RouteInfo, key: KeyRecord | None, status: str, stream: bool) -> None:
        if accountant is not None:
            accountant.release_soon(info.request_id)  # when nothing awaited it (a stream left early)
            accountant.settle(info, key)
        seconds = time.monotonic() - info.started
        metrics.record_request(info, status, stream, seconds, key.team if key else None)

    add_router_routes(app, config, gateway, accountant, caller, cache)

    def model_cards(request: Request) -> list[dict[str, Any]]:
        """The model objects the caller's key may use: the policies, the models, the aliases."""
        key = caller(request)
        created = 1_700_000_000
        data = [
            {"id": p, "object": "model", "created": created, "owned_by": "fusion-router"} for p in POLICIES
        ]
        data += [
            {"id": name, "object": "model", "created": created, "owned_by": spec.provider}
            for name, spec in config.models.items()
            if key is None or key.allows(name)  # the models this key may use
        ]
        for alias, target in config.routing.aliases.items():
            if target in POLICIES or key is None or key.allows(target):
                owner = config.models[target].provider if target in config.models else "fusion-router"
                data.append({"id": alias, "object": "model", "created": created, "owned_by": owner})
        return data

    @app.get("/v1/models", responses=error_responses(401))
    async def list_models(request: Request) -> dict[str, Any]:
        return {"object": "list", "data": model_cards(request)}

    @app.get("/v1/models/{model:path}", responses=error_responses(401, 404))
    async def retrieve_model(model: str, request: Request) -> dict[str, Any]:
        """OpenAI's retrieve: one model object, or 404 ``model_not_found`` (also for a model the
        key may not use, as OpenAI answers for a model outside the organisation)."""
        for card in model_cards(request):
            if card["id"] == model:
                return card
        raise ModelNotFoundError(
            f"The model '{model}' does not exist or you do not have access to it.", param="model"
        )

    @app.post(
        "/v1/chat/completions",
        responses={
            200: {
                "description": "the completion; with stream: true, server-sent chunks ending with [DONE]",
                "content": {
                    "application/json": {"schema": CHAT_COMPLETION},
                    "text/event-stream": {"schema": SSE_EVENT},
                },
            },
            **error_responses(400, 401, 403, 404, 413, 429, 502, 503, 504),
        },
        openapi_extra={
            **json_body(ChatCompletionRequest),
            "parameters": [
                {
                    "name": "x-fusion-max-cost-usd",
                    "in": "header",
                    "required": False,
                    "description": "the request's cost limit in USD, as fusion.max_cost_usd (the lower wins)",
                    "schema": {"type": "string", "pattern": r"^[0-9]{0,7}(\.[0-9]{1,12})?$"},
                },
                {
                    "name": "cache-control",
                    "in": "header",
                    "required": False,
                    "description": "no-cache, no-store or max-age=N, for the response cache",
                    "schema": {"type": "string"},
                },
            ],
        },
    )
    async def chat_completions(request: Request) -> Response:
        arrived = time.monotonic()
        key = caller(request)
        request_id = f"chatcmpl-{uuid.uuid4().hex}"
        try:
            body = await read_body(request, config.server.max_body_bytes)
            chat = parse_request(decode_json(body))
            max_cost = _max_cost(chat, request.headers.get("x-fusion-max-cost-usd"))
            if chat.model in config.routing.aliases:  # the model or policy it stands for
                chat = chat.model_copy(update={"model": config.dealias(chat.model)})
            chat = _with_target(chat)
            allowed = key.models if key is not None else None
            gateway.permit(chat, allowed)
            rate = {}
            if accountant is not None:
                rate = rate_headers(await accountant.limit(key, chat, request_id))
            found: Lookup | None = None
            if cache is not None:  # after the rate limits (a hit is a request), before any routing
                control = parse_cache_control(request.headers.get("cache-control"))
                found = await cache.lookup(chat, key, control)
                metrics.cache_lookup(found.status)
            if found is not None and found.answer is not None:
                info = hit_info(request_id, found)
                metrics.cache_saved(found.answer.cost_usd, found.answer.model, key.team if key else None)
            else:
                pressure = accountant.under_pressure(key) if accountant is not None else False
                info = await gateway.plan(chat, request_id, budget_pressure=pressure, allowed=allowed)
                if found is not None:
                    info.cache = found.describe()
                if max_cost is not None:
                    chat = gateway.cap_cost(chat, info, max_cost)
                if accountant is not None:
                    began = time.monotonic()
                    chat = await accountant.admit(chat, info, key)
                    info.timings["admit_ms"] = round((time.monotonic() - began) * 1000, 3)
        except FusionError as exc:  # refused before any provider was called: nothing to settle
            if accountant is not None:
                await accountant.release(request_id)  # a slot it was leased before a later refusal
            limit = exc.limit if isinstance(exc, RateLimitError) else None
            metrics.refused(exc.error_code or "invalid_request", key.team if key else None, limit)
            raise
        except Exception:  # a fault of ours (the error handler answers 500): its slot back too
            if accountant is not None:
                await accountant.release(request_id)
            raise
        status, handed_over = "cancelled", False

        async def release() -> None:
            """Its parallel-request slots back, before the client sees the end of the answer."""
            if accountant is not None:
                await accountant.release(request_id)

        def keep(answer: Completion) -> None:
            if cache is not None and found is not None:
                cache.store(found, info, answer)

        hit = found.answer if found is not None else None
        try:
            if chat.stream:
                session = ReplaySession(info, hit) if hit else await gateway.open_stream(chat, info)
                handed_over = True  # the stream settles when it ends
                return StreamingResponse(
                    _sse(config, chat, session, lambda s: finish(info, key, s, True), release, keep),
                    media_type="text/event-stream",
                    headers={
                        **info.headers(),
                        **rate,
                        **_age(found),
                        "cache-control": "no-cache",
                        "x-accel-buffering": "no",
                    },
                )
            if hit is not None:
                result = cached_completion(hit)
            else:
                result = await gateway.complete(chat, info)
                keep(result)
            status = "ok"
        except FusionError as exc:
            status = exc.error_code or "error"
            raise
        finally:
            if not handed_over:
                await release()
                finish(info, key, status, chat.stream)
        info.timings["handler_ms"] = round((time.monotonic() - arrived) * 1000, 3)
        payload = completion_body(
            request_id,
            info.served_by.model if info.served_by else chat.model,
            result.text,
            result.finish_reason,
            result.usage,  # a hit: the tokens of the answer as first given (billed: fusion.usage)
            info.body(),
            result.tool_calls,
        )
        return JSONResponse(payload, headers={**info.headers(), **rate, **_age(found)})

    names = [*POLICIES, *config.models, *config.routing.aliases]
    document_schemas(app, [ChatCompletionRequest, *BODIES], chat_models=names)
    return app


def _with_target(chat: ChatCompletionRequest) -> ChatCompletionRequest:
    """``fusion.quality_target`` with model ``auto`` is the policy ``auto:<target>``."""
    target = chat.fusion.quality_target if chat.fusion else None
    if target is None:
        return chat
    if chat.model != "auto":
        raise InvalidRequestError(
            f"fusion.quality_target applies to model 'auto'; the model '{chat.model}' sets its own "
            "routing (a policy, or a model that bypasses routing).",
            param="fusion.quality_target",
        )
    digits = f"{target:.6f}".rstrip("0").rstrip(".") or "0"
    return chat.model_copy(update={"model": f"auto:{digits}"})


def _max_cost(chat: ChatCompletionRequest, header: str | None) -> float | None:
    """The request's cost limit: ``fusion.max_cost_usd`` or the header, the lower of the two."""
    limits = [chat.fusion.max_cost_usd] if chat.fusion and chat.fusion.max_cost_usd is not None else []
    if header is not None:
        try:
            value = float(header)
        except ValueError:
            value = float("nan")
        if not 0 < value <= 1_000_000:  # also refuses nan and inf
            raise InvalidRequestError(
                f"x-fusion-max-cost-usd must be a number of USD above 0, not {header[:40]!r}.",
                param="x-fusion-max-cost-usd",
            )
        limits.append(value)
    return min(limits) if limits else None


def _age(found: Lookup | None) -> dict[str, str]:
    """HTTP's Age header of an answer given from the cache."""
    if found is None or found.answer is None:
        return {}
    return {"age": str(max(0, int(time.time() - found.answer.created_at)))}


def _tool_deltas(delta: StreamDelta) -> list[dict[str, Any]]:
    """Tool-call pieces in OpenAI's chunk format: the first piece of a call has its id and name."""
    out = []
    for piece in delta.tool_calls:
        item: dict[str, Any] = {"index": piece.index, "function": {"arguments": piece.arguments}}
        if piece.id is not None:
            item["id"] = piece.id
            item["type"] = "function"
        if piece.name is not None:
            item["function"]["name"] = piece.name
        out.append(item)
    return out


def _sse_event(payload: Any) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


async def _sse(
    config: FusionConfig,
    chat: ChatCompletionRequest,
    session: StreamSession | ReplaySession,
    done: Callable[[str], None],
    release: Callable[[], Awaitable[None]],
    answered: Callable[[Completion], None] | None = None,
) -> AsyncIterator[str]:
    """The SSE body; ``done`` gets the stream's outcome (ok, an error code, or cancelled) once its
    cost is known, whatever ended it; ``release`` is awaited before the last event; ``answered``
    gets the whole answer of a stream that finished (for the response cache)."""
    info: RouteInfo = session.info
    model = info.served_by.model if info.served_by else chat.model
    created = int(time.time())
    rid = info.request_id
    finish = "stop"
    status = "cancelled"
    usage = info.usage
    recorder = StreamRecorder()
    try:
        yield _sse_event(chunk_body(rid, model, created, {"role": "assistant", "content": ""}))
        try:
            async for delta in session.deltas():
                recorder.add(delta)
                if delta.text:
                    yield _sse_event(chunk_body(rid, model, created, {"content": delta.text}))
                if delta.tool_calls:
                    yield _sse_event(chunk_body(rid, model, created, {"tool_calls": _tool_deltas(delta)}))
                if delta.finish_reason is not None:
                    finish = delta.finish_reason
                    usage = delta.usage or info.usage
        except ProviderError as exc:
            # Tokens already reached the client and the answer could not be continued: end with an
            # error event in OpenAI's format, never a silent truncation.
            status = exc.error_code or "provider_error"
            err = {
                "message": f"The stream from {exc.provider} broke after it started: {exc.message}",
                "type": "provider_error",
                "param": None,
                "code": exc.kind,
            }
            await release()
            yield _sse_event({"error": err, "fusion": info.body()})
            return
        final = chunk_body(rid, model, created, {}, finish)
        final["fusion"] = info.body()
        yield _sse_event(final)
        if chat.stream_options is not None and chat.stream_options.include_usage:
            usage_chunk = chunk_body(rid, model, created, {})
            usage_chunk["choices"] = []
            usage_chunk["usage"] = usage_body(usage)
            yield _sse_event(usage_chunk)
        status = "ok"
        if answered is not None and not isinstance(session, ReplaySession):
            answered(recorder.completion(finish, usage))
        await release()
        yield "data: [DONE]\n\n"
    finally:
        await session.aclose()  # charges what a stream left early produced
        done(status)
