"""The predictive autoscaling policy for Serve deployments (``AutoscalingConfig.policy``).

``decide`` is the policy: a pure function of Serve's ``AutoscalingContext`` numbers and the last
forecast the DemandForecaster published for the deployment. It wants enough replicas for the P90
demand expected one cold start (plus the decision lag) ahead, by Little's law (rate x service time
/ target ongoing requests per replica), and never fewer than the reactive need (ongoing requests /
target). Without a forecast, or with one older than ``max_age_s``, it is purely reactive.

``PredictivePolicy`` is the class form Serve instantiates once per deployment (with
``policy_kwargs``) and calls every control-loop tick. It never blocks the controller: a daemon
thread polls the forecaster actor every ``poll_interval_s`` and keeps the answer in a cache that
``__call__`` only reads. The thread stops when Serve drops the policy (the deployment or the
application is deleted, or its config changes): ``weakref.finalize``.

Serve applies ``upscale_delay_s`` / ``downscale_delay_s`` on top of custom policies, so the config
sets ``upscale_delay_s: 0`` for predictive deployments (``AutoscalingOptions.serve_options``).
"""

from __future__ import annotations

import logging
import math
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger("ray.serve")

NAMESPACE = "fusion-router"  # the Ray namespace of the DemandForecaster actors


def actor_name(app_name: str) -> str:
    """The application's DemandForecaster actor (``deployments/forecaster.py``)."""
    return f"demand-forecaster:{app_name or 'default'}"


def replicas_for(concurrency: float, per_replica: float) -> int:
    """Replicas that carry ``concurrency`` ongoing requests at ``per_replica`` each. By Little's
    law a demand of ``rate`` calls/s lasting ``service`` s each is a concurrency of rate x service."""
    return math.ceil(concurrency / per_replica - 1e-9) if concurrency > 0 else 0


@dataclass(frozen=True)
class Decision:
    replicas: int
    reason: str  # "forecast", "reactive", "no_forecast", "stale_forecast"
    reactive: int
    predicted: int | None


def decide(
    ongoing_requests: float,
    target_ongoing: float,
    forecast: dict[str, float] | None,
    now: float,
    max_age_s: float,
    default_service_time_s: float,
    min_replicas: int,
    max_replicas: int,
) -> Decision:
    reactive = replicas_for(ongoing_requests, target_ongoing)

    def bounded(n: int) -> int:
        return max(min_replicas, min(max_replicas, n))

    if forecast is None:
        return Decision(bounded(reactive), "no_forecast", reactive, None)
    if now - forecast["computed_at"] > max_age_s:
        return Decision(bounded(reactive), "stale_forecast", reactive, None)
    service = forecast.get("service_time_s") or default_service_time_s
    rate = forecast["rate_p90_per_s"]
    predicted = replicas_for(rate * service, target_ongoing)
    if predicted > reactive:
        return Decision(bounded(predicted), "forecast", reactive, predicted)
    return Decision(bounded(reactive), "reactive", reactive, predicted)


class _Cache:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.forecasts: dict[str, dict[str, float]] | None = None
        self.stop = threading.Event()


def _poll(cache: _Cache, name: str, namespace: str, interval_s: float) -> None:
    """Fetch the forecaster's latest forecasts every ``interval_s`` until ``cache.stop`` is set."""
    import ray

    handle = None
    while not cache.stop.is_set():
        try:
            if handle is None:
                handle = ray.get_actor(name, namespace=namespace)
            ref: Any = handle.latest.remote()
            latest: dict[str, dict[str, float]] = ray.get(ref, timeout=max(1.0, interval_s))
            with cache.lock:
                cache.forecasts = latest
        except Exception as exc:  # not created yet, restarting, or slow: keep the last answer
            handle = None
            logger.debug("predictive policy: forecaster %s not readable (%s)", name, type(exc).__name__)
        cache.stop.wait(interval_s)


class PredictivePolicy:
    def __init__(
        self,
        namespace: str,
        max_age_s: float = 180.0,
        poll_interval_s: float = 1.0,
        default_service_time_s: float = 1.0,
    ) -> None:
        self.namespace = namespace
        self.max_age_s = max_age_s
        self.poll_interval_s = poll_interval_s
        self.default_service_time_s = default_service_time_s
        self._cache = _Cache()
        self._thread: threading.Thread | None = None

    def _ensure_polling(self, app_name: str) -> None:
        if self._thread is not None:
            return
        name = actor_name(app_name)
        self._thread = threading.Thread(
            target=_poll,
            args=(self._cache, name, self.namespace, self.poll_interval_s),
            name=f"fusion-forecast-poll-{name}",
            daemon=True,
        )
        self._thread.start()
        weakref.finalize(self, self._cache.stop.set)

    def __call__(self, ctx: Any) -> tuple[int, dict[str, Any]]:
        self._ensure_polling(ctx.app_name or "")
        with self._cache.lock:
            forecasts = self._cache.forecasts
        forecast = (forecasts or {}).get(ctx.deployment_name)
        config = ctx.config
        decision = decide(
            ongoing_requests=float(ctx.total_num_requests),
            target_ongoing=float(config.get_target_ongoing_requests()),
            forecast=forecast,
            now=time.time() if ctx.current_time is None else ctx.current_time,
            max_age_s=self.max_age_s,
            default_service_time_s=self.default_service_time_s,
            min_replicas=ctx.capacity_adjusted_min_replicas,
            max_replicas=ctx.capacity_adjusted_max_replicas,
        )
        state = dict(ctx.policy_state or {})
        state.update({"fusion_reason": decision.reason, "fusion_predicted": decision.predicted})
        return decision.replicas, state
