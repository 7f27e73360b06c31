from __future__ import annotations

import random

from serve_app.errors import provider_error_for_status
from serve_app.retry import RetryConfig, backoff_s, cool_down_s, is_final


def _err(status: int, retry_after: float | None = None) -> object:
    return provider_error_for_status(status, "x", provider="p", model="m", retry_after=retry_after)


def test_only_invalid_requests_are_final() -> None:
    for status in (400, 404, 422):
        assert is_final(_err(status))  # type: ignore[arg-type]
    for status in (401, 403, 408, 409, 429, 500, 503, 529):
        assert not is_final(_err(status))  # type: ignore[arg-type]


def test_retry_after_is_honoured_up_to_the_cap_and_bad_keys_bench_a_model() -> None:
    config = RetryConfig(retry_after_cap_s=5, auth_cool_down_s=30)
    assert cool_down_s(_err(429, 2.0), config) == 2.0  # type: ignore[arg-type]
    assert cool_down_s(_err(429, 120.0), config) == 5.0  # type: ignore[arg-type]
    assert cool_down_s(_err(429), config) is None  # type: ignore[arg-type]
    assert cool_down_s(_err(401), config) == 30.0  # type: ignore[arg-type]
    assert cool_down_s(_err(503), config) is None  # type: ignore[arg-type]


def test_backoff_is_jittered_exponential_and_capped() -> None:
    config = RetryConfig(backoff_base_s=0.1, backoff_max_s=0.5)
    rng = random.Random(1)
    for round_index, ceiling in ((1, 0.1), (2, 0.2), (3, 0.4), (4, 0.5), (8, 0.5)):
        values = [backoff_s(round_index, config, rng) for _ in range(200)]
        assert all(0.0 <= v <= ceiling for v in values)
        assert max(values) > 0.8 * ceiling  # full jitter spans the range


def test_hedge_budget_caps_the_share_of_hedged_requests() -> None:
    from serve_app.retry import HedgeBudget

    budget = HedgeBudget(0.1, window_s=10)
    for i in range(100):
        budget.request(float(i) * 0.01)
    granted = sum(budget.try_hedge(1.0) for _ in range(50))
    assert granted == 11  # 10% of 100 requests, plus one
    for i in range(100):  # the window moves on: old requests and hedges expire
        budget.request(20.0 + i * 0.01)
    assert budget.try_hedge(21.0)
