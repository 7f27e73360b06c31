"""The router's one retry policy (the SDKs run with max_retries=0).

What is retryable is decided by the error tree (``ProviderError.retryable``): 408, 409, 429, 5xx,
529, connection errors, timeouts and broken streams are; 400/404/422 (the request is wrong),
401/403 (our credentials) and content rejections are not.

How the router proceeds on an error, in order:

1. a request the provider rejects as invalid (400/404/422) or as content is returned to the
   client: every candidate would reject it;
2. otherwise the next candidate is tried at once, with no waiting: a 429 or an open circuit never
   makes the router wait while another candidate is available. A 429's Retry-After (capped) and
   bad credentials put that candidate in cool-down through its circuit breaker;
3. when every candidate has failed once and the deadline leaves time, another round starts after
   an exponential backoff with full jitter (``base * 2**round``, capped), skipping candidates whose
   circuit is open or whose Retry-After has not passed.

Per attempt: a connect timeout (the adapters' HTTP client), a first-token timeout (streams) and a
total attempt timeout, each clipped to what is left of the request's single deadline.

Hedging: an attempt still unanswered after twice its model's usual latency (time to first token for
streams; at least ``hedge_after_s``) starts the next candidate beside it, at most ``max_in_flight``
at once; the first answer wins and the other attempt is cancelled. A hanging provider then costs a
request about ``hedge_after_s`` instead of the full attempt timeout. Hedges are budgeted: at most
``hedge_budget`` of the requests of the last 10 s plus ``hedge_burst`` (the start of an incident
needs several at once), so that an overloaded router, where everything is slow, does not double
its own load; and none starts while the replica's own loop runs late (``serve_app/loop_lag.py``).

Streams hedge mid-way too: a stream silent for ``stall_hedge_after_s`` after tokens were sent (at
most half the inter-token timeout) starts its continuation on another candidate beside it, from the
same budget. If the continuation's first token comes first it takes over and the silent stream is
closed and counted as failed; if the silent stream speaks first, the spare is cancelled.
"""

from __future__ import annotations

import random
from collections import deque

from pydantic import BaseModel, ConfigDict, Field

from serve_app.errors import ProviderAuthError, ProviderBadRequestError, ProviderError, ProviderRateLimitError


class RetryConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_rounds: int = Field(default=2, ge=1, description="passes over the candidate list")
    backoff_base_s: float = Field(default=0.05, ge=0)
    backoff_max_s: float = Field(default=1.0, ge=0)
    retry_after_cap_s: float = Field(default=10.0, ge=0, description="longest Retry-After honoured")
    auth_cool_down_s: float = Field(default=30.0, ge=0, description="how long bad credentials bench a model")
    attempt_timeout_s: float = Field(default=30.0, gt=0, description="one non-streaming attempt, in total")
    first_token_timeout_s: float = Field(default=10.0, gt=0, description="a stream's first token")
    inter_token_timeout_s: float = Field(default=10.0, gt=0, description="a stream's silence after tokens")
    hedge_after_s: float | None = Field(
        default=0.5, gt=0, description="a slow attempt starts the next candidate beside it (None: never)"
    )
    stall_hedge_after_s: float | None = Field(
        default=2.0,
        gt=0,
        description="a stream silent this long after tokens starts its continuation on another candidate "
        "beside it (at most half the inter-token timeout; None: never)",
    )
    max_in_flight: int = Field(default=2, ge=1, description="attempts of one request running at once")
    hedge_budget: float = Field(
        default=0.1, ge=0, le=1, description="share of recent requests that may be hedged (load guard)"
    )
    hedge_burst: int = Field(
        default=10, ge=0, description="hedges allowed on top of the share, for an incident's start"
    )


def is_final(error: ProviderError) -> bool:
    """True when the error belongs to the client's request, so no other candidate is tried."""
    return isinstance(error, ProviderBadRequestError)


def cool_down_s(error: ProviderError, config: RetryConfig) -> float | None:
    """How long the failed candidate should stay out of rotation beyond its breaker's own rule."""
    if isinstance(error, ProviderRateLimitError):
        return min(error.retry_after, config.retry_after_cap_s) if error.retry_after else None
    if isinstance(error, ProviderAuthError):
        return config.auth_cool_down_s
    return None


def backoff_s(round_index: int, config: RetryConfig, rng: random.Random | None = None) -> float:
    """Full-jitter exponential backoff before round ``round_index`` (1 = the first retry round)."""
    ceiling = min(config.backoff_max_s, config.backoff_base_s * (2 ** (round_index - 1)))
    return (rng or random).uniform(0.0, ceiling)


class HedgeBudget:
    """Allows hedges for at most ``share`` of the requests seen in a sliding window, plus ``burst``."""

    def __init__(self, share: float, window_s: float = 10.0, burst: int = 1) -> None:
        self.share = share
        self.burst = burst
        self.window_s = window_s
        self._requests: deque[float] = deque()
        self._hedges: deque[float] = deque()

    def _trim(self, now: float) -> None:
        for q in (self._requests, self._hedges):
            while q and q[0] < now - self.window_s:
                q.popleft()

    def request(self, now: float) -> None:
        self._requests.append(now)
        self._trim(now)

    def try_hedge(self, now: float) -> bool:
        self._trim(now)
        if len(self._hedges) >= self.share * len(self._requests) + self.burst:
            return False
        self._hedges.append(now)
        return True
