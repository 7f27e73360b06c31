"""Demand: what the ingress counts, what the DemandForecaster actor does with it, and the one rule
that turns demand into replicas. Plain Python; ``deployments/forecaster.py`` is the actor shell and
``deployments/autoscaling.py`` the Serve autoscaling policy.

- ``ArrivalCounter`` (each ingress replica): calls sent to each provider deployment, their input
  tokens and the seconds they took, summed until the next report (every ``report_interval_s``,
  off the request path).
- ``DemandHub`` (the actor's core): adds the reports into steps of ``step_s``; when a step is
  over, feeds each deployment's rate (calls per second) and token rate to its forecaster
  (``predictors/forecast.py``, refit per step in microseconds) and publishes, per deployment, the
  rate expected ``horizon`` ahead (point and P90; horizon = decision lag + the deployment's cold
  start), the measured service time, and when it was computed.
Demand becomes replicas by ``deployments.autoscaling.replicas_for`` (Little's law), the rule the
policy itself uses.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from predictors.forecast import Forecaster, ForecastSettings, make_forecaster

Report = dict[str, tuple[int, float, float]]  # deployment -> (calls, input tokens, busy seconds)


class ArrivalCounter:
    """Per ingress replica: cheap counters, drained into one report at a time."""

    def __init__(self) -> None:
        self._counts: dict[str, list[float]] = {}

    def add(self, deployment: str, input_tokens: int, seconds: float) -> None:
        c = self._counts.setdefault(deployment, [0, 0.0, 0.0])
        c[0] += 1
        c[1] += input_tokens
        c[2] += seconds

    def drain(self) -> Report:
        counts, self._counts = self._counts, {}
        return {k: (int(v[0]), v[1], v[2]) for k, v in counts.items()}


@dataclass
class _Series:
    calls: Forecaster
    tokens: Forecaster
    service_time_s: float | None = None  # exponentially weighted, from the reports
    pending: dict[int, list[float]] = field(default_factory=dict)  # step -> [calls, tokens, busy s]


class DemandHub:
    """The DemandForecaster actor's state. ``clock`` is injectable for tests."""

    def __init__(
        self,
        step_s: float,
        horizons_s: dict[str, float],
        season_s: float = 86400.0,
        alpha: float = 0.8,
        quantile: float = 0.9,
        clock: Any = time.time,
        cycle_s: float = 0.0,
    ) -> None:
        self.step_s = step_s
        self.horizons_s = horizons_s
        self.clock = clock
        self.season_steps = int(season_s // step_s)
        self.alpha = alpha
        self.quantile = quantile
        self.cycle_steps = int(cycle_s // step_s)
        self._series: dict[str, _Series] = {}
        self._next_step: int | None = None  # the first step not fed to the forecasters yet
        self.published: dict[str, dict[str, float]] = {}
        self.refit_s: list[float] = []
        for deployment in horizons_s:  # known from the start: quiet steps count as zero demand
            self._series_for(deployment)

    def _settings(self, deployment: str) -> ForecastSettings:
        horizon = self.horizons_s.get(deployment, self.step_s)
        return ForecastSettings(
            step_s=self.step_s,
            season_steps=self.season_steps if self.season_steps > 1 else 0,
            horizon_steps=max(1, math.ceil(horizon / self.step_s)),
            alpha=self.alpha,
            quantile=self.quantile,
            residual_window=max(30, min(1008, 7 * self.season_steps)),
            profile_refresh_steps=max(1, self.season_steps // 24),
            cycle_steps=self.cycle_steps if self.cycle_steps > 1 else 0,
        )

    def _series_for(self, deployment: str) -> _Series:
        found = self._series.get(deployment)
        if found is None:
            s = self._settings(deployment)
            found = self._series[deployment] = _Series(make_forecaster(s), make_forecaster(s))
        return found

    def record(self, report: Report, at: float | None = None) -> None:
        step = int((self.clock() if at is None else at) // self.step_s)
        if self._next_step is None:
            self._next_step = step
        step = max(step, self._next_step)  # a late report counts in the first open step
        for deployment, (calls, tokens, busy) in report.items():
            bucket = self._series_for(deployment).pending.setdefault(step, [0.0, 0.0, 0.0])
            bucket[0] += calls
            bucket[1] += tokens
            bucket[2] += busy

    def tick(self) -> bool:
        """Close every finished step: feed the forecasters and publish. True when it published."""
        current = int(self.clock() // self.step_s)
        if self._next_step is None:
            self._next_step = current
            return False
        if current <= self._next_step:
            return False
        started = time.perf_counter()
        first = max(self._next_step, current - 2 * max(1, self.season_steps))  # after a long pause
        for step in range(first, current):
            for series in self._series.values():
                calls, tokens, busy = series.pending.pop(step, [0.0, 0.0, 0.0])
                series.calls.observe(calls / self.step_s)
                series.tokens.observe(tokens / self.step_s)
                if calls:
                    measured = busy / calls
                    prior = series.service_time_s
                    series.service_time_s = measured if prior is None else 0.7 * prior + 0.3 * measured
        self._next_step = current
        self._publish()
        self.refit_s.append(time.perf_counter() - started)
        del self.refit_s[:-1000]
        return True

    def _publish(self) -> None:
        now = self.clock()
        out: dict[str, dict[str, float]] = {}
        for deployment, series in self._series.items():
            calls = series.calls.forecast()
            tokens = series.tokens.forecast()
            if calls is None or tokens is None:
                continue
            out[deployment] = {
                "rate_per_s": calls.point,
                "rate_p90_per_s": calls.upper,
                "tokens_p90_per_s": tokens.upper,
                "horizon_s": calls.horizon_steps * self.step_s,
                "service_time_s": series.service_time_s or 0.0,
                "computed_at": now,
            }
        self.published = out
