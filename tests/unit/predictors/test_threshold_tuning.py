from __future__ import annotations

import random

import pytest

from predictors.threshold_tuning import TaskThresholds, ThresholdTuner


def test_quality_above_target_raises_the_threshold_and_below_lowers_it() -> None:
    up = ThresholdTuner(target=0.8, min_observations=1)
    up.observe(1.0)
    assert up.threshold > 0.5
    down = ThresholdTuner(target=0.8, min_observations=1)
    down.observe(0.0)
    assert down.threshold < 0.5


def test_bounded_and_waits_for_enough_observations() -> None:
    t = ThresholdTuner(target=0.5, low=0.2, high=0.6, min_observations=5)
    for _ in range(4):
        t.observe(1.0)
    assert t.threshold == 0.5  # not enough outcomes yet
    for _ in range(10_000):
        t.observe(1.0)
    assert t.threshold == 0.6 and t.step >= t.min_step
    for _ in range(10_000):
        t.observe(0.0)
    assert t.threshold == 0.2


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        ThresholdTuner(target=1.5)
    with pytest.raises(ValueError):
        ThresholdTuner(target=0.5, threshold=0.9, high=0.8)


def test_converges_where_expected_quality_meets_the_target() -> None:
    # a request's shortfall score is uniform; the weak model is right with probability 1 - score,
    # the strong one always: expected quality at threshold t is 1 - t**2 / 2, which is 0.9 at t = 0.447
    rng = random.Random(3)
    tuner = ThresholdTuner(target=0.9)
    for _ in range(40_000):
        score = rng.random()
        strong = tuner.use_strong(score)
        tuner.observe(1.0 if strong or rng.random() > score else 0.0)
    assert tuner.threshold == pytest.approx(0.447, abs=0.05)


def test_each_task_type_keeps_its_own_threshold() -> None:
    tasks = TaskThresholds({"coding": 0.9, "simple_queries": 0.5})
    for _ in range(200):
        tasks.observe("coding", 0.0)
        tasks.observe("simple_queries", 1.0)
    th = tasks.thresholds()
    assert th["coding"] < 0.5 < th["simple_queries"]
    assert tasks.use_strong("coding", 0.4) and not tasks.use_strong("simple_queries", 0.4)
