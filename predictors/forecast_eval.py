"""Offline evaluation of the demand forecaster: walk-forward over a series, against last-value and
seasonal-naive, with the smoothing chosen on a validation stretch that precedes the test.

Used by ``benchmarks/forecast.py`` (servegen, azure-llm-2023) and by ``fusion forecast`` (any trace
of arrival timestamps, CSV or JSONL).
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from predictors.forecast import ForecastSettings, make_forecaster, walk_forward

ALPHAS = (0.2, 0.35, 0.5, 0.65, 0.8, 1.0)
BETAS = (0.0, 0.1)


def _mae(actual: Sequence[float | None], predicted: Sequence[float | None], steps: Sequence[int]) -> float:
    errors = [abs(a - p) for i in steps if (a := actual[i]) is not None and (p := predicted[i]) is not None]
    return float(np.mean(errors)) if errors else float("nan")


def baselines(
    series: Sequence[float | None], horizon: int, season: int
) -> tuple[list[float | None], list[float | None]]:
    """Last value (the latest observed value, ``horizon`` steps before) and seasonal-naive (the
    value one season before the target step)."""
    last: list[float | None] = [None] * len(series)
    seasonal: list[float | None] = [None] * len(series)
    latest: float | None = None
    for t, value in enumerate(series):
        if value is not None:
            latest = value
        if t + horizon < len(series):
            last[t + horizon] = latest
    for t in range(season, len(series)):
        seasonal[t] = series[t - season]
    return last, seasonal


def choose(
    series: Sequence[float | None], base: ForecastSettings, validate_from: int, validate_to: int
) -> ForecastSettings:
    """The (alpha, beta, seasonal or not) with the lowest MAE on [validate_from, validate_to),
    using only the series before ``validate_to``."""
    head = list(series[:validate_to])
    steps = range(validate_from, validate_to)
    seasons = (base.season_steps, 0) if base.season_steps > 1 else (0,)
    best: tuple[float, ForecastSettings] | None = None
    for season in seasons:
        for alpha in ALPHAS:
            for beta in BETAS:
                settings = replace(base, alpha=alpha, beta=beta, season_steps=season)
                points, _ = walk_forward(head, settings, validate_from)
                mae = _mae(head, points, steps)
                if best is None or mae < best[0]:
                    best = (mae, settings)
    assert best is not None
    return best[1]


def refit_times(series: Sequence[float | None], settings: ForecastSettings) -> list[float]:
    """Seconds per step for observe + forecast (the per-interval refit), profile refreshes included."""
    model = make_forecaster(settings)
    times = []
    for value in series:
        start = time.perf_counter()
        model.observe(value)
        model.forecast()
        times.append(time.perf_counter() - start)
    return times


def evaluate(
    series: Sequence[float | None],
    base: ForecastSettings,
    validate_from: int,
    test_from: int,
    naive_season: int,
) -> tuple[dict[str, Any], dict[str, list[float | None]]]:
    """Choose the settings on [validate_from, test_from), then walk forward over everything and
    score [test_from, end). Returns the figures and the forecasts (for plots)."""
    settings = choose(series, base, validate_from, test_from)
    points, uppers = walk_forward(series, settings, test_from)
    last, seasonal = baselines(series, settings.horizon_steps, naive_season)
    steps = [
        i
        for i in range(test_from, len(series))
        if series[i] is not None and points[i] is not None and seasonal[i] is not None and last[i] is not None
    ]
    mae = _mae(series, points, steps)
    covered = [series[i] <= uppers[i] for i in steps if uppers[i] is not None]  # type: ignore[operator]
    times = refit_times(series, settings)
    figures = {
        "mae": round(mae, 4),
        "mae_last_value": round(_mae(series, last, steps), 4),
        "mae_seasonal_naive": round(_mae(series, seasonal, steps), 4),
        "mae_ratio_vs_seasonal_naive": round(mae / _mae(series, seasonal, steps), 4),
        "mae_ratio_vs_last_value": round(mae / _mae(series, last, steps), 4),
        "p90_coverage": round(float(np.mean(covered)), 4) if covered else None,
        "refit_p99_s": float(f"{np.quantile(times, 0.99):.3g}"),
        "refit_max_s": float(f"{max(times):.3g}"),
        "n_test": len(steps),
        "settings": asdict(settings),
    }
    return figures, {"actual": list(series), "point": points, "upper": uppers, "seasonal_naive": seasonal}


# -- traces of arrival timestamps --------------------------------------------------------------------


def _timestamp(raw: Any) -> float:
    if isinstance(raw, int | float):
        return float(raw)
    text = str(raw).strip()
    try:
        return float(text)
    except ValueError:
        pass
    if "." in text:  # fractions longer than Python's 6 digits (Azure's traces have 7)
        head, _, frac = text.partition(".")
        digits = "".join(c for c in frac if c.isdigit())
        text = f"{head}.{digits[:6]}{frac[len(digits) :]}"
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def load_arrivals(
    path: Path, timestamp_field: str, weight_field: str | None = None
) -> list[tuple[float, float]]:
    """(arrival time in seconds, weight) per record of a CSV (with a header) or JSONL file."""
    rows: list[dict[str, Any]]
    with path.open() as fh:
        if path.suffix in (".jsonl", ".ndjson"):
            rows = [json.loads(line) for line in fh if line.strip()]
        else:
            rows = list(csv.DictReader(fh))
    if not rows:
        raise ValueError(f"{path} holds no records")
    if timestamp_field not in rows[0]:
        raise ValueError(f"{path} has no field {timestamp_field!r}; fields: {sorted(rows[0])}")
    out = []
    for row in rows:
        weight = float(row[weight_field]) if weight_field else 1.0
        out.append((_timestamp(row[timestamp_field]), weight))
    return sorted(out)


def bin_arrivals(arrivals: Sequence[tuple[float, float]], step_s: float) -> list[float | None]:
    """Sum of weights per step, from the first arrival's step to the last one's."""
    start = arrivals[0][0]
    n = int((arrivals[-1][0] - start) // step_s) + 1
    counts = [0.0] * n
    for ts, weight in arrivals:
        counts[int((ts - start) // step_s)] += weight
    return list(counts)


def evaluate_trace(
    path: Path,
    timestamp_field: str,
    step_s: float = 60.0,
    horizon_s: float = 120.0,
    season_s: float = 86400.0,
    weight_field: str | None = None,
    cycle_s: float = 3600.0,
) -> dict[str, Any]:
    """``fusion forecast``: bin the trace, validate on the second quarter, test on the second half.
    The cycle variants (``cycle_s``, as the router's forecaster runs them) run where the trace
    spans three cycles."""
    series = bin_arrivals(load_arrivals(path, timestamp_field, weight_field), step_s)
    if len(series) < 16:
        raise ValueError(f"the trace spans {len(series)} steps of {step_s:g}s; at least 16 are needed")
    season = int(season_s // step_s)
    horizon = max(1, round(horizon_s / step_s))
    has_season = len(series) >= 2 * season
    cycle = int(cycle_s // step_s)
    has_cycle = cycle > 1 and len(series) >= 3 * cycle
    naive = season if has_season else max(horizon, min(10, len(series) // 4))
    base = ForecastSettings(
        step_s=step_s,
        season_steps=season if has_season else 0,
        horizon_steps=horizon,
        residual_window=max(8, len(series) // 2),
        min_residuals=min(12, max(4, len(series) // 8)),
        profile_refresh_steps=max(1, season // 10),
        cycle_steps=cycle if has_cycle else 0,
    )
    figures, _ = evaluate(series, base, len(series) // 4, len(series) // 2, naive)
    figures.update({"steps": len(series), "step_s": step_s, "seasonal_naive_period_steps": naive})
    return figures
