"""The per-key limiter (GCRA buckets): bursts, refill, refusal, token costs and their headers."""

from __future__ import annotations

import pytest

from serve_app.rate_limits import RateDecision, RateLimiter, Want, headers


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def one(limiter: RateLimiter, bucket: str, limit: int, cost: int = 1) -> RateDecision:
    [decision] = limiter.take(Want(bucket, limit, cost))
    return decision


def test_a_full_bucket_admits_rpm_requests_at_once_then_refuses() -> None:
    limiter = RateLimiter(Clock())
    decisions = [one(limiter, "k", 6) for _ in range(6)]
    assert all(d.allowed for d in decisions)
    assert [d.remaining for d in decisions] == [5, 4, 3, 2, 1, 0]
    refused = one(limiter, "k", 6)
    assert not refused.allowed and refused.remaining == 0 and not refused.never
    assert refused.retry_after_s == pytest.approx(10.0)  # one request refills every 60/6 s
    assert refused.reset_s == pytest.approx(60.0)


def test_requests_refill_evenly_over_the_minute() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    for _ in range(6):
        assert one(limiter, "k", 6).allowed
    clock.now += 9.9
    assert not one(limiter, "k", 6).allowed  # a refusal does not count
    clock.now += 0.1
    again = one(limiter, "k", 6)
    assert again.allowed and again.remaining == 0
    assert not one(limiter, "k", 6).allowed
    clock.now += 60
    assert one(limiter, "k", 6).remaining == 5  # a quiet minute fills the bucket, never past it


def test_keys_are_counted_apart() -> None:
    limiter = RateLimiter(Clock())
    assert one(limiter, "a", 1).allowed
    assert not one(limiter, "a", 1).allowed
    assert one(limiter, "b", 1).allowed


def test_a_steady_rate_at_the_limit_is_never_refused() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    allowed = 0
    for _ in range(600):  # 10 minutes at exactly 120 a minute, after a full burst
        allowed += one(limiter, "k", 120).allowed
        clock.now += 0.5
    assert allowed == 600


def test_tokens_are_taken_by_the_prompt_and_charged_by_the_answer() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    first = one(limiter, "t", 1000, 300)
    assert first.allowed and first.remaining == 700
    limiter.charge("t", 600)  # the answer: 900 of 1000 spent
    assert not one(limiter, "t", 1000, 200).allowed
    assert one(limiter, "t", 1000, 100).allowed
    limiter.charge("t", 500)  # into debt: 1500 spent, refilled at 1000 a minute
    refused = one(limiter, "t", 1000, 1)
    assert refused.retry_after_s == pytest.approx(30.06)
    clock.now += 30.06
    assert one(limiter, "t", 1000, 1).allowed
    limiter.charge("unseen", 10**6)  # a bucket never taken from (after a restart) is left alone
    assert one(limiter, "unseen", 10, 10).allowed


def test_a_request_larger_than_the_bucket_can_never_pass() -> None:
    refused = one(RateLimiter(Clock()), "t", 100, 101)
    assert not refused.allowed and refused.never
    assert "retry-after" not in refused.headers()  # waiting cannot help


def test_all_limits_admit_or_none_is_spent() -> None:
    limiter = RateLimiter(Clock())
    assert all(d.allowed for d in limiter.take(Want("r", 10), Want("t", 100, 90, "tokens")))
    both = limiter.take(Want("r", 10), Want("t", 100, 20, "tokens"))
    assert [d.allowed for d in both] == [True, False]
    assert one(limiter, "r", 10).remaining == 8  # the refused request took no request either


def test_headers_follow_openai() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    ok = limiter.take(Want("r", 2), Want("t", 1000, 10, "tokens"))
    assert headers(ok) == {
        "x-ratelimit-limit-requests": "2",
        "x-ratelimit-remaining-requests": "1",
        "x-ratelimit-reset-requests": "30s",
        "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-tokens": "990",
        "x-ratelimit-reset-tokens": "600ms",
    }
    one(limiter, "r", 2)
    clock.now += 29.5
    refused = headers(limiter.take(Want("r", 2), Want("t", 1000, 10, "tokens")))
    assert refused["retry-after"] == "1" and refused["retry-after-ms"] == "500"
    assert refused["x-ratelimit-remaining-requests"] == "0"
    assert refused["x-ratelimit-reset-requests"] == "30.5s"


def test_a_key_and_its_team_share_the_headers_and_the_tighter_one_shows() -> None:
    limiter = RateLimiter(Clock())
    limiter.take(Want("team", 5, scope="team"))  # another key of the team sent one
    both = limiter.take(Want("key", 10), Want("team", 5, scope="team"))
    assert [(d.scope, d.remaining) for d in both] == [("key", 9), ("team", 3)]
    assert headers(both)["x-ratelimit-remaining-requests"] == "3"
    assert headers(both)["x-ratelimit-limit-requests"] == "5"
    for _ in range(3):
        limiter.take(Want("team", 5, scope="team"))
    refused = limiter.take(Want("key", 10), Want("team", 5, scope="team"))
    assert [d.allowed for d in refused] == [True, False] and refused[1].scope == "team"
    assert headers(refused)["x-ratelimit-limit-requests"] == "5" and "retry-after" in headers(refused)


def test_idle_keys_are_forgotten() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    for i in range(1023):
        one(limiter, f"k{i}", 60)
    clock.now += 61
    one(limiter, "last", 60)  # the 1024th request prunes every full bucket
    assert limiter.tracked == 1


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError):
        RateLimiter().take(Want("k", 0))
