"""Rolling per-model statistics: latency, time to first token, error rate and availability.

Every call outcome an ingress replica records (``serve_app/health.py``'s ``Outcome``) reaches the
HealthBoard with the health sync; the board keeps a ``RollingStats`` over the last ``window_s``
and the replicas fetch its snapshot every ``publish_interval_s``. The same snapshot answers
``GET /v1/router/stats`` and gives the routing policy each model's p95 latency
(``routing.max_latency_p95_ms``). Cost per request and the clients' quality scores come from the
ledger (``serve_app/ledger.py``) and are joined in by the endpoint.

- latency: a call's duration (a stream's, from the request to its last token), successful calls;
- time to first token: streams only;
- error rate: failed calls / calls (a call overtaken by a hedge counts as failed);
- availability: the share of the window during which the model's circuit was not open.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

Key = tuple[str, str]  # (provider, public model name)


class StatsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    window_s: float = Field(default=300.0, gt=0, description="the rolling window of /v1/router/stats")
    max_samples: int = Field(default=5000, ge=10, description="per model, the newest kept")
    publish_interval_s: float = Field(default=1.0, gt=0, description="how often replicas fetch the stats")


@dataclass(frozen=True)
class Sample:
    at: float
    ok: bool
    latency_s: float
    first_token_s: float | None
    error: str | None


@dataclass
class _Model:
    samples: deque[Sample]
    circuit: deque[tuple[float, bool]] = field(default_factory=deque)  # (when, open)


def percentile(values: list[float], q: float) -> float | None:
    """The q-quantile (0..1) by linear interpolation; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


class RollingStats:
    def __init__(self, config: StatsConfig | None = None, clock: Callable[[], float] = time.time) -> None:
        self.config = config or StatsConfig()
        self.clock = clock
        self._models: dict[Key, _Model] = {}

    def _model(self, key: Key) -> _Model:
        found = self._models.get(key)
        if found is None:
            found = self._models[key] = _Model(deque(maxlen=self.config.max_samples))
        return found

    def add(
        self, key: Key, ok: bool, latency_s: float, first_token_s: float | None, error: str | None
    ) -> None:
        self._model(key).samples.append(Sample(self.clock(), ok, latency_s, first_token_s, error))

    def note_circuits(self, open_keys: Iterable[Key]) -> None:
        """Sample which circuits are open now (the board calls this on every sync)."""
        now = self.clock()
        opened = set(open_keys)
        for key in set(self._models) | opened:
            circuit = self._model(key).circuit
            circuit.append((now, key in opened))
            while len(circuit) > self.config.max_samples:
                circuit.popleft()

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """model -> its statistics over the window (models without calls in it are left out)."""
        since = self.clock() - self.config.window_s
        out: dict[str, dict[str, Any]] = {}
        for (provider, model), m in sorted(self._models.items()):
            while m.samples and m.samples[0].at < since:
                m.samples.popleft()
            while m.circuit and m.circuit[0][0] < since:
                m.circuit.popleft()
            if not m.samples and not m.circuit:
                continue
            calls = len(m.samples)
            errors: dict[str, int] = {}
            for s in m.samples:
                if not s.ok:
                    errors[s.error or "error"] = errors.get(s.error or "error", 0) + 1
            latency = [s.latency_s * 1000 for s in m.samples if s.ok]
            ttft = [s.first_token_s * 1000 for s in m.samples if s.ok and s.first_token_s is not None]
            up = [not was_open for _, was_open in m.circuit]
            out[model] = {
                "provider": provider,
                "calls": calls,
                "errors": errors,
                "error_rate": (sum(errors.values()) / calls) if calls else None,
                "success_rate": (1 - sum(errors.values()) / calls) if calls else None,
                "availability": (sum(up) / len(up)) if up else 1.0,
                "latency_p50_ms": _round(percentile(latency, 0.5)),
                "latency_p95_ms": _round(percentile(latency, 0.95)),
                "ttft_p50_ms": _round(percentile(ttft, 0.5)),
                "ttft_p95_ms": _round(percentile(ttft, 0.95)),
            }
        return out


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)
