"""Load balancing across several endpoints or keys of one provider.

Each call goes to the endpoint with the fewest outstanding requests, the lowest latency (an
exponentially weighted mean of successful calls) breaking ties; an endpoint whose own circuit is
open is passed over while another is available. The router's breakers work per (provider, model);
these per-endpoint breakers keep one bad key or region out of the provider's rotation.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from deployments.providers.base import Completion, ProviderAdapter, ProviderRequest, StreamDelta
from serve_app.errors import ProviderBadRequestError, ProviderError
from serve_app.health import BreakerConfig, CircuitBreaker


@dataclass
class Member:
    name: str
    adapter: ProviderAdapter
    breaker: CircuitBreaker
    outstanding: int = 0
    calls: int = field(default=0)


class EndpointPool:
    """A ``ProviderAdapter`` over several adapters of the same provider."""

    def __init__(
        self, provider: str, members: list[tuple[str, ProviderAdapter]], breaker: BreakerConfig | None = None
    ) -> None:
        config = breaker or BreakerConfig()
        self.provider = provider
        self.members = [Member(name, adapter, CircuitBreaker(config)) for name, adapter in members]

    def pick(self) -> Member:
        now = time.monotonic()
        healthy = [m for m in self.members if m.breaker.available(now)] or self.members
        best = min(healthy, key=lambda m: (m.outstanding, m.breaker.latency_ewma_s or 0.0, m.calls))
        best.breaker.allow(now)
        return best

    def _done(self, member: Member, started: float, error: ProviderError | None) -> None:
        member.outstanding -= 1
        ok = error is None or isinstance(
            error, ProviderBadRequestError
        )  # the request's fault, not the endpoint's
        member.breaker.record(ok, time.monotonic() - started, time.monotonic())

    async def complete(self, request: ProviderRequest) -> Completion:
        member = self.pick()
        member.outstanding += 1
        member.calls += 1
        started = time.monotonic()
        try:
            result = await member.adapter.complete(request)
        except ProviderError as exc:
            self._done(member, started, exc)
            raise
        self._done(member, started, None)
        return result

    async def stream(self, request: ProviderRequest) -> AsyncIterator[StreamDelta]:
        member = self.pick()
        member.outstanding += 1
        member.calls += 1
        started = time.monotonic()
        error: ProviderError | None = None
        try:
            async for delta in member.adapter.stream(request):
                yield delta
        except ProviderError as exc:
            error = exc
            raise
        finally:
            self._done(member, started, error)

    async def aclose(self) -> None:
        for m in self.members:
            await m.adapter.aclose()
