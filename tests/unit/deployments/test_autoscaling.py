"""The predictive policy's decisions on hand-made contexts (no Ray)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from ray.serve.config import AutoscalingConfig

from deployments.autoscaling import PredictivePolicy, decide
from serve_app.config import AutoscalingOptions, ForecastConfig

NOW = 1_000.0


def _forecast(rate_p90: float, service_s: float = 0.5, age_s: float = 1.0) -> dict[str, float]:
    return {"rate_p90_per_s": rate_p90, "service_time_s": service_s, "computed_at": NOW - age_s}


def _decide(ongoing: float, forecast: dict[str, float] | None, **kw: Any) -> Any:
    args: dict[str, Any] = {
        "ongoing_requests": ongoing,
        "target_ongoing": 2.0,
        "forecast": forecast,
        "now": NOW,
        "max_age_s": 30.0,
        "default_service_time_s": 1.0,
        "min_replicas": 1,
        "max_replicas": 10,
    }
    args.update(kw)
    return decide(**args)


def test_rising_forecast_scales_up_before_the_requests_arrive() -> None:
    d = _decide(ongoing=2, forecast=_forecast(rate_p90=20))  # 20/s x 0.5 s = 10 ongoing -> 5 replicas
    assert (d.replicas, d.reason, d.reactive, d.predicted) == (5, "forecast", 1, 5)


def test_falling_forecast_never_goes_below_the_reactive_need() -> None:
    d = _decide(ongoing=9, forecast=_forecast(rate_p90=2))
    assert (d.replicas, d.reason) == (5, "reactive")


def test_no_forecast_yet_is_reactive() -> None:
    assert (_decide(ongoing=6, forecast=None).replicas, _decide(6, None).reason) == (3, "no_forecast")


def test_stale_forecast_is_ignored() -> None:
    d = _decide(ongoing=2, forecast=_forecast(rate_p90=100, age_s=31))
    assert (d.replicas, d.reason) == (1, "stale_forecast")


def test_bounds_hold() -> None:
    assert _decide(ongoing=0, forecast=_forecast(rate_p90=1000)).replicas == 10
    assert _decide(ongoing=0, forecast=_forecast(rate_p90=0), min_replicas=2).replicas == 2
    assert _decide(ongoing=0, forecast=_forecast(rate_p90=0), min_replicas=0).replicas == 0


def test_unmeasured_service_time_falls_back_to_the_configured_one() -> None:
    d = _decide(ongoing=0, forecast=_forecast(rate_p90=4, service_s=0.0), default_service_time_s=1.5)
    assert d.predicted == 3  # 4/s x 1.5 s / 2


def _ctx(name: str = "Provider_meta", ongoing: float = 0) -> SimpleNamespace:
    return SimpleNamespace(
        deployment_name=name,
        app_name="fusion",
        total_num_requests=ongoing,
        config=AutoscalingConfig(min_replicas=1, max_replicas=8, target_ongoing_requests=2),
        capacity_adjusted_min_replicas=1,
        capacity_adjusted_max_replicas=8,
        current_time=NOW,
        policy_state={},
    )


def test_policy_reads_only_its_cache_and_reports_why() -> None:
    policy = PredictivePolicy(namespace="x", max_age_s=30)
    policy._thread = object()  # type: ignore[assignment]  # no poller: the test fills the cache
    assert policy(_ctx(ongoing=4))[0] == 2  # nothing fetched yet: reactive
    policy._cache.forecasts = {"Provider_meta": _forecast(rate_p90=12)}
    replicas, state = policy(_ctx(ongoing=4))
    assert replicas == 3 and state["fusion_reason"] == "forecast"
    assert policy(_ctx(name="Provider_other", ongoing=4))[0] == 2  # another deployment's forecast


def test_predictive_options_make_a_valid_serve_autoscaling_config() -> None:
    options = AutoscalingOptions(min_replicas=1, max_replicas=4, policy="predictive", cold_start_s=90)
    raw = options.serve_config(ForecastConfig(step_s=60))
    assert raw["upscale_delay_s"] == 0.0 and raw["downscale_delay_s"] == 0.0
    assert raw["policy"]["policy_function"] == "deployments.autoscaling:PredictivePolicy"
    assert raw["policy"]["policy_kwargs"]["max_age_s"] == 180
    config = AutoscalingConfig(**raw)  # Serve imports and pickles the policy here
    assert config.policy.policy_kwargs["namespace"] == "fusion-router"
    assert "policy" not in AutoscalingOptions(max_replicas=2).serve_config(ForecastConfig())
    assert "downscale_delay_s" not in AutoscalingOptions(max_replicas=2).serve_config(ForecastConfig())
    slow = AutoscalingOptions(max_replicas=2, policy="predictive", downscale_delay_s=300)
    assert slow.serve_config(ForecastConfig())["downscale_delay_s"] == 300


@pytest.mark.parametrize("ongoing,expected", [(0, 1), (3, 2), (100, 8)])
def test_reactive_part_matches_serve_target(ongoing: float, expected: int) -> None:
    policy = PredictivePolicy(namespace="x")
    policy._thread = object()  # type: ignore[assignment]
    assert policy(_ctx(ongoing=ongoing))[0] == expected


def test_the_poller_stops_when_serve_drops_the_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    import gc
    import threading

    import deployments.autoscaling as autoscaling

    seen: dict[str, Any] = {}

    def fake_poll(cache: Any, name: str, namespace: str, interval_s: float) -> None:
        seen["name"] = name
        cache.stop.wait(10)

    monkeypatch.setattr(autoscaling, "_poll", fake_poll)
    policy = PredictivePolicy(namespace="x")
    policy(_ctx())
    thread = policy._thread
    assert isinstance(thread, threading.Thread) and thread.is_alive()
    assert seen["name"] == "demand-forecaster:fusion"
    del policy
    gc.collect()
    thread.join(timeout=2)
    assert not thread.is_alive()
