"""The price of one call: genai-prices for API models, the model's own config for self-hosted ones."""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import TYPE_CHECKING

from genai_prices import Usage as PriceUsage
from genai_prices import calc_price
from genai_prices.types import TieredPrices

from deployments.providers.base import Usage
from serve_app.config import FusionConfig

if TYPE_CHECKING:
    from serve_app.schemas import ChatCompletionRequest

_GENAI_PROVIDER_IDS = {"anthropic": "anthropic", "openai": "openai", "google": "google"}


@functools.lru_cache(maxsize=256)
def _known(model: str, provider_id: str) -> bool:
    try:
        calc_price(PriceUsage(input_tokens=1, output_tokens=1), model, provider_id=provider_id)
    except LookupError:
        return False
    except Exception:  # genai-prices raises its own errors for unknown models
        return False
    return True


_PROBE = 1_000_000  # tokens per probe: large enough that Decimal prices per token survive as floats


@dataclasses.dataclass(frozen=True)
class _Linear:
    """A model's genai-prices price as four USD-per-token rates, valid for prompts of at most
    ``up_to_input_tokens`` (a tiered price's first threshold; None: any prompt)."""

    uncached: float
    cache_read: float
    cache_write: float
    output: float
    up_to_input_tokens: int | None

    def covers(self, usage: Usage) -> bool:
        fresh = usage.input_tokens - usage.cached_tokens - usage.cache_write_tokens
        limit = self.up_to_input_tokens
        return fresh >= 0 and (limit is None or usage.input_tokens <= limit)

    def cost(self, usage: Usage) -> float:
        fresh = usage.input_tokens - usage.cached_tokens - usage.cache_write_tokens
        return (
            fresh * self.uncached
            + usage.cached_tokens * self.cache_read
            + usage.cache_write_tokens * self.cache_write
            + usage.output_tokens * self.output
        )


def _genai_usd(model: str, provider_id: str, usage: Usage) -> float:
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


@functools.lru_cache(maxsize=256)
def _linear(model: str, provider_id: str, hour: int) -> _Linear | None:
    """genai-prices' price for ``model`` read off four probes, once an hour (its prices carry
    dates); None when the probes do not add up (a price that is not linear in the four counts).
    ``call_cost_usd`` multiplies these rates instead of running genai-prices' calculation on every
    answer (0.2 ms of the ingress's ~4 ms of CPU a request, `benchmarks/README.md`)."""
    probe = calc_price(PriceUsage(input_tokens=1, output_tokens=1), model, provider_id=provider_id)
    tiers = [v for v in vars(probe.model_price).values() if isinstance(v, TieredPrices)]
    limit = min((t.start for tp in tiers for t in tp.tiers), default=None)
    n = _PROBE if limit is None else min(_PROBE, limit)
    try:
        rates = _Linear(
            uncached=_genai_usd(model, provider_id, Usage(input_tokens=n)) / n,
            cache_read=_genai_usd(model, provider_id, Usage(input_tokens=n, cached_tokens=n)) / n,
            cache_write=_genai_usd(model, provider_id, Usage(input_tokens=n, cache_write_tokens=n)) / n,
            output=_genai_usd(model, provider_id, Usage(output_tokens=n)) / n,
            up_to_input_tokens=limit,
        )
        mixed = Usage(input_tokens=n, cached_tokens=n // 4, cache_write_tokens=n // 8, output_tokens=n // 3)
        exact = _genai_usd(model, provider_id, mixed)
    except Exception:  # a price genai-prices cannot compute for one of the probes: no shortcut
        return None
    if abs(rates.cost(mixed) - exact) > 1e-9 * max(exact, 1e-12):
        return None
    return rates


def call_cost_usd(config: FusionConfig, model: str, usage: Usage) -> float | None:
    """USD for one call of public model ``model``; None when no price is known."""
    spec = config.models[model]
    local = config.providers[spec.provider].local
    if local is not None:
        per_output = local.usd_per_output_token()
        return usage.input_tokens * per_output * local.input_cost_ratio + usage.output_tokens * per_output
    if spec.price is not None:
        return (
            usage.input_tokens * spec.price.input_per_mtok + usage.output_tokens * spec.price.output_per_mtok
        ) / 1e6
    kind = config.providers[spec.provider].kind
    provider_id = _GENAI_PROVIDER_IDS.get(kind)
    provider_model = config.provider_model(model)
    if provider_id is None or not _known(provider_model, provider_id):
        return None
    rates = _linear(provider_model, provider_id, int(time.time() // 3600))
    if rates is not None and rates.covers(usage):
        return rates.cost(usage)
    return _genai_usd(provider_model, provider_id, usage)


def worst_case_usd(config: FusionConfig, model: str, prompt_tokens: int, output_tokens: int) -> float:
    """The most one call of ``model`` can cost: every prompt token uncached, every allowed output
    token produced (reasoning included). 0 for a model without a known price."""
    cost = call_cost_usd(config, model, Usage(input_tokens=prompt_tokens, output_tokens=output_tokens))
    return cost or 0.0


def bounded(config: FusionConfig, request: ChatCompletionRequest) -> ChatCompletionRequest:
    """The request with an output limit: its own, or ``budgets.max_output_tokens`` (passed on to
    the provider), so that its real cost cannot pass its worst case."""
    if request.output_limit() is not None:
        return request
    return request.model_copy(update={"max_tokens": config.budgets.max_output_tokens})


def request_worst_case_usd(config: FusionConfig, request: ChatCompletionRequest, model: str) -> float:
    """The most one call of ``model`` can cost for ``request``: its prompt at 3 bytes a token
    (``prompt_tokens_upper``), its output limit (``bounded``) produced in full."""
    limit = request.output_limit() or config.budgets.max_output_tokens
    return worst_case_usd(config, model, request.prompt_tokens_upper(), limit)


def unit_prices(config: FusionConfig, model: str) -> tuple[float, float]:
    """USD per prompt token and per output token of ``model`` (0 where no price is known)."""
    per_in = call_cost_usd(config, model, Usage(input_tokens=1_000_000)) or 0.0
    per_out = call_cost_usd(config, model, Usage(output_tokens=1_000_000)) or 0.0
    return per_in / 1e6, per_out / 1e6
