"""The request path's core: classify, plan, call candidates in order, account. Plain Python, no Ray.

The ingress deployment builds a ``Gateway`` around three callables (classify, call a provider,
stream from a provider) that go through Ray handles; unit tests build one around in-process
adapters. Fallback rule: a candidate that fails before anything was sent to the client is
skipped for the next one; a request the provider rejects as invalid (400/404/422) is not
retried elsewhere, since every candidate would reject it. One deadline covers all attempts.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from deployments.providers.base import Completion, ProviderRequest, StreamDelta, Usage
from predictors.classification import Classification
from serve_app.config import FusionConfig
from serve_app.errors import (
    Attempt,
    NoProviderAvailableError,
    ProviderBadRequestError,
    ProviderError,
    ProviderStreamError,
    ProviderTimeoutError,
)
from serve_app.pricing import call_cost_usd
from serve_app.routing import Candidate, RoutePlan, direct_plan, is_routed, plan_route
from serve_app.schemas import ChatCompletionRequest

Classify = Callable[[str], Awaitable[Classification]]
CallProvider = Callable[[str, ProviderRequest], Awaitable[Completion]]
StreamProvider = Callable[[str, ProviderRequest], AsyncIterator[StreamDelta]]


@dataclass
class RouteInfo:
    """What the router did for one request; rendered as the ``fusion`` object and x-fusion-* headers."""

    request_id: str
    plan: RoutePlan
    classification: Classification | None
    attempts: list[Attempt] = field(default_factory=list)
    served_by: Candidate | None = None
    usage: Usage | None = None
    cost_usd: float | None = None
    served_model: str | None = None  # the model the provider says answered, when it says so
    started: float = field(default_factory=time.monotonic)

    @property
    def fallbacks(self) -> int:
        return sum(1 for a in self.attempts if a.error is not None)

    def settle(self, config: FusionConfig, usage: Usage | None) -> None:
        self.usage = usage
        if usage is not None and self.served_by is not None:
            self.cost_usd = call_cost_usd(config, self.served_by.model, usage)

    def body(self) -> dict[str, Any]:
        served = self.served_by
        c = self.classification
        return {
            "request_id": self.request_id,
            "model": served.model if served else None,
            "provider": served.provider if served else None,
            "provider_model": self.served_model or (served.provider_model if served else None),
            "slot": served.slot if served else None,
            "policy": self.plan.policy,
            "task_type": self.plan.task_type,
            "complexity": self.plan.complexity,
            "task_probabilities": c.probabilities if c else None,
            "candidates": [x.model for x in self.plan.candidates],
            "fallbacks": [
                {"provider": a.provider, "model": a.model, "error": a.error, "status": a.status}
                for a in self.attempts
                if a.error is not None
            ],
            "cost_usd": self.cost_usd,
            "latency_ms": round((time.monotonic() - self.started) * 1000, 2),
        }

    def headers(self) -> dict[str, str]:
        served = self.served_by
        out = {
            "x-fusion-request-id": self.request_id,
            "x-fusion-policy": self.plan.policy,
            "x-fusion-fallbacks": str(self.fallbacks),
        }
        if served is not None:
            out["x-fusion-model"] = served.model
            out["x-fusion-provider"] = served.provider
        if self.plan.task_type is not None:
            out["x-fusion-task-type"] = self.plan.task_type
        if self.plan.complexity is not None:
            out["x-fusion-complexity"] = f"{self.plan.complexity:.3f}"
        if self.fallbacks:
            out["x-fusion-attempts"] = ", ".join(a.describe() for a in self.attempts)
        if self.cost_usd is not None:
            out["x-fusion-cost-usd"] = f"{self.cost_usd:.8f}"
        return out


@dataclass
class StreamSession:
    """A stream whose first token has arrived; ``deltas()`` replays it and continues."""

    info: RouteInfo
    _first: list[StreamDelta]
    _rest: AsyncIterator[StreamDelta]

    async def deltas(self) -> AsyncIterator[StreamDelta]:
        for delta in self._first:
            yield delta
        async for delta in self._rest:
            yield delta

    async def aclose(self) -> None:
        closer = getattr(self._rest, "aclose", None)
        if closer is not None:
            await closer()


class Gateway:
    def __init__(
        self, config: FusionConfig, classify: Classify, call: CallProvider, stream: StreamProvider
    ) -> None:
        self.config = config
        self._classify = classify
        self._call = call
        self._stream = stream

    async def plan(self, request: ChatCompletionRequest, request_id: str) -> RouteInfo:
        if not is_routed(request.model):
            return RouteInfo(request_id, direct_plan(request.model, self.config), None)
        classification = await self._classify(request.routing_text())
        return RouteInfo(request_id, plan_route(classification, request.model, self.config), classification)

    def _deadline(self) -> float:
        return time.monotonic() + self.config.server.request_timeout_s

    async def complete(self, request: ChatCompletionRequest, info: RouteInfo) -> Completion:
        deadline = self._deadline()
        for candidate in info.plan.candidates:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                result = await asyncio.wait_for(
                    self._call(candidate.provider, request.to_provider_request(candidate.provider_model)),
                    timeout=remaining,
                )
            except TimeoutError:
                info.attempts.append(_failed(candidate, _timeout(candidate, "request deadline reached")))
                break
            except ProviderError as exc:
                info.attempts.append(_failed(candidate, exc))
                if isinstance(exc, ProviderBadRequestError):
                    raise
                continue
            info.served_by = candidate
            info.served_model = result.provider_model or None
            info.attempts.append(Attempt(candidate.provider, candidate.model))
            info.settle(self.config, result.usage)
            return result
        raise _exhausted(info.attempts)

    async def open_stream(self, request: ChatCompletionRequest, info: RouteInfo) -> StreamSession:
        """Start a stream on the first candidate that yields a token before its timeout."""
        deadline = self._deadline()
        for candidate in info.plan.candidates:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            stream = self._stream(candidate.provider, request.to_provider_request(candidate.provider_model))
            first: list[StreamDelta] = []
            try:
                wait = min(remaining, self.config.routing.first_token_timeout_s)
                await asyncio.wait_for(_until_content(stream, first, candidate), timeout=wait)
            except TimeoutError:
                await _close(stream)
                info.attempts.append(_failed(candidate, _timeout(candidate, "no first token in time")))
                continue
            except ProviderError as exc:
                await _close(stream)
                info.attempts.append(_failed(candidate, exc))
                if isinstance(exc, ProviderBadRequestError):
                    raise
                continue
            info.served_by = candidate
            info.attempts.append(Attempt(candidate.provider, candidate.model))
            return StreamSession(info, first, stream)
        raise _exhausted(info.attempts)


async def _until_content(
    stream: AsyncIterator[StreamDelta], into: list[StreamDelta], candidate: Candidate
) -> None:
    """Pull deltas until one carries text or a finish reason (an empty answer is still an answer)."""
    async for delta in stream:
        into.append(delta)
        if delta.text or delta.finish_reason is not None:
            return
    raise ProviderStreamError(
        "stream ended before any token", provider=candidate.provider, model=candidate.model
    )


async def _close(stream: AsyncIterator[StreamDelta]) -> None:
    closer = getattr(stream, "aclose", None)
    if closer is not None:
        try:
            await closer()
        except Exception:  # closing a broken stream must not hide the error that broke it
            pass


def _timeout(candidate: Candidate, why: str) -> ProviderTimeoutError:
    return ProviderTimeoutError(why, provider=candidate.provider, model=candidate.model)


def _failed(candidate: Candidate, exc: ProviderError) -> Attempt:
    return Attempt(candidate.provider, candidate.model, exc.kind, exc.status_code, exc.message)


def _exhausted(attempts: list[Attempt]) -> NoProviderAvailableError:
    kinds = {a.error for a in attempts if a.error}
    if kinds and kinds <= {"timeout"}:
        status = 504
    elif kinds & {"rate_limited", "overloaded"} or not attempts:
        status = 503
    else:
        status = 502
    return NoProviderAvailableError(attempts, status=status)
