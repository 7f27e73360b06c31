"""Ingress deployment: binds the Gateway to Ray handles and serves the FastAPI app of ``api.py``."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from ray import serve
from ray.exceptions import RayError, RayTaskError
from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator

from deployments.provider import EndpointSummary, ProviderCore, describe
from deployments.providers.base import Completion, ProviderRequest, StreamDelta
from predictors.classification import Classification, TaskClassifier
from serve_app.accounting import Accountant, LedgerClient
from serve_app.api import create_api
from serve_app.caching import Cache
from serve_app.config import FusionConfig
from serve_app.demand import ArrivalCounter
from serve_app.errors import ProviderConnectionError, ProviderError
from serve_app.gateway import Gateway
from serve_app.health import HealthRegistry
from serve_app.in_flight import InFlight, InFlightCount
from serve_app.loop_lag import Lateness, LoopLag
from serve_app.metrics import Metrics, RayBackend
from serve_app.response_cache import CacheConfig, CachedAnswer

logger = logging.getLogger("ray.serve")

# How often an ingress replica asks each provider deployment where its calls go (the idle shortcut
# stays off for a provider until they agree); until a deployment has answered once, every second.
ENDPOINT_CHECK_S = 60.0


@serve.deployment
@serve.ingress()
class Ingress:
    async def __init__(  # type: ignore[misc]  # Serve awaits an async constructor
        self,
        config: FusionConfig,
        classifier: DeploymentHandle | None,
        providers: dict[str, DeploymentHandle],
        board: DeploymentHandle,
    ) -> None:
        self._config = config
        self._classifier = classifier
        self._local_classifier: TaskClassifier | None = None
        self._requests = InFlightCount()
        if config.deployments.classifier.placement != "deployment":  # ingress, or adaptive
            from deployments.classifier import load_classifier, preload_in_background

            options = config.deployments.classifier
            self._local_classifier = load_classifier(options.engine, options.ingress_threads)
            preload_in_background(self._local_classifier)
        self._providers = providers
        self._streams = {name: h.options(stream=True) for name, h in providers.items()}
        # providers whose adapters run here, no Ray hop: always (api_providers_in_ingress) or while
        # this replica has room for the call (api_providers_when_idle, api_providers_local_calls)
        d = config.deployments
        self._cores = {name: ProviderCore(name, config) for name in d.ingress_adapters(config)}
        self._always_here = set(d.in_ingress(config))
        # the when-idle providers whose deployment reaches the same endpoints with the same key as
        # this replica (a node without a provider's key would answer from the emulator)
        self._agreed: set[str] = set()
        self._local_calls = 0  # calls made by this replica's own adapters right now
        self._local_limit = d.api_providers_local_calls
        self._verdicts: dict[str, EndpointSummary] = {}
        self._lag = LoopLag()
        self._lateness = Lateness(self._lag)  # and the provider replicas', stamped on their answers
        self.health = HealthRegistry(config.health, lateness=self._lateness)
        self.gateway = Gateway(
            config,
            self._classify,
            self._complete,
            self._stream,
            health=self.health,
            loop_lag=self._lateness,
        )
        self._board = board
        self._epoch = 0
        loop = asyncio.get_running_loop()
        self._lag_task = loop.create_task(self._lag.run())
        self._sync_task = loop.create_task(self._sync_health())
        self._stats_task = loop.create_task(self._fetch_stats())
        self._endpoints_task = loop.create_task(self._check_endpoints())
        self._ledger = _ActorLedger(serve.get_replica_context().app_name, config)
        self.accountant = Accountant(config, _as_client(self._ledger))
        await self._first_directory()
        self._settle_task = loop.create_task(self.accountant.run_settlements())
        self._refresh_task = loop.create_task(self.accountant.run_refresh())
        self.metrics = Metrics(RayBackend())
        self.cache: Cache | None = None
        if config.cache.enabled:
            actor = _ActorCache(serve.get_replica_context().app_name, config.cache)
            await asyncio.wait_for(actor.configure(), timeout=60)
            self.cache = Cache(config.cache, actor, config.models)
        self._arrivals: ArrivalCounter | None = None
        self._forecaster: Any = None
        if config.deployments.predictive():
            self._arrivals = ArrivalCounter()
            self._app_name = serve.get_replica_context().app_name
            self._forecaster = self._forecaster_actor()
            self._report_task = asyncio.get_running_loop().create_task(self._report_arrivals())
        emulator = config.emulator_url()
        self.modes = {
            name: spec.mode(os.environ)
            for name, spec in config.providers.items()
            if name in providers or name in self._cores
        }
        for name, mode in self.modes.items():
            where = {"emulated": f"emulator at {emulator}", "live": "live API"}.get(mode, mode)
            logger.info("fusion-router: provider %s -> %s", name, where)

    def __serve_build_asgi_app__(self) -> Any:
        app = create_api(
            self._config,
            self.gateway,
            self.modes,
            self._reset_board,
            self.accountant,
            self.metrics,
            idle_shortcut=self._agreed,
            cache=self.cache,
        )
        app.add_middleware(InFlight, counter=self._requests)
        return app

    async def _first_directory(self) -> None:
        """Give the ledger this deployment's budgets and read the key table before serving: until
        then this replica could not tell whether keys are required."""
        deadline = time.monotonic() + 60
        while True:
            try:
                await asyncio.wait_for(self._ledger.configure(), timeout=10)
                await asyncio.wait_for(self.accountant.refresh(), timeout=10)
                return
            except (RayError, TimeoutError) as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the budget ledger did not answer for 60 s (its SQLite file: "
                        f"{self._config.ledger.path}; is it writable on the head node?)"
                    ) from exc
                await asyncio.sleep(0.5)

    async def _fetch_stats(self) -> None:
        """The board's rolling per-model statistics, for /v1/router/stats and the routing policy."""
        while True:
            await asyncio.sleep(self._config.stats.publish_interval_s)
            try:
                self.gateway.stats = await self._board.stats.remote()
            except RayError as exc:
                logger.warning("stats fetch failed: %s", type(exc).__name__)

    async def __del__(self) -> None:
        await self.accountant.flush()  # settlements still queued when the replica stops
        if self.cache is not None:
            await self.cache.drain()  # answers still being stored

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

    async def _check_endpoints(self) -> None:
        while True:
            pending = await self._check_endpoints_once()
            await asyncio.sleep(1.0 if pending else ENDPOINT_CHECK_S)

    async def _check_endpoints_once(self) -> bool:
        """Ask each when-idle provider's deployment where its calls go and allow the idle shortcut
        only where this replica's adapter agrees. True while a deployment has never answered."""
        pending = False
        for name, core in self._cores.items():
            if name in self._always_here or name not in self._providers:
                continue
            try:
                answer = await asyncio.wait_for(self._providers[name].endpoints.remote(), timeout=10)
            except (RayError, TimeoutError) as exc:  # keep the last verdict
                pending = pending or name not in self._verdicts
                logger.info("provider %s: endpoint check failed (%s)", name, type(exc).__name__)
                continue
            theirs: EndpointSummary = tuple(tuple(e) for e in answer)  # lists, if serialized so
            changed = self._verdicts.get(name) != theirs
            self._verdicts[name] = theirs
            if theirs == core.endpoints:
                self._agreed.add(name)
                if changed:
                    logger.info("provider %s: idle calls made here (%s)", name, describe(theirs))
                continue
            self._agreed.discard(name)
            if changed:
                keys = " with another key" if describe(theirs) == describe(core.endpoints) else ""
                logger.warning(
                    "provider %s: this ingress replica would call %s%s, its deployment calls %s; every "
                    "call goes through the deployment (set %s alike on every node)",
                    name,
                    describe(core.endpoints),
                    keys,
                    describe(theirs),
                    self._config.providers[name].api_key_env,
                )
        return pending

    def _forecaster_actor(self) -> Any:
        """Find the application's DemandForecaster, or create it (this replica then owns it)."""
        from deployments.forecaster import get_or_create

        d, fc = self._config.deployments, self._config.forecast
        predictive = d.predictive()
        shapes = {}
        for name, options in d.provider_overrides.items():
            deployment = f"Provider_{name}"
            if deployment in predictive and options.num_gpus > 0 and options.autoscaling is not None:
                shape = {"CPU": options.num_cpus, "GPU": options.num_gpus}
                a = options.autoscaling
                shapes[deployment] = (shape, a.target_ongoing_requests, a.max_replicas)
        return get_or_create(
            self._app_name,
            step_s=fc.step_s,
            horizons_s={dep: a.cold_start_s + fc.decision_lag_s for dep, a in predictive.items()},
            season_s=fc.season_s,
            alpha=fc.alpha,
            quantile=fc.quantile,
            node_shapes=shapes,
            cycle_s=fc.cycle_s,
        )

    async def _report_arrivals(self) -> None:
        """Send this replica's arrival counts to the forecaster, batched, off the request path."""
        assert self._arrivals is not None
        while True:
            await asyncio.sleep(self._config.forecast.report_interval_s)
            report = self._arrivals.drain()
            if not report:
                continue
            try:
                await asyncio.wait_for(self._forecaster.record.remote(report, time.time()), timeout=5)
            except (RayError, TimeoutError) as exc:  # its owner replica is gone: find or make another
                logger.warning("demand report failed (%s); reconnecting", type(exc).__name__)
                self._forecaster = self._forecaster_actor()

    def _count(self, provider: str, request: ProviderRequest, started: float) -> None:
        if self._arrivals is not None:
            tokens = sum(len(m.content) for m in request.messages) // 4
            self._arrivals.add(f"Provider_{provider}", tokens, time.monotonic() - started)

    async def _classify(self, text: str, quality: bool) -> Classification:
        local = self._local_classifier
        if local is not None and self._classifier is None:  # placement: ingress
            if not quality:  # a table lookup and two dot products: well under a millisecond
                return local.classify_many([text])[0]
            # off the event loop: a MiniLM pass takes milliseconds, and other requests are served
            found = await asyncio.to_thread(local.classify_many, [text], True)
            return found[0]
        if local is not None and (not quality or self._requests.alone()):
            # placement: adaptive. The table and heads take well under a millisecond, less than the
            # hop, so they run here, on the loop; so does the MiniLM pass for the quality heads when
            # this replica serves no other request, as nothing else is waiting for it (the hop and a
            # thread hand-off each cost more than they save then; benchmarks/README.md). A request
            # that needs that pass while others are served goes to the batched deployment.
            return local.classify_many([text], quality)[0]
        assert self._classifier is not None
        result: Classification = await self._classifier.classify.remote((text, quality))
        return result

    def _core(self, provider: str) -> ProviderCore | None:
        """This replica's adapter for ``provider`` when the call is made here (no Ray hop): always
        under api_providers_in_ingress, and under api_providers_when_idle while fewer than
        api_providers_local_calls calls are made here and the provider's deployment reaches the same
        endpoints with the same key (``_check_endpoints``); None: through the provider's deployment.
        The caller counts the call in ``_local_calls`` before its first await."""
        core = self._cores.get(provider)
        if core is not None and provider in self._always_here:
            return core
        if core is not None and provider in self._agreed and self._local_calls < self._local_limit:
            return core
        return None

    async def _complete(self, provider: str, request: ProviderRequest) -> Completion:
        started = time.monotonic()
        try:
            core = self._core(provider)
            if core is not None:
                self._local_calls += 1
                try:
                    result = await core.complete(request)
                finally:
                    self._local_calls -= 1
            else:
                result = await self._providers[provider].complete.remote(request)
                if isinstance(result, Completion):
                    self._lateness.report(provider, result, time.monotonic() - started)
        except RayError as exc:
            raise _replica_error(provider, request, exc) from exc
        finally:
            self._count(provider, request, started)
        if isinstance(result, ProviderError):
            raise result
        completion: Completion = result
        return completion

    async def _stream(self, provider: str, request: ProviderRequest) -> AsyncIterator[StreamDelta]:
        core = self._core(provider)
        if core is not None:
            started = time.monotonic()
            self._local_calls += 1
            try:
                async for local in core.stream(request):
                    if isinstance(local, ProviderError):
                        raise local
                    yield local
            finally:
                self._local_calls -= 1
                self._count(provider, request, started)
            return
        generator: DeploymentResponseGenerator = self._streams[provider].stream.remote(request)  # type: ignore[assignment]
        started = time.monotonic()
        finished = reported = False
        try:
            async for item in generator:
                if isinstance(item, ProviderError):
                    raise item
                if not reported:  # later items also wait on our client's reading pace: not the hop's
                    reported = True
                    self._lateness.report(provider, item, time.monotonic() - started)
                yield item
            finished = True
        except RayError as exc:
            raise _replica_error(provider, request, exc) from exc
        finally:
            self._count(provider, request, started)
            if not finished:
                generator.cancel()


