"""Demand forecasting: per-interval arrivals (or tokens) -> demand at a horizon, with a quantile.

Split by timescale, as production forecasters are:

- a **seasonal profile** (the shape of a day: each slot's demand relative to the day's mean),
  recomputed rarely (``profile_refresh_steps``) from the history, as a median over past seasons,
  smoothed over neighbouring slots; flat until one full season has been seen;
- a **level** updated at every step: an exponentially weighted mean of the de-seasonalised
  demand (optionally with a damped trend), O(1) per step.

The point forecast for ``h`` steps ahead is ``level x profile[slot + h]``. The quantile (P90 by
default) comes from the forecaster's own recent errors: the empirical quantile of the log ratio
``(actual + 1) / (forecast + 1)`` of its past ``h``-step forecasts, over a trailing window
(conformal-style, so it widens when demand turns erratic and narrows when it is steady).

Missing intervals (collection gaps) are passed as ``None``: they neither move the level nor score.
Plain Python and numpy; no I/O. ``benchmarks/forecast.py`` chose the variant and its smoothing by
measurement against last-value and seasonal-naive baselines.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ForecastSettings:
    step_s: float = 60.0
    season_steps: int = 1440  # one day of steps; 0: no seasonality
    horizon_steps: int = 2
    alpha: float = 0.5  # level smoothing (1.0: last value, de-seasonalised)
    beta: float = 0.0  # trend smoothing (0: no trend)
    damping: float = 0.9  # trend damping per step ahead
    quantile: float = 0.9
    residual_window: int = 1008  # forecast errors remembered for the quantile
    min_residuals: int = 12  # fewer than this: a fixed band (``cold_band``)
    cold_band: float = 0.5  # P-quantile = forecast x (1 + cold_band) until errors are known
    profile_refresh_steps: int = 144  # how often the seasonal profile is recomputed
    max_history_seasons: int = 14


@dataclass(frozen=True)
class Forecast:
    horizon_steps: int
    point: float
    upper: float  # the configured quantile (P90 by default)


class DemandForecaster:
    """One series (e.g. requests per step for one deployment). ``observe`` each step, then
    ``forecast``; ``observe`` is the per-minute refit (O(1), plus a profile refresh now and then)."""

    def __init__(self, settings: ForecastSettings) -> None:
        self.s = settings
        keep = max(1, settings.season_steps) * settings.max_history_seasons
        self.history: deque[float | None] = deque(maxlen=max(keep, 2 * settings.residual_window))
        self.profile = np.ones(max(1, settings.season_steps))
        self.level: float | None = None
        self.trend = 0.0
        self.t = 0  # index of the next observation
        self._since_refresh = 0
        self._pending: deque[tuple[int, float]] = deque()  # (target step, point forecast)
        self._residuals: deque[float] = deque(maxlen=settings.residual_window)

    # -- the rarely refreshed part ------------------------------------------------------------------

    def refresh_profile(self) -> None:
        """Each slot's median over past seasons, relative to the mean of those medians."""
        S = self.s.season_steps
        values = list(self.history)
        if S <= 1 or len(values) < S:
            self.profile = np.ones(max(1, S))
            return
        start = self.t - len(values)  # absolute index of values[0]
        slots: list[list[float]] = [[] for _ in range(S)]
        for i, v in enumerate(values):
            if v is not None:
                slots[(start + i) % S].append(v)
        medians = np.array([float(np.median(x)) if x else np.nan for x in slots])
        if np.all(np.isnan(medians)) or np.nanmean(medians) <= 0:
            self.profile = np.ones(S)
            return
        medians = np.where(np.isnan(medians), np.nanmean(medians), medians)
        kernel = np.array([1.0, 2.0, 3.0, 2.0, 1.0])
        padded = np.concatenate([medians[-2:], medians, medians[:2]])
        smooth = np.convolve(padded, kernel / kernel.sum(), mode="valid")
        self.profile = np.maximum(smooth / smooth.mean(), 0.05)

    # -- the per-step part --------------------------------------------------------------------------

    def _season(self, step: int) -> float:
        return float(self.profile[step % len(self.profile)]) if self.s.season_steps > 1 else 1.0

    def observe(self, value: float | None) -> None:
        """Record the demand of step ``self.t`` (None: missing) and update the level."""
        step = self.t
        while self._pending and self._pending[0][0] < step:
            self._pending.popleft()
        if value is not None and self._pending and self._pending[0][0] == step:
            _, predicted = self._pending.popleft()
            self._residuals.append(math.log((value + 1.0) / (predicted + 1.0)))
        self.history.append(value)
        if value is not None:
            x = value / self._season(step)
            if self.level is None:
                self.level = x
            else:
                previous = self.level
                self.level = self.s.alpha * x + (1 - self.s.alpha) * (previous + self.trend)
                if self.s.beta > 0:
                    self.trend = self.s.beta * (self.level - previous) + (1 - self.s.beta) * self.trend
        self.t += 1
        self._since_refresh += 1
        if self.s.season_steps > 1 and (
            self._since_refresh >= self.s.profile_refresh_steps or self.t == self.s.season_steps
        ):
            self.refresh_profile()
            self._since_refresh = 0
        if self.level is not None:
            # remember the forecast made now for its target step, to score it when it arrives
            self._pending.append((self.t - 1 + self.s.horizon_steps, self._point(self.s.horizon_steps)))

    def _point(self, h: int) -> float:
        assert self.level is not None
        damped = sum(self.s.damping**k for k in range(1, h + 1)) if self.s.beta > 0 else 0.0
        base = max(0.0, self.level + damped * self.trend)
        return base * self._season(self.t - 1 + h)

    def forecast(self, h: int | None = None) -> Forecast | None:
        """Demand ``h`` steps after the last observed one (default: the horizon). None before any data."""
        if self.level is None:
            return None
        h = self.s.horizon_steps if h is None else h
        point = self._point(h)
        if len(self._residuals) >= self.s.min_residuals:
            q = float(np.quantile(np.fromiter(self._residuals, float), self.s.quantile))
            upper = max(point, (point + 1.0) * math.exp(q) - 1.0)
        else:
            upper = point * (1.0 + self.s.cold_band)
        return Forecast(h, point, upper)


def walk_forward(
    series: Sequence[float | None], settings: ForecastSettings, score_from: int
) -> tuple[list[float | None], list[float | None]]:
    """Feed the series step by step; return, for every step, the point and upper forecast made
    ``horizon_steps`` earlier (None before ``score_from`` or where none existed)."""
    model = DemandForecaster(settings)
    h = settings.horizon_steps
    points: list[float | None] = [None] * len(series)
    uppers: list[float | None] = [None] * len(series)
    for t, value in enumerate(series):
        model.observe(value)
        target = t + h
        if target < len(series) and target >= score_from:
            f = model.forecast()
            if f is not None:
                points[target], uppers[target] = f.point, f.upper
    return points, uppers
