"""The machine-noise probe's summary (benchmarks/machine_noise.py): windows, quantiles, spread."""

from __future__ import annotations

from benchmarks.machine_noise import loop_cpu_ms, summarize


def test_windows_are_summarized_by_their_medians_and_the_spread_compares_them() -> None:
    samples = [(0.0, 5.0), (1.0, 5.0), (2.9, 6.0), (3.0, 9.0), (4.0, 10.0), (5.5, 11.0), (6.0, 5.5)]
    got = summarize(samples, window=3.0)
    assert got["samples"] == 7
    assert got["window_medians_ms"] == [5.0, 10.0, 5.5]
    assert got["slowest_over_fastest_window"] == 2.0
    assert got["cpu_ms_min"] == 5.0 and got["cpu_ms_max"] == 11.0
    assert got["cpu_ms_p50"] == 6.0


def test_a_steady_core_has_a_spread_of_one() -> None:
    got = summarize([(t / 4, 4.0) for t in range(40)], window=3.0)
    assert got["slowest_over_fastest_window"] == 1.0 and got["cpu_ms_p90"] == 4.0


def test_the_probe_measures_cpu_that_grows_with_the_work() -> None:
    small = min(loop_cpu_ms(20_000) for _ in range(3))
    large = min(loop_cpu_ms(400_000) for _ in range(3))
    assert 0 < small < large
