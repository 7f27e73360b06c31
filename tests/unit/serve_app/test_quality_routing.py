"""Quality-target routing: the cheapest model whose predicted quality meets the target, the numeric
knob, the edges (unreachable target, budget pressure, one candidate), and self-tuning from feedback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from predictors.classification import Classification
from predictors.quality import load_heads, quality_features
from predictors.task_classifier import QUALITY_ARTIFACT
from serve_app.config import FusionConfig, RouteRow, TaskType
from serve_app.ledger import Charge, Ledger
from serve_app.routing import is_routed, numeric_target, plan_route, reads_quality
from serve_app.tuning import MAX_DRIFT, TuningStore

STRONG, WEAK = "gpt-4-1106-preview", "gpt-3.5-turbo-1106"
COSTS = {"claude-sonnet-4-5": 0.010, "gpt-4.1": 0.006, "gpt-4o-mini": 0.0004}


def _cls(strong: float, weak: float, task: str = "coding", complexity: float = 0.9) -> Classification:
    return Classification(task, {task: 1.0}, complexity, quality={STRONG: strong, WEAK: weak})


def _with_targets(config: FusionConfig, target: float = 0.7) -> FusionConfig:
    routing = config.routing.model_copy(update={"quality_target": dict.fromkeys(TaskType, target)})
    return config.model_copy(update={"routing": routing})


def _models(plan: object) -> list[str]:
    return [c.model for c in plan.candidates]  # type: ignore[attr-defined]


def test_cheapest_model_that_meets_the_target_goes_first(config: FusionConfig) -> None:
    cfg = _with_targets(config, 0.7)
    easy = plan_route(_cls(0.95, 0.80), "auto", cfg, costs=COSTS)
    assert _models(easy) == ["gpt-4o-mini", "gpt-4.1", "claude-sonnet-4-5"]
    assert easy.quality_target == 0.7 and easy.predicted_quality["gpt-4o-mini"] == 0.80
    hard = plan_route(_cls(0.95, 0.40), "auto", cfg, costs=COSTS)
    # the two frontier models share a proxy: the cheaper one meets the target first
    assert _models(hard) == ["gpt-4.1", "claude-sonnet-4-5", "gpt-4o-mini"]


def test_unreachable_target_puts_the_likeliest_first(config: FusionConfig) -> None:
    plan = plan_route(_cls(0.50, 0.30), "auto", _with_targets(config, 0.9), costs=COSTS)
    assert _models(plan)[-1] == "gpt-4o-mini" and _models(plan)[0] in ("gpt-4.1", "claude-sonnet-4-5")


def test_numeric_knob_moves_along_the_curve(config: FusionConfig) -> None:
    assert is_routed("auto:0.85") and numeric_target("auto:0.85") == 0.85 and not is_routed("auto:1.5")
    cls = _cls(0.95, 0.75)
    assert _models(plan_route(cls, "auto:0.7", config, costs=COSTS))[0] == "gpt-4o-mini"
    assert _models(plan_route(cls, "auto:0.9", config, costs=COSTS))[0] == "gpt-4.1"
    assert _models(plan_route(cls, "auto:0", config, costs=COSTS))[0] == "gpt-4o-mini"
    # no quality heads in the classification: the knob falls back to the nearer end of the table
    bare = Classification("coding", {"coding": 1.0}, 0.9)
    assert _models(plan_route(bare, "auto:0.9", config))[0] == "claude-sonnet-4-5"
    assert _models(plan_route(bare, "auto:0.1", config))[0] == "gpt-4o-mini"


def test_budget_pressure_wins_over_quality(config: FusionConfig) -> None:
    plan = plan_route(_cls(0.95, 0.40), "auto", _with_targets(config), budget_pressure=True, costs=COSTS)
    assert _models(plan)[0] == "gpt-4o-mini" and plan.budget_pressure


def test_one_candidate(config: FusionConfig) -> None:
    row = RouteRow(primary="gpt-4.1", fallback="gpt-4.1", cost_sensitive="gpt-4.1")
    table = {**config.routing.table, TaskType.coding: row}
    cfg = _with_targets(config).model_copy(
        update={"routing": _with_targets(config).routing.model_copy(update={"table": table})}
    )
    plan = plan_route(_cls(0.2, 0.1), "auto", cfg, costs=COSTS)
    assert _models(plan) == ["gpt-4.1"]


def test_self_tuned_target_is_used(config: FusionConfig) -> None:
    cls = _cls(0.95, 0.75)
    cfg = _with_targets(config, 0.8)
    assert _models(plan_route(cls, "auto", cfg, costs=COSTS))[0] == "gpt-4.1"
    tuned = plan_route(cls, "auto", cfg, required_quality={"coding": 0.7}, costs=COSTS)
    assert _models(tuned)[0] == "gpt-4o-mini" and tuned.quality_target == 0.7


def test_only_quality_routed_policies_ask_for_the_quality_heads(config: FusionConfig) -> None:
    """The classifier makes its MiniLM pass only when the route may read the predictions."""
    assert config.routing.quality_target is None  # the shipped default: auto routes on complexity
    assert not any(reads_quality(p, config) for p in ("auto", "auto:cost", "auto:quality", "gpt-4.1"))
    assert reads_quality("auto:0.8", config) and reads_quality("auto:0", config)
    cfg = _with_targets(config)
    assert reads_quality("auto", cfg) and not reads_quality("auto:cost", cfg)


def test_shipped_heads_predict_every_proxy(config: FusionConfig) -> None:
    heads = load_heads(QUALITY_ARTIFACT)
    proxies = {m.quality_proxy for m in config.models.values()}
    assert proxies <= set(heads.models)
    x = quality_features(np.zeros((1, 384)), ["What is 2+2?"], np.array([0.5]))
    predicted = heads.predict(x)
    assert all(0.0 < float(p[0]) < 1.0 for p in predicted.values())


def test_tuner_moves_toward_the_target_within_bounds(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.db", quality_targets={"coding": 0.8})
    start = ledger.tuning.required()["coding"]
    assert start == pytest.approx(0.8)
    ledger.settle(
        [Charge(f"r{i}", 0.001, model="gpt-4o-mini", task_type="coding", policy="auto") for i in range(400)]
    )
    ledger.settle([Charge("direct", 0.001, model="gpt-4.1", task_type="coding", policy="direct")])
    for i in range(400):  # answers better than the target: cheaper models next time
        ledger.feedback(f"r{i}", 1.0)
    relaxed = ledger.tuning.required()["coding"]
    assert relaxed < start and relaxed >= 0.8 - MAX_DRIFT - 1e-9
    before = ledger.tuning.required()["coding"]
    ledger.feedback("direct", 0.0)  # a request the policy did not route does not tune it
    assert ledger.tuning.required()["coding"] == before
    ledger.close()
    reopened = Ledger(tmp_path / "l.db", quality_targets={"coding": 0.8})
    assert reopened.tuning.required()["coding"] == pytest.approx(relaxed)  # survives a restart


def test_tuner_tightens_when_answers_fall_short(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.db")
    store = TuningStore(ledger.db, {"analysis": 0.7})
    for _ in range(2000):
        store.observe("analysis", 0.0)
    assert store.required()["analysis"] == pytest.approx(0.7 + MAX_DRIFT)  # bounded
