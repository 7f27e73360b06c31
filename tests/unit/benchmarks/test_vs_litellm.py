"""The LiteLLM comparison's goal check: ratios pooled and per round, and every way to miss it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.vs_litellm import fusion_config, goal_check
from serve_app.config import load_config


def _row(fusion: tuple[float, float], litellm: tuple[float, float], errors: int = 0) -> dict[str, Any]:
    row: dict[str, Any] = {"fusion_errors": errors}
    for kind, (p50, p99) in (("fusion", fusion), ("litellm", litellm)):
        row[f"{kind}_overhead_p50_ms"] = p50
        row[f"{kind}_overhead_p99_ms"] = p99
        row[f"{kind}_overhead_p50_ms_by_round"] = [p50, p50 * 1.1]
        row[f"{kind}_overhead_p99_ms_by_round"] = [p99, p99]
    return row


def _result(rows: dict[str, dict[str, Any]], fusion_rps: float, litellm_rps: float) -> dict[str, Any]:
    return {"concurrency": rows, "max_rps": {"fusion": fusion_rps, "litellm": litellm_rps}}


def test_met_when_fusion_adds_at_most_half_everywhere_and_carries_more() -> None:
    goal = goal_check(_result({"1": _row((2.0, 4.0), (5.0, 8.0))}, 200, 150))
    assert goal["met"] and goal["unmet"] == []
    assert goal["overhead_ratio"]["1"]["p50"] == 0.4 and goal["overhead_ratio"]["1"]["p99"] == 0.5
    assert goal["overhead_ratio"]["1"]["p50_by_round"] == [0.4, 0.4]
    assert goal["max_rps_ratio"] == 1.33


def test_each_shortfall_is_named() -> None:
    rows = {"1": _row((12.0, 20.0), (6.0, 9.0)), "64": _row((100.0, 300.0), (300.0, 800.0), errors=2)}
    goal = goal_check(_result(rows, 150, 150))
    assert not goal["met"]
    assert goal["overhead_ratio"]["1"]["p50"] == 2.0
    assert goal["unmet"] == [
        "c=1 p50: 2.0x LiteLLM's overhead",
        "c=1 p99: 2.22x LiteLLM's overhead",
        "c=64: 2 Fusion errors",
        "maximum rate 1.0x LiteLLM's",
    ]


def test_a_gateway_that_adds_nothing_measurable_has_no_ratio_and_misses() -> None:
    goal = goal_check(_result({"16": _row((5.0, 9.0), (0.0, 9.0))}, 300, 100))
    assert goal["overhead_ratio"]["16"]["p50"] is None and not goal["met"]


def test_fusion_runs_the_default_config_unless_a_flag_says_otherwise(tmp_path: Path) -> None:
    default = load_config(fusion_config(tmp_path, None, False)).deployments
    assert default.api_providers_when_idle is True and default.classifier.placement == "adaptive"
    changed = load_config(fusion_config(tmp_path, "deployment", True, False)).deployments
    assert changed.classifier.placement == "deployment"
    assert changed.api_providers_in_ingress is True and changed.api_providers_when_idle is False
