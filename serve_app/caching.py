"""The ingress's side of the response cache (``serve_app/response_cache.py``): look a request up
before it is routed, give a hit back as JSON or as a stream, store a fresh answer off the
request path.

A lookup is one call to the ResponseCache actor, made after the key's rate limits (a hit counts
as a request like any other) and before classification and the budget hold: a hit calls no
classifier and no provider, holds no budget and is settled at no cost, as model ``<model>``,
provider ``cache`` and policy ``cache`` in the ledger and the metrics. The cache never fails a
request: a lookup that errs or takes longer than ``cache.lookup_timeout_s`` is a miss, a store
that fails is logged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass
from typing import Any, Protocol

from deployments.providers.base import Completion, StreamDelta, ToolCall, ToolCallDelta, Usage
from deployments.providers.coalesce import merge_tool_calls
from serve_app.keys import KeyRecord
from serve_app.response_cache import (
    CacheConfig,
    CacheControl,
    CachedAnswer,
    ResponseCache,
    cache_key,
)
from serve_app.route_info import RouteInfo
from serve_app.routing import Candidate, RoutePlan
from serve_app.schemas import ChatCompletionRequest

logger = logging.getLogger("fusion_router")

CACHE_PROVIDER = "cache"  # the provider and policy a hit is recorded under


class CacheClient(Protocol):
    async def get(self, key: bytes, max_age_s: float | None) -> CachedAnswer | None: ...
    async def put(self, key: bytes, scope: str, answer: CachedAnswer) -> bool: ...
    async def stats(self) -> dict[str, Any]: ...
    async def clear(self, scope: str | None) -> int: ...


class LocalCacheClient:
    """The cache in this process (unit tests, and the actor's own methods)."""

    def __init__(self, cache: ResponseCache) -> None:
        self.cache = cache

    async def get(self, key: bytes, max_age_s: float | None) -> CachedAnswer | None:
        return self.cache.get(key, max_age_s)

    async def put(self, key: bytes, scope: str, answer: CachedAnswer) -> bool:
        return self.cache.put(key, scope, answer)

    async def stats(self) -> dict[str, Any]:
        return self.cache.stats()

    async def clear(self, scope: str | None) -> int:
        return self.cache.clear(scope)


@dataclass
class Lookup:
    """One request's cache lookup: ``status`` hit, miss, bypass (its Cache-Control said so) or
    error (the cache did not answer in time; the request goes on as a miss)."""

    status: str
    key: bytes
    scope: str
    control: CacheControl
    answer: CachedAnswer | None = None

    def describe(self) -> dict[str, Any]:
        """The ``cache`` object of the request's ``fusion`` body."""
        out: dict[str, Any] = {"status": self.status}
        if self.answer is not None:
            out["age_s"] = round(time.time() - self.answer.created_at, 3)
            out["request_id"] = self.answer.request_id
            out["provider"] = self.answer.provider
            out["cost_usd"] = self.answer.cost_usd
        return out


class Cache:
    def __init__(
        self, settings: CacheConfig, client: CacheClient, models: Collection[str] | None = None
    ) -> None:
        """``models``: the configured models (None: any); an answer by another one (a model the
        configuration no longer has) is not given again."""
        self.settings = settings
        self.client = client
        self.models = None if models is None else frozenset(models)
        self._stores: set[asyncio.Task[Any]] = set()
        self._failures = 0

    def scope(self, key: KeyRecord | None) -> str:
        if key is None or self.settings.scope == "global":
            return "global"
        return f"team:{key.team}" if self.settings.scope == "team" else f"key:{key.key_id}"

    async def lookup(
        self, chat: ChatCompletionRequest, key: KeyRecord | None, control: CacheControl
    ) -> Lookup:
        """The request's entry, when it may be answered from one; never raises."""
        scope = self.scope(key)
        found = Lookup("bypass", cache_key(chat, scope), scope, control)
        if not control.read:
            return found
        try:
            answer = await asyncio.wait_for(
                self.client.get(found.key, control.max_age_s), timeout=self.settings.lookup_timeout_s
            )
        except Exception as exc:  # a timeout, or the actor restarting: a miss
            self._warn("lookup", exc)
            found.status = "error"
            return found
        if answer is not None and key is not None and not key.allows(answer.model):
            answer = None  # a team's or everyone's answer by a model this key may not use
        if answer is not None and self.models is not None and answer.model not in self.models:
            answer = None
        found.status, found.answer = ("hit", answer) if answer is not None else ("miss", None)
        return found

    def store(self, found: Lookup, info: RouteInfo, answer: Completion) -> None:
        """Keep a provider's answer for the next same request, off the request path."""
        if not found.control.write or info.served_by is None or info.continuations:
            return  # a stream continued on another model is not stored: two models wrote it
        served = info.served_by
        entry = CachedAnswer(
            request_id=info.request_id,
            model=served.model,
            provider=served.provider,
            provider_model=info.served_model or served.provider_model,
            text=answer.text,
            finish_reason=answer.finish_reason,
            usage=dict(vars(answer.usage)),
            tool_calls=[{"id": c.id, "name": c.name, "arguments": c.arguments} for c in answer.tool_calls],
            task_type=info.plan.task_type,
            cost_usd=info.cost_usd,
        )
        task = asyncio.get_running_loop().create_task(self._put(found, entry))
        self._stores.add(task)
        task.add_done_callback(self._stores.discard)

    async def _put(self, found: Lookup, entry: CachedAnswer) -> None:
        try:
            await self.client.put(found.key, found.scope, entry)
        except Exception as exc:
            self._warn("store", exc)

    async def drain(self) -> None:
        """Wait for the stores in flight (tests, and a replica stopping)."""
        while self._stores:
            await asyncio.gather(*list(self._stores), return_exceptions=True)

    def _warn(self, what: str, exc: BaseException) -> None:
        self._failures += 1
        if self._failures in (1, 10, 100) or self._failures % 1000 == 0:
            logger.warning("response cache %s failed %d times (%s)", what, self._failures, type(exc).__name__)


def hit_info(request_id: str, found: Lookup) -> RouteInfo:
    """What the router did for a hit: served by the cache, at no cost."""
    answer = found.answer
    assert answer is not None
    candidate = Candidate(answer.model, CACHE_PROVIDER, answer.provider_model, CACHE_PROVIDER)
    plan = RoutePlan(CACHE_PROVIDER, (candidate,), answer.task_type, None)
    info = RouteInfo(request_id, plan, None, served_by=candidate)  # no candidates: nothing was routed
    info.served_model = answer.provider_model
    info.cost_usd = 0.0
    info.cache = found.describe()
    return info


def cached_completion(answer: CachedAnswer) -> Completion:
    """The stored answer as a provider's ``Completion`` (its usage: the first answer's tokens)."""
    return Completion(
        text=answer.text,
        finish_reason=answer.finish_reason,  # type: ignore[arg-type]  # one of FinishReason, as stored
        usage=Usage(**answer.usage),
        provider_model=answer.provider_model,
        tool_calls=[ToolCall(c["id"], c["name"], c["arguments"]) for c in answer.tool_calls],
    )


class StreamRecorder:
    """Assembles a stream's answer as it is sent (text, tool calls), for the cache: its deltas
    joined as the stream coalescer joins them (``merge_tool_calls``)."""

    def __init__(self) -> None:
        self.deltas: list[StreamDelta] = []

    def add(self, delta: StreamDelta) -> None:
        if delta.text or delta.tool_calls:
            self.deltas.append(delta)

    def completion(self, finish_reason: str, usage: Usage) -> Completion:
        calls = [ToolCall(c.id or "", c.name or "", c.arguments) for c in merge_tool_calls(self.deltas)]
        return Completion(
            text="".join(d.text for d in self.deltas),
            finish_reason=finish_reason,  # type: ignore[arg-type]
            usage=usage,
            tool_calls=calls,
        )


class ReplaySession:
    """A hit given as a stream: what ``api._sse`` reads from a live ``StreamSession``, from the
    stored answer (its text in one chunk, each tool call in one, then the finish)."""

    def __init__(self, info: RouteInfo, answer: CachedAnswer) -> None:
        self.info = info
        self.answer = answer

    async def deltas(self) -> AsyncIterator[StreamDelta]:
        answer = self.answer
        if answer.text:
            yield StreamDelta(text=answer.text)
        for index, call in enumerate(answer.tool_calls):
            yield StreamDelta(tool_calls=[ToolCallDelta(index, call["id"], call["name"], call["arguments"])])
        yield StreamDelta(finish_reason=answer.finish_reason, usage=Usage(**answer.usage))  # type: ignore[arg-type]

    async def aclose(self) -> None:
        return None
