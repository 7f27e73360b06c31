from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

from predictors.forecast import (
    DemandForecaster,
    ForecastSettings,
    SelectingForecaster,
    make_forecaster,
    walk_forward,
)
from predictors.forecast_eval import baselines, bin_arrivals, evaluate_trace, load_arrivals

S = 48  # steps per synthetic "day"


def seasonal(days: int, noise: float = 0.05, seed: int = 1) -> list[float | None]:
    rng = random.Random(seed)
    return [
        100 * (1 + 0.6 * math.sin(2 * math.pi * t / S)) * (1 + rng.gauss(0, noise)) for t in range(days * S)
    ]


def _mae(actual: list[float | None], pred: list[float | None], start: int) -> float:
    pairs = [
        (a, p) for a, p in zip(actual[start:], pred[start:], strict=True) if a is not None and p is not None
    ]
    return sum(abs(a - p) for a, p in pairs) / len(pairs)


def test_nothing_to_forecast_before_the_first_observation() -> None:
    assert DemandForecaster(ForecastSettings()).forecast() is None


def test_the_seasonal_profile_beats_last_value_on_a_daily_cycle() -> None:
    series = seasonal(6)
    settings = ForecastSettings(season_steps=S, horizon_steps=6, alpha=0.5, profile_refresh_steps=S)
    points, _ = walk_forward(series, settings, 4 * S)
    last, _ = baselines(series, 6, S)
    flat, _ = walk_forward(series, ForecastSettings(season_steps=0, horizon_steps=6, alpha=0.5), 4 * S)
    assert _mae(series, points, 4 * S) < 0.5 * _mae(series, last, 4 * S)
    assert _mae(series, points, 4 * S) < 0.5 * _mae(series, flat, 4 * S)


def test_p90_covers_about_nine_in_ten() -> None:
    series = seasonal(8, noise=0.2, seed=3)
    settings = ForecastSettings(
        season_steps=S, horizon_steps=2, residual_window=4 * S, profile_refresh_steps=S
    )
    _, uppers = walk_forward(series, settings, 4 * S)
    scored = [(a, u) for a, u in zip(series[4 * S :], uppers[4 * S :], strict=True) if u is not None]
    coverage = sum(a <= u for a, u in scored if a is not None) / len(scored)
    assert 0.82 <= coverage <= 0.97


def test_missing_steps_do_not_move_the_level() -> None:
    model = DemandForecaster(ForecastSettings(season_steps=0, horizon_steps=1, alpha=0.5))
    for _ in range(10):
        model.observe(50.0)
    before = model.forecast()
    model.observe(None)
    after = model.forecast()
    assert before is not None and after is not None and after.point == pytest.approx(before.point)


def test_a_rise_pulls_the_forecast_up_within_a_few_steps() -> None:
    model = DemandForecaster(ForecastSettings(season_steps=0, horizon_steps=1, alpha=0.8))
    for _ in range(20):
        model.observe(10.0)
    for _ in range(3):
        model.observe(100.0)
    f = model.forecast()
    assert f is not None and f.point > 90 and f.upper >= f.point


C = 12  # steps per synthetic "hour"
HABIT = range(6, 9)  # the phases of each hour where a client's job runs, once it has started


def with_habit(steps: int, start: int, seed: int = 5) -> list[float | None]:
    """Flat demand with 3% noise; from ``start`` on, 1.5x during phases 6-8 of every cycle."""
    rng = random.Random(seed)
    return [
        100 * (1.5 if t >= start and t % C in HABIT else 1.0) * (1 + rng.gauss(0, 0.03)) for t in range(steps)
    ]


def _uppers(series: list[float | None], cycle_steps: int, score_from: int) -> list[float]:
    settings = ForecastSettings(
        season_steps=0, horizon_steps=2, alpha=0.8, quantile=0.9, residual_window=120, cycle_steps=cycle_steps
    )
    _, uppers = walk_forward(series, settings, score_from)
    return [u for u in uppers[score_from:] if u is not None]


def test_an_hourly_habit_is_learned_and_its_variant_chosen() -> None:
    series = with_habit(60 * C, start=20 * C)
    plain = _uppers(series, 0, 40 * C)
    cyclic = _uppers(series, C, 40 * C)
    actual = series[40 * C :]
    # the plain forecaster covers the job's steps only by a wide band at every step; the cycle
    # variant raises its band just for them, and so asks for less capacity over the hour
    habit = [i for i in range(len(actual)) if (40 * C + i) % C in HABIT]
    assert sum(actual[i] <= cyclic[i] for i in habit) / len(habit) >= 0.8  # type: ignore[operator]
    assert sum(cyclic) < 0.9 * sum(plain)
    model = make_forecaster(
        ForecastSettings(season_steps=0, horizon_steps=2, alpha=0.8, residual_window=120, cycle_steps=C)
    )
    assert isinstance(model, SelectingForecaster)
    for value in series:
        model.observe(value)
    assert model.chosen() is not model.models[0]  # a cycle variant, not the plain one


def test_without_a_habit_the_selection_costs_nothing_much() -> None:
    series = with_habit(60 * C, start=10**9)
    plain = _uppers(series, 0, 40 * C)
    cyclic = _uppers(series, C, 40 * C)
    actual = series[40 * C :]
    assert sum(cyclic) < 1.03 * sum(plain)
    assert sum(a <= u for a, u in zip(actual, cyclic, strict=True)) / len(actual) >= 0.8  # type: ignore[operator]
    assert isinstance(make_forecaster(ForecastSettings(cycle_steps=0)), DemandForecaster)


def test_trace_evaluation_from_jsonl_timestamps(tmp_path: Path) -> None:
    rng = random.Random(7)
    lines, t = [], 1_700_000_000.0
    while t < 1_700_000_000 + 3 * 3600:
        minute = (t - 1_700_000_000) / 60
        # per second: an hourly cycle on a level that grows from hour to hour
        rate = (2 + 1.5 * math.sin(2 * math.pi * minute / 60)) * (1 + 0.4 * minute / 60)
        t += rng.expovariate(rate)
        lines.append(json.dumps({"ts": t, "tokens": 100}))
    path = tmp_path / "trace.jsonl"
    path.write_text("\n".join(lines))
    arrivals = load_arrivals(path, "ts", "tokens")
    assert sum(bin_arrivals(arrivals, 60)) == pytest.approx(100 * len(lines))  # type: ignore[arg-type]
    figures = evaluate_trace(path, "ts", step_s=60, horizon_s=120, season_s=3600)
    assert figures["settings"]["season_steps"] in (0, 60) and figures["n_test"] > 50
    assert figures["settings"]["cycle_steps"] == 60  # three hours: the hourly variants run
    assert figures["mae_ratio_vs_seasonal_naive"] < 1.0


def test_iso_timestamps_with_seven_fraction_digits(tmp_path: Path) -> None:
    path = tmp_path / "trace.csv"
    path.write_text("TIMESTAMP,x\n2023-11-16 18:17:03.9799600,1\n2023-11-16 18:17:04.0319600,2\n")
    arrivals = load_arrivals(path, "TIMESTAMP")
    assert arrivals[1][0] - arrivals[0][0] == pytest.approx(0.052, abs=1e-6)
    with pytest.raises(ValueError, match="no field"):
        load_arrivals(path, "time")
