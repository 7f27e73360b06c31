"""What the ingress counts and what the DemandForecaster actor's core makes of it (no Ray)."""

from __future__ import annotations

import pytest

from deployments.autoscaling import replicas_for
from deployments.forecaster import DemandForecasterActor
from predictors.forecast import DemandForecaster, SelectingForecaster
from serve_app.config import ForecastConfig
from serve_app.demand import ArrivalCounter, DemandHub
from tests.conftest import Clock


def test_replicas_for_is_littles_law() -> None:
    assert replicas_for(10 * 0.5, 2) == 3  # 10/s x 0.5 s = 5 ongoing / 2 per replica
    assert replicas_for(4 * 0.5, 2) == 1
    assert replicas_for(0 * 3, 2) == 0


def test_counter_drains_once() -> None:
    c = ArrivalCounter()
    c.add("Provider_a", 100, 0.5)
    c.add("Provider_a", 50, 1.5)
    assert c.drain() == {"Provider_a": (2, 150.0, 2.0)}
    assert c.drain() == {}


def test_hub_publishes_rates_and_service_time_each_step() -> None:
    clock = Clock()
    hub = DemandHub(step_s=10, horizons_s={"Provider_a": 20}, season_s=1000, clock=clock)
    assert not hub.tick()  # the first tick only starts the clock
    for _ in range(5):
        hub.record({"Provider_a": (50, 5000.0, 25.0)})
        clock.now += 10
        assert hub.tick()
    f = hub.published["Provider_a"]
    assert f["rate_per_s"] == pytest.approx(5.0)
    assert f["rate_p90_per_s"] >= f["rate_per_s"]
    assert f["service_time_s"] == pytest.approx(0.5)
    assert f["horizon_s"] == 20 and f["computed_at"] == clock.now


def test_quiet_steps_count_as_zero_demand() -> None:
    clock = Clock()
    hub = DemandHub(step_s=1, horizons_s={"Provider_a": 1}, alpha=1.0, clock=clock)
    hub.tick()
    hub.record({"Provider_a": (10, 0.0, 1.0)})
    clock.now += 1
    hub.tick()
    assert hub.published["Provider_a"]["rate_per_s"] == pytest.approx(10)
    clock.now += 3  # three steps with no report
    hub.tick()
    assert hub.published["Provider_a"]["rate_per_s"] == pytest.approx(0)


def test_a_late_report_counts_in_the_first_open_step() -> None:
    clock = Clock()
    hub = DemandHub(step_s=1, horizons_s={"Provider_a": 1}, alpha=1.0, clock=clock)
    hub.tick()
    clock.now += 1
    hub.tick()  # step 1000 closed with nothing in it
    hub.record({"Provider_a": (7, 0.0, 1.0)}, at=1000.5)  # stamped in the closed step
    clock.now += 1
    hub.tick()
    assert hub.published["Provider_a"]["rate_per_s"] == pytest.approx(7)  # not lost


async def test_gpu_deployments_get_node_bundles_for_the_p90_forecast() -> None:
    actor = DemandForecasterActor(
        step_s=60,
        horizons_s={"Provider_llama": 120},
        season_s=86400,
        alpha=0.8,
        quantile=0.9,
        node_shapes={"Provider_llama": ({"CPU": 4, "GPU": 1}, 16, 3)},
    )
    actor._task.cancel()
    assert actor.bundles() == []  # nothing forecast yet: nothing asked for
    actor.hub.published = {"Provider_llama": {"rate_p90_per_s": 20.0, "service_time_s": 2.0}}
    assert actor.bundles() == [{"CPU": 4, "GPU": 1}] * 3  # 40 ongoing / 16 -> 3 (the max)
    actor.hub.published["Provider_llama"]["rate_p90_per_s"] = 0.0
    assert actor.bundles() == []  # demand gone: the request is withdrawn


async def test_the_shipped_hourly_cycle_reaches_the_forecasters() -> None:
    cycle_s = ForecastConfig().cycle_s
    assert cycle_s == 3600
    actor = DemandForecasterActor(
        step_s=60,
        horizons_s={"Provider_llama": 130},
        season_s=86400,
        alpha=0.8,
        quantile=0.9,
        node_shapes={},
        cycle_s=cycle_s,
    )
    actor._task.cancel()
    calls = actor.hub._series["Provider_llama"].calls
    assert isinstance(calls, SelectingForecaster)
    assert [m.s.cycle_steps for m in calls.models] == [0, 60, 60, 60]  # the plain one first
    plain = DemandHub(step_s=60, horizons_s={"Provider_llama": 130}, cycle_s=0)
    assert isinstance(plain._series["Provider_llama"].calls, DemandForecaster)
