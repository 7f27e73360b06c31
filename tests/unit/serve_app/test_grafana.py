"""The Grafana dashboard plots the metrics the router exports, and only those."""

from __future__ import annotations

import json
import re
from pathlib import Path

from serve_app.metrics import METRICS

DASHBOARD = Path(__file__).resolve().parents[3] / "serve_app" / "grafana" / "fusion_router.json"
GAUGES = {"fusion_budget_remaining_usd", "fusion_budget_spent_usd"}  # deployments/ledger.py


def _queried() -> set[str]:
    board = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p["targets"]]
    names = set()
    for expr in exprs:
        for found in re.findall(r"ray_(fusion_[a-z_]+)", expr):
            names.add(re.sub(r"_(bucket|sum|count)$", "", found))
    return names


def test_every_queried_metric_is_exported() -> None:
    assert _queried() <= set(METRICS) | GAUGES


def test_every_exported_metric_is_plotted() -> None:
    assert set(METRICS) | GAUGES <= _queried()


def test_gauges_are_named_in_the_ledger_actor() -> None:
    source = (DASHBOARD.parents[2] / "deployments" / "ledger.py").read_text()
    for name in GAUGES:
        assert f'"{name}"' in source
