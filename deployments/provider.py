"""Provider deployment: a thin Serve shell around one adapter.

Streams leave the replica coalesced (``coalesce.py``): what has arrived while the ingress was busy
goes out as one item.

Errors travel back to the ingress as values (a ``ProviderError`` returned, or yielded as the last
item of a stream) rather than as exceptions, so that they cross the process boundary unchanged
instead of wrapped in Ray's task errors.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections.abc import AsyncIterator

from ray import serve

from deployments.providers.base import Completion, ProviderAdapter, ProviderRequest, StreamDelta
from deployments.providers.coalesce import coalesce
from deployments.providers.pool import EndpointPool
from deployments.providers.registry import make_adapter
from serve_app.config import FusionConfig
from serve_app.errors import ProviderError
from serve_app.loop_lag import LoopLag

logger = logging.getLogger("ray.serve")

# Where a core's calls go, per endpoint: (name, base URL, "live" | "emulated", key digest). Two cores
# with equal summaries reach the same API with the same key; the digest (12 hex digits of the key's
# SHA-256) tells keys apart without showing them.
EndpointSummary = tuple[tuple[str, str, str, str], ...]


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()[:12]


def describe(summary: EndpointSummary) -> str:
    """A summary for a log line, without the key digests."""
    return ", ".join(f"{url} ({mode})" for _, url, mode, _ in summary)


class ProviderCore:
    """Plain-Python part: the adapter, and errors turned into values."""

    def __init__(self, provider: str, config: FusionConfig) -> None:
        spec = config.providers[provider]
        self.provider = provider
        self.coalesce = config.server.coalesce_streams
        self.adapter: ProviderAdapter
        if spec.local is not None:
            from deployments.providers.llama_engine import build_local_adapter

            self.endpoints: EndpointSummary = (
                (provider, spec.local.model, f"local:{spec.local.engine}", ""),
            )
            self.adapter = build_local_adapter(provider, spec.local)
            logger.info("provider %s: self-hosted %s on %s", provider, spec.local.model, spec.local.engine)
            return
        endpoints = spec.endpoints(config.emulator_url(), os.environ)
        self.endpoints = tuple(
            (
                name,
                ep.base_url or "the SDK's default URL",
                "emulated" if ep.emulated else "live",
                _digest(ep.api_key),
            )
            for name, ep in endpoints
        )
        endpoint = endpoints[0][1]
        if len(endpoints) == 1:
            self.adapter = make_adapter(provider, spec.kind, endpoint)
        else:
            members = [(name, make_adapter(provider, spec.kind, ep)) for name, ep in endpoints]
            self.adapter = EndpointPool(provider, members, config.health)
        where = f"the provider emulator at {endpoint.base_url}" if endpoint.emulated else "the live API"
        logger.info(
            "provider %s (%s): %s is %s; serving from %s",
            provider,
            spec.kind,
            spec.api_key_env,
            "set" if not endpoint.emulated else "not set",
            where,
        )

    async def complete(self, request: ProviderRequest) -> Completion | ProviderError:
        try:
            return await self.adapter.complete(request)
        except ProviderError as exc:
            return exc

    async def stream(self, request: ProviderRequest) -> AsyncIterator[StreamDelta | ProviderError]:
        try:
            stream = self.adapter.stream(request)
            async for delta in coalesce(stream) if self.coalesce else stream:
                yield delta
        except ProviderError as exc:
            yield exc


@serve.deployment
class ProviderDeployment:
    async def __init__(self, provider: str, config: FusionConfig) -> None:  # type: ignore[misc]  # Serve awaits it
        self.core = ProviderCore(provider, config)
        self.calls = 0
        # every answer (and stream item) carries how late this replica's loop ran in the last second
        # and how long the call had taken here: the ingress tells from them (a stream's first item)
        # how much of a slow call was the hop and this replica, not the provider, and then holds its
        # hedges back (serve_app/loop_lag.py)
        self.lag = LoopLag()
        self._lag_task = asyncio.get_running_loop().create_task(self.lag.run())

    async def complete(self, request: ProviderRequest) -> Completion | ProviderError:
        self.calls += 1
        began = time.monotonic()
        result = await self.core.complete(request)
        if isinstance(result, Completion):
            result.replica_lag_s, result.replica_s = self.lag.recent(), time.monotonic() - began
        return result

    async def stream(self, request: ProviderRequest) -> AsyncIterator[StreamDelta | ProviderError]:
        self.calls += 1
        began = time.monotonic()
        async for item in self.core.stream(request):
            if isinstance(item, StreamDelta):
                item.replica_lag_s, item.replica_s = self.lag.recent(), time.monotonic() - began
            yield item

    def endpoints(self) -> EndpointSummary:
        """Where this replica's calls go: an ingress replica takes the idle shortcut for this
        provider only while its own adapter reaches the same endpoints with the same key."""
        return self.core.endpoints

    def call_count(self) -> int:
        """Calls this replica has taken (observability and tests: with api_providers_when_idle an
        idle ingress replica makes the call itself, and this count does not move)."""
        return self.calls

    def check_health(self) -> None:
        """Serve's replica health check: the adapter exists (provider health is the router's concern)."""
        if self.core.adapter is None:
            raise RuntimeError("adapter not initialised")
