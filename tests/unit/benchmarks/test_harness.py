"""The benchmarks' configuration merge (benchmarks/harness.py: config_with), checked on load."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.harness import config_with
from serve_app.config import ConfigError, load_config


def test_changes_merge_into_deployments_one_level_deep(tmp_path: Path) -> None:
    change = {"classifier": {"placement": "deployment"}, "api_providers_when_idle": False}
    config = load_config(config_with(change, tmp_path / "a.yaml"))
    assert config.deployments.classifier.placement == "deployment"
    assert config.deployments.classifier.max_batch_size == 32  # the rest of the section stays
    assert config.deployments.api_providers_when_idle is False  # the default is true


def test_an_unknown_field_fails_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="placemnt"):
        config_with({"classifier": {"placemnt": "ingress"}}, tmp_path / "b.yaml")
