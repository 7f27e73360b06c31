"""Ingress deployment: binds the Gateway to Ray handles and serves the FastAPI app of ``api.py``."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

from ray import serve
from ray.exceptions import RayError
from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator

from deployments.providers.base import Completion, ProviderRequest, StreamDelta
from predictors.classification import Classification
from serve_app.api import create_api
from serve_app.config import FusionConfig
from serve_app.errors import ProviderConnectionError, ProviderError
from serve_app.gateway import Gateway
from serve_app.health import HealthRegistry

logger = logging.getLogger("ray.serve")


@serve.deployment
@serve.ingress()
class Ingress:
    async def __init__(  # type: ignore[misc]  # Serve awaits an async constructor
        self,
        config: FusionConfig,
        classifier: DeploymentHandle,
        providers: dict[str, DeploymentHandle],
        board: DeploymentHandle,
    ) -> None:
        self._config = config
        self._classifier = classifier
        self._providers = providers
        self._streams = {name: h.options(stream=True) for name, h in providers.items()}
        self.health = HealthRegistry(config.health)
        self.gateway = Gateway(config, self._classify, self._complete, self._stream, health=self.health)
        self._board = board
        self._epoch = 0
        self._sync_task = asyncio.get_running_loop().create_task(self._sync_health())
        emulator = config.emulator_url()
        self.modes = {
            name: spec.mode(os.environ) for name, spec in config.providers.items() if name in providers
        }
        for name, mode in self.modes.items():
            where = {"emulated": f"emulator at {emulator}", "live": "live API"}.get(mode, mode)
            logger.info("fusion-router: provider %s -> %s", name, where)

    def __serve_build_asgi_app__(self) -> Any:
        return create_api(self._config, self.gateway, self.modes, self._reset_board)

    async def _reset_board(self) -> None:
        await self._board.reset.remote()

    async def _sync_health(self) -> None:
        """Share this replica's call outcomes with the board and adopt the circuits it opened."""
        interval = self._config.health.sync_interval_s
        while True:
            await asyncio.sleep(interval)
            outcomes = self.health.drain()
            try:
                remote_open, epoch = await self._board.sync.remote(outcomes, self._epoch)
            except RayError as exc:  # the board restarts on its own; keep serving on local health
                logger.warning("health sync failed: %s", type(exc).__name__)
                continue
            if epoch != self._epoch:  # an operator reset every circuit
                self.gateway.reset()
                self._epoch = epoch
            self.health.adopt(remote_open)

    async def _classify(self, text: str) -> Classification:
        result: Classification = await self._classifier.classify.remote(text)
        return result

    async def _complete(self, provider: str, request: ProviderRequest) -> Completion:
        try:
            result = await self._providers[provider].complete.remote(request)
        except RayError as exc:
            raise _replica_error(provider, request, exc) from exc
        if isinstance(result, ProviderError):
            raise result
        completion: Completion = result
        return completion

    async def _stream(self, provider: str, request: ProviderRequest) -> AsyncIterator[StreamDelta]:
        generator: DeploymentResponseGenerator = self._streams[provider].stream.remote(request)  # type: ignore[assignment]
        finished = False
        try:
            async for item in generator:
                if isinstance(item, ProviderError):
                    raise item
                yield item
            finished = True
        except RayError as exc:
            raise _replica_error(provider, request, exc) from exc
        finally:
            if not finished:
                generator.cancel()


def _replica_error(provider: str, request: ProviderRequest, exc: RayError) -> ProviderConnectionError:
    return ProviderConnectionError(
        f"provider deployment unavailable ({type(exc).__name__})", provider=provider, model=request.model
    )
