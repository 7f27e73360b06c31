"""Predictive scaling on the real local Ray: ingress replicas feed the DemandForecaster actor, which
publishes; the policy inside Serve's controller reads it and Serve scales the deployment."""

from __future__ import annotations

import time
from typing import Any

import httpx

from serve_app.emulator import EmulatorServer

GEMINI = "gemini-2.5-pro"  # served by Provider_google, which scales by forecast in the test config


def _wait(predicate: object, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.2)
    return False


def test_arrivals_reach_the_forecaster_and_it_publishes(router: str, emu: EmulatorServer) -> None:
    """Calls to Gemini, counted by the ingress replicas, reach the actor, which publishes."""
    import ray

    from deployments.autoscaling import NAMESPACE, actor_name

    with httpx.Client(timeout=30) as client:
        for _ in range(10):
            r = client.post(
                f"{router}/v1/chat/completions",
                json={"model": GEMINI, "messages": [{"role": "user", "content": "hello"}]},
            )
            assert r.status_code == 200
    actor = ray.get_actor(actor_name("fusion"), namespace=NAMESPACE)

    def published() -> bool:
        ref: Any = actor.stats.remote()
        stats: dict[str, Any] = ray.get(ref, timeout=5)
        f = stats["published"].get("Provider_google")
        return bool(f) and f["service_time_s"] > 0 and stats["steps_published"] > 0

    assert _wait(published, 10)
    ref: Any = actor.latest.remote()
    latest: dict[str, dict[str, float]] = ray.get(ref, timeout=5)
    f = latest["Provider_google"]
    assert f["horizon_s"] == 1.5  # cold start 1 s + decision lag 0.5 s, in 0.5-s steps
    assert f["rate_p90_per_s"] >= f["rate_per_s"] >= 0


def test_a_forecast_alone_scales_the_deployment(router: str) -> None:
    """No request reaches Provider_google here, so Serve's reactive need stays at its minimum; a
    forecast of heavy demand, published by the actor, is all that can raise its replicas."""
    import ray
    from ray import serve

    from deployments.autoscaling import NAMESPACE, actor_name

    def replicas() -> int:
        status = serve.status().applications["fusion"].deployments["Provider_google"]
        return sum(status.replica_states.values())

    assert replicas() == 1
    actor = ray.get_actor(actor_name("fusion"), namespace=NAMESPACE)
    # as if ingress replicas had sent 400 calls of 1 s each in the last half second
    ray.get(actor.record.remote({"Provider_google": (400, 0.0, 400.0)}), timeout=5)
    assert _wait(lambda: replicas() == 2, 15)