def _replica_error(provider: str, request: ProviderRequest, exc: RayError) -> ProviderConnectionError:
    return ProviderConnectionError(
        f"provider deployment unavailable ({type(exc).__name__})", provider=provider, model=request.model
    )


class _ActorLedger:
    """The application's BudgetLedger actor (``deployments/ledger.py``) behind the ``LedgerClient``
    protocol. Ray re-runs a call that was in flight when the actor died on the restarted actor;
    should the actor be gone for good, it is found or created again and the call repeated (the
    caller's timeout bounds the wait). An error the method itself raised is not retried: it goes
    to the caller, as the method's own exception (it was retried forever, found by hand)."""

    def __init__(self, app_name: str, config: FusionConfig) -> None:
        from deployments.ledger import get_or_create

        self._make = lambda: get_or_create(app_name, config)
        self._config = config
        self.actor = self._make()

    async def configure(self) -> None:
        config = self._config
        await self.actor.configure.remote(config.ledger, config.budgets.budgets(), config.tuned_targets())

    def __getattr__(self, name: str) -> Any:
        async def call(*args: Any) -> Any:
            while True:
                try:
                    return await getattr(self.actor, name).remote(*args)
                except RayTaskError:
                    # the method ran and raised (a report past the rows retention kept): the error
                    # is the caller's, and is also an instance of the method's own exception class
                    raise
                except RayError as exc:
                    if name == "settle":  # the accountant's outbox resends it
                        raise
                    logger.warning("ledger call %s failed (%s); retrying", name, type(exc).__name__)
                    await asyncio.sleep(0.2)
                    self.actor = self._make()

        return call


