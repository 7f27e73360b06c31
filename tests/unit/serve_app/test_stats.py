"""Rolling per-model statistics: percentiles, error rate, availability, the window."""

from __future__ import annotations

import pytest

from serve_app.stats import RollingStats, StatsConfig, percentile
from tests.conftest import Clock

KEY = ("openai", "gpt-4.1")


def test_percentile_interpolates() -> None:
    assert percentile([], 0.5) is None
    assert percentile([3.0], 0.95) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == pytest.approx(2.5)
    assert percentile(list(map(float, range(101))), 0.95) == pytest.approx(95.0)


def test_latency_ttft_and_error_rate() -> None:
    stats = RollingStats(StatsConfig(window_s=60), clock=Clock())
    for i in range(1, 101):
        stats.add(KEY, True, i / 1000, first_token_s=i / 2000 if i % 2 else None, error=None)
    for _ in range(25):
        stats.add(KEY, False, 1.0, None, "timeout")
    row = stats.snapshot()["gpt-4.1"]
    assert row["calls"] == 125 and row["errors"] == {"timeout": 25}
    assert row["error_rate"] == pytest.approx(0.2) and row["success_rate"] == pytest.approx(0.8)
    assert row["latency_p50_ms"] == pytest.approx(50.5)  # failed calls do not count as latency
    assert row["latency_p95_ms"] == pytest.approx(95.05)
    assert row["ttft_p50_ms"] == pytest.approx(25.0)


def test_availability_is_the_share_of_samples_with_the_circuit_closed() -> None:
    stats = RollingStats(StatsConfig(window_s=60), clock=Clock())
    stats.add(KEY, True, 0.1, None, None)
    for i in range(10):
        stats.note_circuits([KEY] if i < 3 else [])
    assert stats.snapshot()["gpt-4.1"]["availability"] == pytest.approx(0.7)


def test_old_samples_leave_the_window() -> None:
    clock = Clock()
    stats = RollingStats(StatsConfig(window_s=60), clock=clock)
    stats.add(KEY, False, 5.0, None, "server_error")
    clock.now += 30
    stats.add(KEY, True, 0.2, None, None)
    assert stats.snapshot()["gpt-4.1"]["calls"] == 2
    clock.now += 45
    row = stats.snapshot()["gpt-4.1"]
    assert row["calls"] == 1 and row["error_rate"] == 0.0
    clock.now += 60
    assert stats.snapshot() == {}
