from __future__ import annotations

import numpy as np
import pytest

from predictors.quality import QualityPredictor, area_under, cost_at, pareto_hull, route_cheapest


def test_predictor_learns_which_prompts_a_model_gets_right() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 8))
    good = (x[:, 0] > 0).astype(float)  # the model is right exactly when feature 0 is positive
    model = QualityPredictor.fit(x, {"m": good, "rare": np.full(400, np.nan)})
    p = model.predict(np.array([[2.0] + [0.0] * 7, [-2.0] + [0.0] * 7]))
    assert p["m"][0] > 0.9 and p["m"][1] < 0.1
    assert p["rare"][0] == pytest.approx(0.5)  # never seen: a neutral prior


def test_cheapest_model_meeting_the_target_and_the_best_when_none_does() -> None:
    predicted = {"cheap": np.array([0.9, 0.5, 0.2]), "dear": np.array([0.95, 0.8, 0.3])}
    costs = {"cheap": 1.0, "dear": 10.0}
    assert route_cheapest(predicted, costs, 0.7) == ["cheap", "dear", "dear"]
    assert route_cheapest(predicted, costs, 0.0) == ["cheap", "cheap", "cheap"]


def test_hull_drops_dominated_and_concave_points() -> None:
    hull = pareto_hull([(1, 0.5), (2, 0.55), (3, 0.9), (4, 0.85), (10, 0.95)])
    assert hull == [(1, 0.5), (3, 0.9), (10, 0.95)]


def test_the_cost_at_a_quality_is_read_off_the_hull_between_its_points() -> None:
    hull = pareto_hull([(1, 0.5), (3, 0.9), (10, 0.95)])
    assert cost_at(hull, 0.7) == pytest.approx(2.0)
    assert cost_at(hull, 0.9) == pytest.approx(3.0)
    assert cost_at(hull, 0.4) == pytest.approx(1.0)  # the cheapest point already reaches it
    assert cost_at(hull, 0.96) is None and cost_at([], 0.5) is None


def test_area_is_mean_reachable_quality_over_the_cost_range() -> None:
    assert area_under([(0.0, 0.5), (1.0, 1.0)], 0.0, 1.0) == pytest.approx(0.75, abs=1e-3)
    assert area_under([(0.5, 1.0)], 0.0, 1.0) == pytest.approx(0.5, abs=1e-2)  # nothing below 0.5


def test_cost_weight_trades_quality_for_price() -> None:
    from predictors.quality import route_utility

    predicted = {"cheap": np.array([0.7, 0.2]), "dear": np.array([0.9, 0.9])}
    costs = {"cheap": 1.0, "dear": 10.0}
    assert route_utility(predicted, costs, 0.0) == ["dear", "dear"]  # the likeliest to be right
    assert route_utility(predicted, costs, 0.5) == ["cheap", "dear"]  # 0.2 lost < 0.45 saved; 0.7 > 0.45
    assert route_utility(predicted, costs, 5.0) == ["cheap", "cheap"]