class _ActorCache:
    """The application's ResponseCache actor (``deployments/response_cache.py``) behind the
    ``CacheClient`` protocol. A call that fails is the caller's miss (or lost store); an actor gone
    for good is found or created again for the next call."""

    def __init__(self, app_name: str, settings: CacheConfig) -> None:
        from deployments.response_cache import get_or_create

        self._make = lambda: get_or_create(app_name, settings)
        self._settings = settings
        self.actor = self._make()

    async def configure(self) -> None:
        await self.actor.configure.remote(self._settings)

    async def _call(self, name: str, *args: Any) -> Any:
        try:
            return await getattr(self.actor, name).remote(*args)
        except RayTaskError:
            raise
        except RayError:
            self.actor = self._make()
            raise

    async def get(self, key: bytes, max_age_s: float | None) -> CachedAnswer | None:
        answer: CachedAnswer | None = await self._call("get", key, max_age_s)
        return answer

    async def put(self, key: bytes, scope: str, answer: CachedAnswer) -> bool:
        return bool(await self._call("put", key, scope, answer))

    async def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = await self._call("stats")
        return out

    async def clear(self, scope: str | None) -> int:
        return int(await self._call("clear", scope))


def _as_client(ledger: _ActorLedger) -> LedgerClient:
    client: LedgerClient = ledger
    return client
