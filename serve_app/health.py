"""Health of each (provider, model): circuit breakers fed by every call's outcome and latency.

Plain Python with an injectable clock; the ingress keeps a ``HealthRegistry`` and syncs it with
the ``HealthBoard`` deployment (``deployments/health.py``) several times a second, so a provider
that fails in one ingress replica leaves rotation in all of them within a second.

Breaker states:

- closed: calls flow. It opens after ``failure_threshold`` consecutive failures, or when the
  failure rate over the last ``window`` outcomes reaches ``failure_rate`` (with at least
  ``min_calls`` outcomes), or at once on an explicit cool-down (a 429's Retry-After, bad
  credentials).
- open: no calls until ``open_s`` has passed (doubling on each re-open, up to ``max_open_s``).
- half-open: up to ``probes`` calls at a time are let through; ``probe_successes`` successes close
  the breaker, one failure re-opens it.

Slow calls: when ``slow_call_threshold`` calls to a model have each been unanswered for
``slow_call_s`` (or ``slow_call_factor`` times the model's usual latency, when that is longer, so
that queueing under load is not mistaken for a hang; and longer by what the router itself adds
right now, ``lateness``: the ingress replica's loop lag and the hop to the provider's deployment,
``serve_app/loop_lag.py``), the model leaves rotation until they end, and a hanging provider is
passed over before the first attempt timeout fires. Latency feeds an
exponentially weighted mean per key (total, and to the first token).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

Key = tuple[str, str]  # (provider, public model name)


class BreakerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    failure_threshold: int = Field(default=3, ge=1)
    failure_rate: float = Field(default=0.5, gt=0, le=1)
    window: int = Field(default=20, ge=2)
    min_calls: int = Field(default=10, ge=1)
    open_s: float = Field(default=2.0, gt=0)
    max_open_s: float = Field(default=30.0, gt=0)
    probes: int = Field(default=1, ge=1)
    probe_successes: int = Field(default=1, ge=1)
    sync_interval_s: float = Field(default=0.2, gt=0, description="how often ingress replicas share health")
    slow_call_s: float = Field(default=0.5, gt=0, description="a call unanswered this long counts as slow")
    slow_call_factor: float = Field(
        default=3.0, ge=1, description="... or this many times the model's usual latency, when that is longer"
    )
    slow_call_threshold: int = Field(
        default=3,
        ge=1,
        description="this many slow calls in flight take a model out of rotation until they end",
    )


@dataclass(frozen=True)
class Outcome:
    key: Key
    ok: bool
    latency_s: float
    cool_down_s: float | None = None  # open the breaker for at least this long (Retry-After, bad key)
    first_token_s: float | None = None  # a stream's time to its first token
    error: str | None = None  # the failure's kind (ProviderError.kind), for the statistics


@dataclass
class CircuitBreaker:
    config: BreakerConfig
    state: str = "closed"
    consecutive_failures: int = 0
    opened_until: float = 0.0
    open_for: float = 0.0
    probes_in_flight: int = 0
    probe_successes: int = 0
    recent: deque[bool] = field(default_factory=deque)
    latency_ewma_s: float | None = None
    first_token_ewma_s: float | None = None

    def allow(self, now: float) -> bool:
        """May a call start now? Counts half-open probes (release with ``record``)."""
        if self.state == "open":
            if now < self.opened_until:
                return False
            self.state, self.probes_in_flight, self.probe_successes = "half_open", 0, 0
        if self.state == "half_open":
            if self.probes_in_flight >= self.config.probes:
                return False
            self.probes_in_flight += 1
        return True

    def available(self, now: float) -> bool:
        """Like ``allow`` without taking a probe slot: used to order candidates."""
        if self.state == "open":
            return now >= self.opened_until
        if self.state == "half_open":
            return self.probes_in_flight < self.config.probes
        return True

    def record(self, ok: bool, latency_s: float, now: float, cool_down_s: float | None = None) -> None:
        if ok:
            self.latency_ewma_s = (
                latency_s if self.latency_ewma_s is None else (0.8 * self.latency_ewma_s + 0.2 * latency_s)
            )
        self.recent.append(ok)
        while len(self.recent) > self.config.window:
            self.recent.popleft()
        if self.state == "half_open":
            self.probes_in_flight = max(0, self.probes_in_flight - 1)
            if ok:
                self.probe_successes += 1
                if self.probe_successes >= self.config.probe_successes:
                    self._close()
            else:
                self._open(now, max(self.open_for * 2, self.config.open_s), cool_down_s)
            return
        if ok:
            self.consecutive_failures = 0
            if cool_down_s is None:
                return
        else:
            self.consecutive_failures += 1
        failures = sum(1 for r in self.recent if not r)
        tripped = self.consecutive_failures >= self.config.failure_threshold or (
            len(self.recent) >= self.config.min_calls
            and failures / len(self.recent) >= self.config.failure_rate
        )
        if cool_down_s is not None or (tripped and self.state == "closed"):
            self._open(now, self.config.open_s, cool_down_s)

    def force_open(self, until: float, now: float) -> None:
        """Adopt an open circuit decided elsewhere (the board)."""
        if until > now and (self.state != "open" or until > self.opened_until):
            self.state, self.opened_until = "open", until
            self.open_for = max(self.open_for, until - now)

    def _open(self, now: float, duration: float, cool_down_s: float | None) -> None:
        duration = min(duration, self.config.max_open_s)
        if cool_down_s is not None:
            duration = max(duration, min(cool_down_s, self.config.max_open_s))
        self.state, self.open_for, self.opened_until = "open", duration, now + duration

    def _close(self) -> None:
        self.state, self.consecutive_failures, self.open_for = "closed", 0, 0.0
        self.probes_in_flight = self.probe_successes = 0
        self.recent.clear()


class HealthRegistry:
    """Breakers by key, with the outcomes recorded since the last sync kept for the board."""

    def __init__(
        self,
        config: BreakerConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
        lateness: Callable[[str], float] | None = None,
    ) -> None:
        self.config = config or BreakerConfig()
        self.clock = clock
        self.lateness = lateness  # seconds the router itself adds to a call to this provider now
        self._breakers: dict[Key, CircuitBreaker] = {}
        self._pending: list[Outcome] = []
        self._in_flight: dict[Key, dict[int, float]] = {}
        self._next_call = 0

    def breaker(self, key: Key) -> CircuitBreaker:
        found = self._breakers.get(key)
        if found is None:
            found = self._breakers[key] = CircuitBreaker(self.config)
        return found

    def allow(self, key: Key) -> bool:
        return not self._slow(key) and self.breaker(key).allow(self.clock())

    def available(self, key: Key) -> bool:
        return not self._slow(key) and self.breaker(key).available(self.clock())

    def begin(self, key: Key) -> int:
        """Note a call in flight (for slow-call detection); pass the token to ``end``."""
        self._next_call += 1
        self._in_flight.setdefault(key, {})[self._next_call] = self.clock()
        return self._next_call

    def end(self, key: Key, token: int) -> None:
        self._in_flight.get(key, {}).pop(token, None)

    def _slow(self, key: Key) -> bool:
        """A model whose calls hang (timeouts, stalls) leaves rotation before the first timeout fires."""
        calls = self._in_flight.get(key)
        if not calls:
            return False
        b = self.breaker(key)
        usual = max(b.latency_ewma_s or 0.0, b.first_token_ewma_s or 0.0)
        ours = self.lateness(key[0]) if self.lateness is not None else 0.0
        cutoff = self.clock() - max(self.config.slow_call_s, self.config.slow_call_factor * usual) - ours
        return sum(1 for started in calls.values() if started <= cutoff) >= self.config.slow_call_threshold

    def latency(self, key: Key) -> float | None:
        return self.breaker(key).latency_ewma_s

    def note_first_token(self, key: Key, seconds: float) -> None:
        b = self.breaker(key)
        b.first_token_ewma_s = (
            seconds if b.first_token_ewma_s is None else 0.8 * b.first_token_ewma_s + 0.2 * seconds
        )

    def usual_latency(self, key: Key, first_token: bool) -> float | None:
        """The model's usual time to answer (or to its first token), from successful calls."""
        b = self.breaker(key)
        return b.first_token_ewma_s if first_token else b.latency_ewma_s

    def record(self, outcome: Outcome) -> None:
        self.breaker(outcome.key).record(outcome.ok, outcome.latency_s, self.clock(), outcome.cool_down_s)
        self._pending.append(outcome)

    def drain(self) -> list[Outcome]:
        pending, self._pending = self._pending, []
        return pending

    def open_circuits(self) -> dict[Key, float]:
        """key -> seconds it stays open from now, for every open breaker."""
        now = self.clock()
        return {
            k: b.opened_until - now
            for k, b in self._breakers.items()
            if b.state == "open" and b.opened_until > now
        }

    def adopt(self, remote_open: dict[Key, float]) -> None:
        now = self.clock()
        for key, remaining in remote_open.items():
            self.breaker(key).force_open(now + remaining, now)

    def states(self) -> dict[str, str]:
        return {f"{p}/{m}": b.state for (p, m), b in sorted(self._breakers.items())}

    def reset(self) -> None:
        """Close every circuit (an operator's action after an incident is over)."""
        self._breakers.clear()
        self._pending.clear()
        self._in_flight.clear()


def merge(registry: HealthRegistry, outcomes: Iterable[Outcome]) -> dict[Key, float]:
    """The board's step: record every replica's outcomes, answer with the open circuits."""
    for outcome in outcomes:
        registry.record(outcome)
    registry.drain()
    return registry.open_circuits()
