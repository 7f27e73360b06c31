"""Prices from genai-prices: cache reads, cache writes and reasoning tokens each at their own price."""

from __future__ import annotations

import pytest

from deployments.providers.base import Usage
from serve_app.config import FusionConfig
from serve_app.pricing import call_cost_usd


def _cost(config: FusionConfig, model: str, **tokens: int) -> float:
    cost = call_cost_usd(config, model, Usage(**tokens))
    assert cost is not None
    return cost


def test_api_models_are_priced_by_genai_prices(config: FusionConfig) -> None:
    for model, spec in config.models.items():
        if config.providers[spec.provider].local is None:
            assert _cost(config, model, input_tokens=1000, output_tokens=100) > 0, model


def test_cache_reads_cost_less_than_fresh_prompt_tokens(config: FusionConfig) -> None:
    fresh = _cost(config, "gpt-4.1", input_tokens=10_000, output_tokens=10)
    cached = _cost(config, "gpt-4.1", input_tokens=10_000, cached_tokens=8_000, output_tokens=10)
    # gpt-4.1: $2/M input, $0.50/M cached input
    assert fresh - cached == pytest.approx(8_000 * (2.0 - 0.5) / 1e6)


def test_cache_writes_cost_more_than_fresh_prompt_tokens(config: FusionConfig) -> None:
    fresh = _cost(config, "claude-sonnet-4-5", input_tokens=10_000, output_tokens=10)
    written = _cost(
        config, "claude-sonnet-4-5", input_tokens=10_000, cache_write_tokens=8_000, output_tokens=10
    )
    assert written > fresh


def test_reasoning_tokens_are_billed_inside_output(config: FusionConfig) -> None:
    """Reasoning tokens are part of output_tokens: counting them again would double-bill."""
    plain = _cost(config, "gemini-2.5-pro", input_tokens=100, output_tokens=500)
    thinking = _cost(config, "gemini-2.5-pro", input_tokens=100, output_tokens=500, reasoning_tokens=400)
    assert thinking == pytest.approx(plain)
