"""The per-key request limiter (GCRA): bursts, refill, refusal and its headers."""

from __future__ import annotations

import pytest

from serve_app.rate_limits import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_full_bucket_admits_rpm_requests_at_once_then_refuses() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    decisions = [limiter.take("k", 6) for _ in range(6)]
    assert all(d.allowed for d in decisions)
    assert [d.remaining for d in decisions] == [5, 4, 3, 2, 1, 0]
    refused = limiter.take("k", 6)
    assert not refused.allowed and refused.remaining == 0
    assert refused.retry_after_s == pytest.approx(10.0)  # one request refills every 60/6 s
    assert refused.reset_s == pytest.approx(60.0)


def test_requests_refill_evenly_over_the_minute() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    for _ in range(6):
        assert limiter.take("k", 6).allowed
    clock.now += 9.9
    assert not limiter.take("k", 6).allowed  # a refusal does not count
    clock.now += 0.1
    again = limiter.take("k", 6)
    assert again.allowed and again.remaining == 0
    assert not limiter.take("k", 6).allowed
    clock.now += 60
    assert limiter.take("k", 6).remaining == 5  # a quiet minute fills the bucket, never past it


def test_keys_are_counted_apart() -> None:
    limiter = RateLimiter(Clock())
    assert limiter.take("a", 1).allowed
    assert not limiter.take("a", 1).allowed
    assert limiter.take("b", 1).allowed


def test_a_steady_rate_at_the_limit_is_never_refused() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    allowed = 0
    for _ in range(600):  # 10 minutes at exactly 120 a minute, after a full burst
        allowed += limiter.take("k", 120).allowed
        clock.now += 0.5
    assert allowed == 600


def test_refusal_headers_follow_openai() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    ok = limiter.take("k", 2)
    assert ok.headers() == {
        "x-ratelimit-limit-requests": "2",
        "x-ratelimit-remaining-requests": "1",
        "x-ratelimit-reset-requests": "30s",
    }
    limiter.take("k", 2)
    clock.now += 29.5
    refused = limiter.take("k", 2).headers()
    assert refused["retry-after"] == "1" and refused["retry-after-ms"] == "500"
    assert refused["x-ratelimit-remaining-requests"] == "0"
    assert refused["x-ratelimit-reset-requests"] == "30.5s"


def test_idle_keys_are_forgotten() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    for i in range(1023):
        limiter.take(f"k{i}", 60)
    clock.now += 61
    limiter.take("last", 60)  # the 1024th request prunes every full bucket
    assert limiter.tracked == 1


def test_rpm_must_be_positive() -> None:
    with pytest.raises(ValueError):
        RateLimiter().take("k", 0)
