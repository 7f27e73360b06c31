from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from serve_app.config import (
    DEFAULT_CONFIG_PATH,
    ConfigError,
    FusionConfig,
    TaskType,
    load_config,
    parse_config,
)


def _raw() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    return data


def test_default_config_is_the_seed_table(config: FusionConfig) -> None:
    table = config.routing.table
    # the seed's families, under IDs the providers accept today
    assert table[TaskType.coding].primary == "claude-sonnet-4-5"
    assert table[TaskType.coding].fallback == "gpt-4.1"
    assert table[TaskType.coding].cost_sensitive == "gpt-4o-mini"
    assert table[TaskType.creative_writing].primary == "claude-opus-4-5"
    assert table[TaskType.creative_writing].fallback == "gemini-2.5-pro"
    assert config.models[table[TaskType.creative_writing].cost_sensitive].provider == "meta"
    assert table[TaskType.analysis].primary == "gpt-4.1"
    assert table[TaskType.analysis].cost_sensitive == "gemini-2.5-pro"
    assert table[TaskType.simple_queries].primary == "claude-haiku-4-5"
    assert config.provider_model("llama-3.1-8b-instruct") == "meta-llama/Llama-3.1-8B-Instruct"
    assert {p.kind for p in config.providers.values()} == {"anthropic", "openai", "google", "local_llama"}


def test_unknown_key_is_named(tmp_path: Path) -> None:
    data = _raw()
    data["server"]["prot"] = 9000
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"server\.prot: Extra inputs are not permitted"):
        load_config(path)


def test_bad_model_reference_names_the_slot() -> None:
    data = _raw()
    data["routing"]["table"]["analysis"]["fallback"] = "gpt-9"
    with pytest.raises(ConfigError, match=r"routing\.table\.analysis\.fallback: unknown model 'gpt-9'"):
        parse_config(data)


def test_missing_task_type_and_bad_threshold() -> None:
    data = _raw()
    del data["routing"]["table"]["coding"]
    data["routing"]["complexity_threshold"]["analysis"] = 1.5
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert "routing.table: Value error, missing task types: coding" in str(info.value)
    assert "routing.complexity_threshold" in str(info.value)


def test_secret_is_named_not_written() -> None:
    data = _raw()
    data["providers"]["openai"]["api_key"] = "sk-123"
    with pytest.raises(ConfigError, match=r"providers\.openai\.api_key: Extra inputs"):
        parse_config(data)
    data = _raw()
    data["providers"]["openai"]["api_key_env"] = "sk-live-123"
    with pytest.raises(ConfigError, match=r"providers\.openai\.api_key_env"):
        parse_config(data)


def test_unreadable_and_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read configuration"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("server: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_endpoint_uses_emulator_without_key(config: FusionConfig) -> None:
    anthropic = config.providers["anthropic"]
    emulated = anthropic.endpoint("http://127.0.0.1:9999/", {})
    assert emulated.emulated and emulated.base_url == "http://127.0.0.1:9999/anthropic"
    live = anthropic.endpoint("http://127.0.0.1:9999", {"ANTHROPIC_API_KEY": "k"})
    assert not live.emulated and live.api_key == "k" and live.base_url is None
    assert config.providers["google"].endpoint("http://e", {}).base_url == "http://e/google"
    assert config.providers["openai"].endpoint("http://e", {}).base_url == "http://e/openai/v1"


def test_emulator_url_env_override(config: FusionConfig) -> None:
    assert config.emulator_url({"FUSION_EMULATOR_URL": "http://127.0.0.1:1234"}) == "http://127.0.0.1:1234"
    assert config.emulator_url({}) == config.emulator.url


def test_local_llama_needs_its_section_and_api_kinds_need_a_key() -> None:
    data = _raw()
    data["providers"]["meta"] = {"kind": "local_llama"}
    with pytest.raises(ConfigError, match=r"providers\.meta: Value error, a local_llama provider needs"):
        parse_config(data)
    data = _raw()
    data["providers"]["openai"] = {"kind": "openai"}
    with pytest.raises(ConfigError, match="needs api_key_env"):
        parse_config(data)


def test_local_price_comes_from_gpu_hour_and_throughput(config: FusionConfig) -> None:
    from deployments.providers.base import Usage
    from serve_app.pricing import call_cost_usd

    local = config.providers["meta"].local
    assert local is not None
    per_token = local.gpu_hour_usd / 3600 / local.throughput_tokens_per_s
    cost = call_cost_usd(config, "llama-3.1-8b-instruct", Usage(input_tokens=1000, output_tokens=100))
    assert cost == pytest.approx(100 * per_token + 1000 * per_token * local.input_cost_ratio)
    assert config.providers["meta"].mode({}) == "local:transformers"


def test_aliases_name_a_model_or_a_policy_and_shadow_neither() -> None:
    data = _raw()
    data["routing"]["aliases"] = {"gpt-4": "gpt-4.1", "default": "auto:cost"}
    config = parse_config(data)
    assert config.dealias("gpt-4") == "gpt-4.1" and config.dealias("default") == "auto:cost"
    assert config.dealias("gpt-4.1") == "gpt-4.1"  # not an alias: itself
    for aliases, named in (
        ({"gpt-4": "gpt-5"}, "unknown model or policy 'gpt-5'"),
        ({"gpt-4o-mini": "gpt-4.1"}, "a model or policy name already"),
        ({"auto:0.5": "gpt-4.1"}, "a model or policy name already"),
        ({"openai/gpt-4": "gpt-4.1"}, "provider/model"),
        ({"mine": "auto:0.7"}, "unknown model or policy"),  # numeric targets are per request only
    ):
        data["routing"]["aliases"] = aliases
        with pytest.raises(ConfigError, match=r"routing\.aliases") as info:
            parse_config(data)
        assert named in str(info.value), aliases
