"""Prices from genai-prices: cache reads, cache writes and reasoning tokens each at their own price."""

from __future__ import annotations

import pytest

from deployments.providers.base import Usage
from serve_app.config import FusionConfig
from serve_app.pricing import _linear, call_cost_usd


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


def _genai_prices_usd(model: str, provider_id: str, usage: Usage) -> float:
    """genai-prices' own calculation, straight from its API."""
    from genai_prices import Usage as PriceUsage
    from genai_prices import calc_price

    price = calc_price(
        PriceUsage(
            input_tokens=usage.input_tokens,
            cache_read_tokens=usage.cached_tokens or None,
            cache_write_tokens=usage.cache_write_tokens or None,
            output_tokens=usage.output_tokens,
        ),
        model,
        provider_id=provider_id,
    )
    return float(price.total_price)


@pytest.mark.parametrize("prompt", [0, 1, 37, 4_000, 199_999, 200_000, 200_001, 350_000])
def test_per_token_rates_give_genai_prices_own_figure(config: FusionConfig, prompt: int) -> None:
    """call_cost_usd multiplies rates read off genai-prices; on both sides of a tiered price's
    threshold (Claude Sonnet 4.5 and Gemini 2.5 Pro double theirs past 200k prompt tokens) and with
    cached and cache-written prompt tokens it gives what genai-prices computes."""
    providers = {"openai": "openai", "anthropic": "anthropic", "google": "google"}
    for model, spec in config.models.items():
        kind = config.providers[spec.provider].kind
        if kind not in providers:
            continue
        read = prompt // 2
        write = prompt // 5 if kind == "anthropic" else 0
        for usage in (
            Usage(input_tokens=prompt, output_tokens=321),
            Usage(input_tokens=prompt, cached_tokens=read, cache_write_tokens=write, output_tokens=9),
        ):
            expected = _genai_prices_usd(config.provider_model(model), providers[kind], usage)
            assert call_cost_usd(config, model, usage) == pytest.approx(expected, rel=1e-12, abs=1e-15), (
                model,
                usage,
            )


def test_rates_stop_at_a_tiered_price_threshold(config: FusionConfig) -> None:
    """The shortcut is taken for flat prices and, for tiered ones, only up to the first threshold."""
    flat = _linear("gpt-4o-mini", "openai", 0)
    tiered = _linear(config.provider_model("claude-sonnet-4-5"), "anthropic", 0)
    assert flat is not None and flat.up_to_input_tokens is None
    assert tiered is not None and tiered.up_to_input_tokens == 200_000
    assert tiered.covers(Usage(input_tokens=200_000)) and not tiered.covers(Usage(input_tokens=200_001))
    assert not flat.covers(Usage(input_tokens=10, cached_tokens=11))  # genai-prices refuses these
