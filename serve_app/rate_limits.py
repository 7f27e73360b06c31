"""Per-key request rate limits: ``rpm`` requests a minute, set on the key (``fusion keys create
--rpm``, or ``rpm`` in ``POST /v1/admin/keys``).

The limiter is GCRA (the generic cell rate algorithm, a token bucket kept as one timestamp per
key): a key with ``rpm`` = R may send R requests at once, and then one every 60/R s. Over the
limit, the request is refused with 429 ``rate_limit_exceeded`` before anything is done for it (no
classification, no budget hold, no provider call), with ``Retry-After`` saying when the next one
is admitted. Every response to a limited key carries OpenAI's ``x-ratelimit-*-requests`` headers.

It lives in the BudgetLedger actor, next to the key table: one limiter for all the ingress
replicas, so the limit holds whatever their number. A key without ``rpm`` costs no call. The
state is in memory only: a limit a minute long has nothing worth keeping across a restart (the
restarted actor forgets at most one minute's count, the same as a bucket refilled).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

WINDOW_S = 60.0


@dataclass(frozen=True)
class RateDecision:
    """The answer for one request under a limit of ``limit`` requests per minute."""

    allowed: bool
    limit: int
    remaining: int  # requests that could be sent right now, after this one
    reset_s: float  # until the bucket is full again (every spent request refilled)
    retry_after_s: float = 0.0  # refused: until the next request is admitted

    def headers(self) -> dict[str, str]:
        """OpenAI's names: x-ratelimit-{limit,remaining,reset}-requests; Retry-After when refused."""
        out = {
            "x-ratelimit-limit-requests": str(self.limit),
            "x-ratelimit-remaining-requests": str(self.remaining),
            "x-ratelimit-reset-requests": _duration(self.reset_s),
        }
        if not self.allowed:
            out["retry-after"] = str(max(1, math.ceil(self.retry_after_s)))
            out["retry-after-ms"] = str(max(1, math.ceil(self.retry_after_s * 1000)))
        return out


def _duration(seconds: float) -> str:
    """OpenAI's reset format: ``20ms``, ``1.5s``, ``1m0s``."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    if seconds < 60:
        return f"{seconds:.3g}s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{rest:.0f}s"


class RateLimiter:
    """GCRA per key: ``take`` admits or refuses one request. A request counts once admitted here,
    whatever happens to it next. Not thread-safe: one event loop owns it."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._tat: dict[str, float] = {}  # key -> theoretical arrival time of the next request
        self._takes = 0

    def take(self, key: str, rpm: int) -> RateDecision:
        if rpm <= 0:
            raise ValueError("rpm must be positive")
        now = self.clock()
        interval = WINDOW_S / rpm
        tolerance = WINDOW_S - interval  # a full bucket admits rpm requests at once
        tat = max(self._tat.get(key, now), now)
        if tat - now > tolerance + 1e-9:
            wait = tat - now - tolerance
            return RateDecision(False, rpm, 0, tat - now, wait)
        new_tat = tat + interval
        self._tat[key] = new_tat
        self._forget(now)
        remaining = math.floor((tolerance - (new_tat - now)) / interval + 1e-9) + 1
        return RateDecision(True, rpm, max(0, min(rpm - 1, remaining)), new_tat - now)

    def _forget(self, now: float) -> None:
        """Every 1024 requests, drop the keys whose bucket is full again (memory stays bounded by
        the keys active in the last minute)."""
        self._takes += 1
        if self._takes % 1024 == 0:
            self._tat = {k: t for k, t in self._tat.items() if t > now}

    @property
    def tracked(self) -> int:
        return len(self._tat)
