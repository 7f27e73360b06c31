"""The emulator's HTTP surface.

POST /openai/v1/chat/completions                         OpenAI (and vLLM-style) chat completions
POST /anthropic/v1/messages                              Anthropic messages
POST /google/v1beta/models/{model}:generateContent       Gemini
POST /google/v1beta/models/{model}:streamGenerateContent Gemini streaming (?alt=sse)
GET  /healthz
GET/PUT/DELETE /admin/faults[/{model}]                   fault injection (FaultSpec)
PUT  /admin/profiles/{model}                             latency profile (LatencyProfile)
DELETE /admin/profiles                                   every profile back to the start-up ones
PUT  /admin/latency_scale                                {"scale": 0.0 .. } multiplies every delay
GET/DELETE /admin/stats                                  requests seen, the last sampling and the most
                                                         non-streamed answers in progress at once, per model
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from serve_app.bodies import decode_json
from serve_app.emulator.engine import (
    DEFAULT_PROFILES,
    FALLBACK_PROFILE,
    LatencyProfile,
    Pacer,
    PromptCache,
    compose_answer,
)
from serve_app.emulator.faults import FaultBook, FaultSpec
from serve_app.emulator.protocols import ANTHROPIC, GEMINI, OPENAI, BadRequest, Parsed, WireProtocol
from serve_app.errors import InvalidRequestError

ABORT_KEY = "fusion.emulator.abort"


class EmulatorState:
    def __init__(self, latency_scale: float = 1.0, profiles: dict[str, LatencyProfile] | None = None) -> None:
        self.faults = FaultBook()
        self.initial_profiles = dict(DEFAULT_PROFILES if profiles is None else profiles)
        self.profiles: dict[str, LatencyProfile] = dict(self.initial_profiles)
        self.latency_scale = latency_scale
        self.requests: Counter[str] = Counter()
        self.in_flight: Counter[str] = Counter()
        self.peak_in_flight: Counter[str] = Counter()  # the most answers in progress at once, per model
        # the last request's sampling parameters (reasoning effort or thinking budget too), per model
        self.sampling: dict[str, dict[str, float | str]] = {}
        self.prompt_cache = PromptCache()

    def profile(self, model: str) -> LatencyProfile:
        return self.profiles.get(model, FALLBACK_PROFILE)

    @contextmanager
    def answering(self, model: str) -> Iterator[None]:
        """Count an answer in progress (what a caller's parallel-request limit should bound)."""
        self.in_flight[model] += 1
        self.peak_in_flight[model] = max(self.peak_in_flight[model], self.in_flight[model])
        try:
            yield
        finally:
            self.in_flight[model] -= 1


class _Scale(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scale: float = Field(ge=0)


def _abort(request: Request) -> None:
    abort = request.scope.get(ABORT_KEY)
    if abort is not None:
        abort()


async def _handle(
    request: Request, proto: WireProtocol, model_from_path: str | None = None, stream_from_path: bool = False
) -> Response:
    state: EmulatorState = request.app.state.emulator
    try:
        body = decode_json(await request.body())  # strict, as the APIs are: no NaN, no lone surrogate
        parsed = proto.parse(body, model_from_path, stream_from_path)
    except InvalidRequestError as exc:
        return JSONResponse(proto.error_body(400, exc.message), status_code=400)
    except BadRequest as exc:
        return JSONResponse(proto.error_body(400, str(exc)), status_code=400)

    state.requests[parsed.model] += 1
    state.sampling[parsed.model] = parsed.sampling
    profile = state.profile(parsed.model)
    answer = compose_answer(
        parsed.model, parsed.prompt_text, profile=profile, max_tokens=parsed.max_tokens, stop=parsed.stop
    )
    answer.reasoning_tokens = max(answer.reasoning_tokens, parsed.thinking_tokens)
    state.prompt_cache.apply(answer, parsed.model, parsed.cache_prefix, parsed.explicit_cache)
    answer.use_tools(parsed.tools, parsed.model, parsed.prompt_text)
    pacer = Pacer(profile, state.latency_scale)
    fault = state.faults.draw(parsed.model)

    if fault is not None:
        if fault.kind == "http_error":
            headers = {"retry-after": f"{fault.retry_after:g}"} if fault.retry_after is not None else None
            msg = f"emulated {fault.status} for {parsed.model}"
            return JSONResponse(
                proto.error_body(fault.status, msg), status_code=fault.status, headers=headers
            )
        if fault.kind == "refuse" or (fault.kind == "cut" and not parsed.stream):
            _abort(request)
            return Response(status_code=502)  # never reaches the client: the connection is gone
        if fault.kind == "timeout" or (fault.kind == "stall" and not parsed.stream):
            await asyncio.sleep(fault.delay_s)

    if not parsed.stream:
        with state.answering(parsed.model):
            await pacer.until_done(answer.completion_tokens)
        if fault is not None and fault.kind == "malformed":
            return Response('{"id": "broken", "choices": [', media_type="application/json")
        return JSONResponse(proto.full_body(parsed, answer))

    stream_fault = fault if fault is not None and fault.kind in ("stall", "cut", "malformed") else None
    return StreamingResponse(
        _stream(request, proto, parsed, answer, pacer, stream_fault), media_type=proto.media_type
    )


async def _stream(
    request: Request, proto: WireProtocol, parsed: Parsed, answer: Any, pacer: Pacer, fault: FaultSpec | None
) -> AsyncIterator[str]:
    for frame in proto.stream_head(parsed, answer):
        yield frame
    if answer.tool_calls:
        await pacer.until_token(0)
        for frame in proto.stream_tool_calls(parsed, answer):
            yield frame
    for i, token in enumerate(answer.tokens):
        if fault is not None and i == fault.after_tokens:
            if await _strike(request, proto, fault):
                yield proto.malformed_frame()
                return
            if fault.kind == "cut":
                return
        await pacer.until_token(i)
        yield proto.stream_token(parsed, answer, i, token)
    if fault is not None and fault.after_tokens >= len(answer.tokens):
        if await _strike(request, proto, fault):
            yield proto.malformed_frame()
            return
        if fault.kind == "cut":
            return
    for frame in proto.stream_tail(parsed, answer):
        yield frame


async def _strike(request: Request, proto: WireProtocol, fault: FaultSpec) -> bool:
    """Apply a mid-stream fault; True when a malformed frame must be sent and the stream ended."""
    if fault.kind == "stall":
        await asyncio.sleep(fault.delay_s)
        return False
    if fault.kind == "cut":
        _abort(request)
        await asyncio.sleep(0)
        return False
    return fault.kind == "malformed"


async def openai_chat(request: Request) -> Response:
    return await _handle(request, OPENAI)


async def anthropic_messages(request: Request) -> Response:
    return await _handle(request, ANTHROPIC)


async def gemini(request: Request) -> Response:
    target: str = request.path_params["target"]
    model, _, method = target.rpartition(":")
    if method not in ("generateContent", "streamGenerateContent") or not model:
        return JSONResponse(GEMINI.error_body(404, f"unknown method {target}"), status_code=404)
    return await _handle(request, GEMINI, model, method == "streamGenerateContent")


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def get_faults(request: Request) -> Response:
    state: EmulatorState = request.app.state.emulator
    return JSONResponse({m: s.model_dump() for m, s in state.faults.snapshot().items()})


async def put_fault(request: Request) -> Response:
    state: EmulatorState = request.app.state.emulator
    try:
        spec = FaultSpec.model_validate_json(await request.body())
    except ValidationError as exc:
        return JSONResponse({"error": {"message": str(exc)}}, status_code=400)
    state.faults.set(request.path_params["model"], spec)
    return JSONResponse({"model": request.path_params["model"], "fault": spec.model_dump()})


async def delete_faults(request: Request) -> Response:
    state: EmulatorState = request.app.state.emulator
    state.faults.clear(request.path_params.get("model"))
    return JSONResponse({"cleared": request.path_params.get("model", "*all*")})


async def put_profile(request: Request) -> Response:
    state: EmulatorState = request.app.state.emulator
    try:
        profile = LatencyProfile.model_validate_json(await request.body())
    except ValidationError as exc:
        return JSONResponse({"error": {"message": str(exc)}}, status_code=400)
    state.profiles[request.path_params["model"]] = profile
    return JSONResponse(profile.model_dump())


async def reset_profiles(request: Request) -> Response:
    state: EmulatorState = request.app.state.emulator
    state.profiles = dict(state.initial_profiles)
    return JSONResponse({"profiles": len(state.profiles)})


async def put_scale(request: Request) -> Response:
    state: EmulatorState = request.app.state.emulator
    try:
        state.latency_scale = _Scale.model_validate_json(await request.body()).scale
    except ValidationError as exc:
        return JSONResponse({"error": {"message": str(exc)}}, status_code=400)
    return JSONResponse({"scale": state.latency_scale})


async def stats(request: Request) -> Response:
    state: EmulatorState = request.app.state.emulator
    if request.method == "DELETE":
        state.requests.clear()
        state.sampling.clear()
        state.peak_in_flight.clear()
    seen = {"requests": dict(state.requests), "sampling": state.sampling}
    return JSONResponse({**seen, "peak_in_flight": dict(state.peak_in_flight)})


ASGIApp = Callable[
    [MutableMapping[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
    Awaitable[None],
]


class _AbortableConnections:
    """Outer ASGI layer: gives handlers a way to reset the TCP connection (uvicorn's transport)."""

    def __init__(self, app: Starlette) -> None:
        self.app = app
        self.state = app.state

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            transport = getattr(getattr(send, "__self__", None), "transport", None)
            if transport is not None:
                scope[ABORT_KEY] = transport.abort
        await self.app(scope, receive, send)


def create_app(latency_scale: float = 1.0, profiles: dict[str, LatencyProfile] | None = None) -> Any:
    routes = [
        Route("/openai/v1/chat/completions", openai_chat, methods=["POST"]),
        Route("/anthropic/v1/messages", anthropic_messages, methods=["POST"]),
        Route("/google/{version}/models/{target:path}", gemini, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/admin/faults", get_faults, methods=["GET"]),
        Route("/admin/faults", delete_faults, methods=["DELETE"]),
        Route("/admin/faults/{model:path}", put_fault, methods=["PUT"]),
        Route("/admin/faults/{model:path}", delete_faults, methods=["DELETE"]),
        Route("/admin/profiles/{model:path}", put_profile, methods=["PUT"]),
        Route("/admin/profiles", reset_profiles, methods=["DELETE"]),
        Route("/admin/latency_scale", put_scale, methods=["PUT"]),
        Route("/admin/stats", stats, methods=["GET", "DELETE"]),
    ]
    app = Starlette(routes=routes)
    app.state.emulator = EmulatorState(latency_scale, profiles)
    return _AbortableConnections(app)
