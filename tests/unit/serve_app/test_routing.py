from __future__ import annotations

import pytest

from predictors.classification import Classification
from serve_app.config import FusionConfig, TaskType
from serve_app.errors import ModelNotFoundError
from serve_app.routing import demote_slow, direct_plan, is_routed, plan_route


def _cls(task: str, complexity: float) -> Classification:
    return Classification(task_type=task, probabilities={task: 1.0}, complexity=complexity)


def _models(plan: object) -> list[str]:
    return [c.model for c in plan.candidates]  # type: ignore[attr-defined]


def test_auto_complex_prompt_starts_at_primary(config: FusionConfig) -> None:
    plan = plan_route(_cls("coding", 0.9), "auto", config)
    assert _models(plan) == ["claude-sonnet-4-5", "gpt-4.1", "gpt-4o-mini"]
    assert [c.slot for c in plan.candidates] == ["primary", "fallback", "cost_sensitive"]
    assert plan.task_type == "coding" and plan.complexity == 0.9


def test_auto_simple_prompt_starts_at_cost_sensitive(config: FusionConfig) -> None:
    plan = plan_route(_cls("analysis", 0.1), "auto", config)
    assert _models(plan) == ["gemini-2.5-pro", "gpt-4.1", "claude-sonnet-4-5"]


def test_threshold_is_per_task_type(config: FusionConfig) -> None:
    threshold = config.routing.complexity_threshold
    just_below = plan_route(_cls("simple_queries", threshold[TaskType.simple_queries] - 0.01), "auto", config)
    at = plan_route(_cls("simple_queries", threshold[TaskType.simple_queries]), "auto", config)
    assert just_below.candidates[0].slot == "cost_sensitive"
    assert at.candidates[0].slot == "primary"


def test_named_policies(config: FusionConfig) -> None:
    assert _models(plan_route(_cls("creative_writing", 0.0), "auto:quality", config))[0] == "claude-opus-4-5"
    cost = plan_route(_cls("creative_writing", 1.0), "auto:cost", config)
    assert _models(cost) == ["llama-3.3-70b-instruct", "gemini-2.5-pro", "claude-opus-4-5"]
    assert cost.candidates[0].provider == "meta"
    assert cost.candidates[0].provider_model == "meta-llama/Llama-3.3-70B-Instruct"


def test_duplicate_models_in_a_row_are_tried_once(config: FusionConfig) -> None:
    row = config.routing.table[TaskType.coding].model_copy(update={"fallback": "claude-sonnet-4-5"})
    table = {**config.routing.table, TaskType.coding: row}
    cfg = config.model_copy(update={"routing": config.routing.model_copy(update={"table": table})})
    assert _models(plan_route(_cls("coding", 0.9), "auto", cfg)) == ["claude-sonnet-4-5", "gpt-4o-mini"]


def test_concrete_model_bypasses_routing(config: FusionConfig) -> None:
    assert not is_routed("gpt-4.1") and is_routed("auto:cost")
    plan = direct_plan("gpt-4.1", config)
    assert plan.policy == "direct" and _models(plan) == ["gpt-4.1"] and plan.task_type is None
    assert _models(direct_plan("google/gemini-2.5-pro", config)) == ["gemini-2.5-pro"]


@pytest.mark.parametrize("name", ["gpt-5-ultra", "openai/gemini-2.5-pro", "", "auto:fast"])
def test_unknown_model_is_404(config: FusionConfig, name: str) -> None:
    with pytest.raises(ModelNotFoundError) as info:
        direct_plan(name, config)
    assert info.value.http_status == 404 and info.value.param == "model"
    assert "does not exist" in info.value.message


def test_budget_pressure_starts_auto_at_cost_sensitive(config: FusionConfig) -> None:
    plan = plan_route(_cls("coding", 0.9), "auto", config, budget_pressure=True)
    assert _models(plan) == ["gpt-4o-mini", "claude-sonnet-4-5", "gpt-4.1"]
    assert plan.budget_pressure
    quality = plan_route(_cls("coding", 0.9), "auto:quality", config, budget_pressure=True)
    assert _models(quality)[0] == "claude-sonnet-4-5" and not quality.budget_pressure


def test_models_slower_than_the_latency_limit_go_last(config: FusionConfig) -> None:
    candidates = list(plan_route(_cls("coding", 0.9), "auto", config).candidates)
    p95 = {"claude-sonnet-4-5": 2500.0, "gpt-4.1": 400.0}  # gpt-4o-mini: no statistics yet
    assert [c.model for c in demote_slow(candidates, p95, 1000.0)] == [
        "gpt-4.1",
        "gpt-4o-mini",
        "claude-sonnet-4-5",
    ]
    assert demote_slow(candidates, p95, None) == candidates
