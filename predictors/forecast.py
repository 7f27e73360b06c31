"""Demand forecasting: per-interval arrivals (or tokens) -> demand at a horizon, with a quantile.

Split by timescale, as production forecasters are:

- a **seasonal profile** (the shape of a day: each slot's demand relative to the day's mean),
  recomputed rarely (``profile_refresh_steps``) from the history, as a median over past seasons,
  smoothed over neighbouring slots; flat until one full season has been seen;
- a **level** updated at every step: an exponentially weighted mean of the de-seasonalised
  demand (optionally with a damped trend), O(1) per step;
- optionally a **cycle** inside the season (``cycle_steps``, an hour): each phase's factor against
  the level, learned as each step arrives (Taylor's double-seasonal exponential smoothing), so a
  habit that begins (a client's job at half past every hour) is learned within hours, not days.
  ``make_forecaster`` runs the plain forecaster and cycle variants side by side and forecasts with
  the one whose upper forecast has scored best lately (``SelectingForecaster``).

The point forecast for ``h`` steps ahead is ``level x profile[slot + h]`` (x the cycle's factor).
The quantile (P90 by default) comes from the forecaster's own recent errors: the empirical
quantile of the log ratio ``(actual + 1) / (forecast + 1)`` of its past ``h``-step forecasts, over
a trailing window (conformal-style, so it widens when demand turns erratic and narrows when it is
steady).

Missing intervals (collection gaps) are passed as ``None``: they neither move the level nor score.
Plain Python and numpy; no I/O. ``benchmarks/forecast.py`` chose the variant and its smoothing by
measurement against last-value and seasonal-naive baselines.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace

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
    cycle_steps: int = 0  # a shorter cycle inside the season (an hour of steps); 0: none
    cycle_rate: float = 0.2  # how fast each phase of the cycle learns (per cycle seen)


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
        self.cycle = np.ones(max(1, settings.cycle_steps))
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
        offset = start % S
        grid = np.full(math.ceil((offset + len(values)) / S) * S, np.nan)
        grid[offset : offset + len(values)] = [np.nan if v is None else v for v in values]
        seasons = grid.reshape(-1, S)
        seen = ~np.isnan(seasons).all(axis=0)
        medians = np.full(S, np.nan)
        medians[seen] = np.nanmedian(seasons[:, seen], axis=0)
        if np.all(np.isnan(medians)) or np.nanmean(medians) <= 0:
            self.profile = np.ones(S)
            return
        medians = np.where(np.isnan(medians), np.nanmean(medians), medians)
        kernel = np.array([1.0, 2.0, 3.0, 2.0, 1.0])
        padded = np.concatenate([medians[-2:], medians, medians[:2]])
        smooth = np.convolve(padded, kernel / kernel.sum(), mode="valid")
        self.profile = np.maximum(smooth / smooth.mean(), 0.05)

    # -- the per-step part --------------------------------------------------------------------------

    def _daily(self, step: int) -> float:
        return float(self.profile[step % len(self.profile)]) if self.s.season_steps > 1 else 1.0

    def _season(self, step: int) -> float:
        daily = self._daily(step)
        return daily * float(self.cycle[step % len(self.cycle)]) if self.s.cycle_steps > 1 else daily

    def _learn_cycle(self, step: int, value: float) -> None:
        """Move the cycle's factor for this step's phase toward what the step showed against the
        level (Taylor's double-seasonal exponential smoothing), then rescale the cycle to a mean of 1
        so that it never drifts into the level."""
        if self.s.cycle_steps <= 1 or self.level is None or self.level <= 0:
            return
        phase = step % self.s.cycle_steps
        ratio = min(max(value / (self._daily(step) * self.level), 0.2), 5.0)
        rate = self.s.cycle_rate
        self.cycle[phase] = (1 - rate) * self.cycle[phase] + rate * ratio
        self.cycle /= self.cycle.mean()

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
            self._learn_cycle(step, value)
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


CYCLE_RATES = (0.1, 0.2, 0.3)  # the cycle variants a ``SelectingForecaster`` runs beside the plain one
SWITCH_MARGIN = 0.05  # a variant replaces the plain forecaster only with a loss this much lower


class SelectingForecaster:
    """Variants of one forecaster fed the same series side by side: it forecasts with the variant
    whose upper forecast would have scored best over its residual window, by the pinball loss at
    the configured quantile (the proper score of a quantile forecast: the upper forecast is what
    replicas are provisioned for, so a variant that tightens it at the same coverage wins, even if
    its point forecast is noisier). The first variant holds until the others have as many errors
    to show, and unless one of them scores ``SWITCH_MARGIN`` better: on servegen days 5-8, before
    any hourly habit, variants chosen on a hair's difference cost up to 11% more SLO violations at
    the same replica-seconds; with the margin the plain forecaster kept every step there. Demand
    that takes up a new habit (a client's job at half past every hour) moves the choice to a
    variant that has learned it, and back when the habit goes."""

    def __init__(self, variants: Sequence[ForecastSettings]) -> None:
        self.models = [DemandForecaster(s) for s in variants]

    def observe(self, value: float | None) -> None:
        for model in self.models:
            model.observe(value)

    def chosen(self) -> DemandForecaster:
        first = self.models[0]
        needed = max(first.s.min_residuals, len(first._residuals))
        q = first.s.quantile
        best, best_loss = first, _pinball(first._residuals, q) * (1 - SWITCH_MARGIN)
        for model in self.models[1:]:
            if len(model._residuals) >= needed and (loss := _pinball(model._residuals, q)) < best_loss:
                best, best_loss = model, loss
        return best

    def forecast(self, h: int | None = None) -> Forecast | None:
        return self.chosen().forecast(h)


def _pinball(residuals: deque[float], q: float) -> float:
    """Mean pinball loss at ``q`` of the log-ratio residuals against their own ``q``-quantile: how
    a forecaster's conformal upper forecast (point x exp(that quantile)) scored over the window."""
    if not residuals:
        return math.inf
    r = np.fromiter(residuals, float)
    d = r - np.quantile(r, q)
    return float(np.mean(np.maximum(q * d, (q - 1) * d)))


Forecaster = DemandForecaster | SelectingForecaster  # what ``make_forecaster`` gives: observe, forecast


def make_forecaster(settings: ForecastSettings) -> Forecaster:
    """The forecaster for ``settings``: with a cycle (``cycle_steps`` > 1), the plain one and one per
    rate in ``CYCLE_RATES`` side by side, chosen by their recent errors; else the plain one."""
    if settings.cycle_steps <= 1:
        return DemandForecaster(settings)
    plain = replace(settings, cycle_steps=0)
    return SelectingForecaster([plain, *(replace(settings, cycle_rate=r) for r in CYCLE_RATES)])


def walk_forward(
    series: Sequence[float | None], settings: ForecastSettings, score_from: int
) -> tuple[list[float | None], list[float | None]]:
    """Feed the series step by step; return, for every step, the point and upper forecast made
    ``horizon_steps`` earlier (None before ``score_from`` or where none existed)."""
    model = make_forecaster(settings)
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
