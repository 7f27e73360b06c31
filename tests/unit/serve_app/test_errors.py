from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from serve_app.errors import (
    Attempt,
    NoProviderAvailableError,
    ProviderAuthError,
    ProviderBadRequestError,
    ProviderError,
    ProviderOverloadedError,
    ProviderRateLimitError,
    ProviderServerError,
    ProviderTimeoutError,
    parse_retry_after,
    provider_error_for_status,
)


@pytest.mark.parametrize(
    ("status", "cls", "retryable"),
    [
        (400, ProviderBadRequestError, False),
        (404, ProviderBadRequestError, False),
        (422, ProviderBadRequestError, False),
        (401, ProviderAuthError, False),
        (403, ProviderAuthError, False),
        (408, ProviderServerError, True),
        (409, ProviderServerError, True),
        (429, ProviderRateLimitError, True),
        (500, ProviderServerError, True),
        (502, ProviderServerError, True),
        (503, ProviderOverloadedError, True),
        (529, ProviderOverloadedError, True),
    ],
)
def test_status_classification(status: int, cls: type[ProviderError], retryable: bool) -> None:
    err = provider_error_for_status(status, "m", provider="p", model="x", retry_after=1.5)
    assert type(err) is cls
    assert err.retryable is retryable
    assert err.status_code == status and err.retry_after == 1.5


def test_provider_errors_pickle_with_their_fields() -> None:
    err = ProviderRateLimitError(
        "slow down", provider="openai", model="gpt-4.1", status_code=429, retry_after=3.0
    )
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is ProviderRateLimitError
    assert (back.provider, back.model, back.status_code, back.retry_after, back.retryable) == (
        "openai",
        "gpt-4.1",
        429,
        3.0,
        True,
    )
    assert back.kind == "rate_limited"
    exhausted = NoProviderAvailableError([Attempt("a", "m", "timeout")], status=504)
    assert pickle.loads(pickle.dumps(exhausted)).http_status == 504


def test_retry_after_forms() -> None:
    assert parse_retry_after({"retry-after": "7"}) == 7.0
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({}) is None
    assert parse_retry_after({"retry-after": "soon"}) is None
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    value = parse_retry_after({"retry-after": later})
    assert value is not None and 25 < value <= 31


def test_exhausted_lists_every_attempt_in_envelope() -> None:
    err = NoProviderAvailableError(
        [
            Attempt("anthropic", "claude-sonnet-4-5", "overloaded", 529),
            Attempt("openai", "gpt-4.1", "timeout"),
        ],
        status=503,
    )
    env = err.envelope()["error"]
    assert err.http_status == 503
    assert env["code"] == "no_provider_available"
    assert "anthropic/claude-sonnet-4-5: overloaded (529)" in env["message"]
    assert "openai/gpt-4.1: timeout" in env["message"]
    assert set(env) == {"message", "type", "param", "code"}


def test_timeout_is_retryable() -> None:
    assert ProviderTimeoutError("t", provider="p", model="m").retryable
