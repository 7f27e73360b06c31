"""Rate limits: ``rpm`` requests and ``tpm`` tokens a minute, set on a key (``fusion keys create
--rpm --tpm``, ``fusion keys update``, or the admin endpoints) and on a team in the configuration
(``rate_limits.teams``: one allowance shared by every key of the team).

Each limit is a GCRA bucket (the generic cell rate algorithm: a token bucket kept as one timestamp,
the time at which it is full again): a key with ``rpm`` = R may send R requests at once, and then
one every 60/R s. Tokens count as OpenAI counts them, prompt and answer: the prompt's (the router's
upper estimate) when the request is admitted, the answer's when it settles (``charge``), which may
take the bucket into debt that later requests wait out. A request is admitted against all its
key's and its team's limits or refused with 429 ``rate_limit_exceeded`` having spent none, before it is
classified, held against a budget or sent to a provider, with ``Retry-After`` saying when it would
be admitted (none when its prompt alone is more than a full bucket). Every answer to a limited key
carries OpenAI's ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` headers (of the key's or
the team's limit, whichever has less left).

The buckets live in the BudgetLedger actor, next to the key table: one limiter for all the ingress
replicas, so the limits hold whatever their number. A key without limits costs no call. The state
is in memory only: a limit a minute long has nothing worth keeping across a restart (the restarted
actor forgets at most one minute's count, the same as a bucket refilled).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from serve_app.keys import MAX_PARALLEL, MAX_RPM, MAX_TPM

WINDOW_S = 60.0


class TeamLimits(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rpm: int | None = Field(default=None, ge=1, le=MAX_RPM, description="requests a minute, all its keys")
    tpm: int | None = Field(default=None, ge=1, le=MAX_TPM, description="tokens a minute, all its keys")
    max_parallel_requests: int | None = Field(
        default=None, ge=1, le=MAX_PARALLEL, description="requests in flight at once, all its keys"
    )


class RateLimitsConfig(BaseModel):
    """Limits shared by all the keys of a team (each key's own are set on the key)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    teams: dict[str, TeamLimits] = Field(default_factory=dict)


@dataclass(frozen=True)
class RateDecision:
    """The answer for one request under one limit: ``limit`` requests (or tokens) a minute."""

    allowed: bool
    limit: int
    remaining: int  # units that could be spent right now, after this request
    reset_s: float  # until the bucket is full again (everything spent refilled)
    retry_after_s: float = 0.0  # refused: until this request would be admitted
    unit: str = "requests"  # or "tokens", or "parallel_requests" (serve_app/concurrency.py)
    never: bool = False  # refused: the request alone needs more than a full bucket holds
    scope: str = "key"  # whose limit: the key's, or its "team"'s

    def headers(self) -> dict[str, str]:
        """OpenAI's names: x-ratelimit-{limit,remaining,reset}-{requests,tokens}; Retry-After
        when refused (unless waiting cannot help)."""
        name = self.unit.replace("_", "-")
        out = {
            f"x-ratelimit-limit-{name}": str(self.limit),
            f"x-ratelimit-remaining-{name}": str(self.remaining),
        }
        if self.unit != "parallel_requests":  # a slot frees when a request ends, not with time
            out[f"x-ratelimit-reset-{name}"] = _duration(self.reset_s)
        if not self.allowed and not self.never:
            out["retry-after"] = str(max(1, math.ceil(self.retry_after_s)))
            out["retry-after-ms"] = str(max(1, math.ceil(self.retry_after_s * 1000)))
        return out


def headers(decisions: list[RateDecision]) -> dict[str, str]:
    """Every limit's headers: per unit, the refusal that waits longest, else the limit with the
    least left (a key's and its team's requests share the header names)."""
    out: dict[str, str] = {}
    for d in sorted(decisions, key=lambda d: (not d.allowed, d.retry_after_s, -d.remaining)):
        out.update(d.headers())
    return out


def _duration(seconds: float) -> str:
    """OpenAI's reset format: ``20ms``, ``1.5s``, ``1m0s``."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    if seconds < 60:
        return f"{seconds:.3g}s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{rest:.0f}s"


@dataclass(frozen=True)
class Want:
    """``cost`` units from the bucket ``bucket`` that holds ``limit`` units a minute."""

    bucket: str
    limit: int
    cost: int = 1
    unit: str = "requests"
    scope: str = "key"


def wants(
    key_id: str,
    rpm: int | None,
    tpm: int | None,
    tokens: int,
    team: str | None = None,
    team_rpm: int | None = None,
    team_tpm: int | None = None,
) -> list[Want]:
    """What one request takes: a request from its key's and its team's request limits, its
    prompt's ``tokens`` from their token limits (a limit that is None is not there)."""
    limits = [(key_id, rpm, tpm, "key")]
    if team is not None:
        limits.append((f"team:{team}", team_rpm, team_tpm, "team"))
    out = []
    for owner, requests, tokens_limit, scope in limits:
        if requests is not None:
            out.append(Want(f"requests:{owner}", requests, scope=scope))
        if tokens_limit is not None:
            out.append(Want(f"tokens:{owner}", tokens_limit, tokens, "tokens", scope))
    return out


def answer_buckets(key_id: str | None, team: str | None) -> list[str]:
    """The token buckets an answer's output tokens are charged to when it settles: its key's and
    its team's (``RateLimiter.charge`` leaves alone a bucket no request took from)."""
    owners = ([key_id] if key_id is not None else []) + ([f"team:{team}"] if team is not None else [])
    return [f"tokens:{owner}" for owner in owners]


class RateLimiter:
    """GCRA buckets: ``take`` admits a request against all its limits at once, or refuses it
    without spending any; ``charge`` spends afterwards what only the answer told (output tokens),
    possibly into debt, which later requests wait out. A request counts once admitted, whatever
    happens to it next. Not thread-safe: one event loop owns it."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        # bucket -> (theoretical arrival time: when the bucket is full again, its limit)
        self._state: dict[str, tuple[float, int]] = {}
        self._takes = 0

    def take(self, *wants: Want) -> list[RateDecision]:
        now = self.clock()
        decisions, updates = [], {}
        for w in wants:
            if w.limit <= 0 or w.cost < 0:
                raise ValueError("a limit must be positive and a cost not negative")
            per_unit = WINDOW_S / w.limit
            tat = max(self._state.get(w.bucket, (now, w.limit))[0], now)
            new_tat = tat + w.cost * per_unit
            if new_tat - now > WINDOW_S + 1e-9:
                never = w.cost > w.limit
                wait = new_tat - now - WINDOW_S
                decisions.append(RateDecision(False, w.limit, 0, tat - now, wait, w.unit, never, w.scope))
                continue
            remaining = math.floor((WINDOW_S - (new_tat - now)) / per_unit + 1e-9)
            left = max(0, min(w.limit, remaining))
            decisions.append(RateDecision(True, w.limit, left, new_tat - now, unit=w.unit, scope=w.scope))
            updates[w.bucket] = (new_tat, w.limit)
        if all(d.allowed for d in decisions):
            self._state.update(updates)
            self._forget(now)
        return decisions

    def charge(self, bucket: str, cost: int) -> None:
        """Spend ``cost`` more units of a bucket a request was admitted against (no check: a bucket
        this process has not seen, after a restart, is left alone)."""
        state = self._state.get(bucket)
        if state is None or cost <= 0:
            return
        tat, limit = state
        self._state[bucket] = (max(tat, self.clock()) + cost * WINDOW_S / limit, limit)

    def _forget(self, now: float) -> None:
        """Every 1024 requests, drop the buckets that are full again (memory stays bounded by the
        keys active in the last minute)."""
        self._takes += 1
        if self._takes % 1024 == 0:
            self._state = {k: v for k, v in self._state.items() if v[0] > now}

    @property
    def tracked(self) -> int:
        return len(self._state)
