"""Parallel-request limits: at most ``max_parallel_requests`` requests of a key (or of all a team's
keys, ``rate_limits.teams``) in flight at once, across every ingress replica.

A request that passes takes a lease on a slot of each of its limits, in the same ledger call as
its ``rpm`` and ``tpm`` (``Ledger.take``), before it is classified or sent anywhere; one over a
limit is refused with 429 ``rate_limit_exceeded`` having taken nothing. The ingress gives the
leases back as soon as the request ends (its answer built, its stream closed, or it failed), in a
call of their own that does not hold up the answer; settling the request gives them back too, in
case that call was lost. A lease that nobody gives back (its ingress replica died) expires after
the longest a request may live. The leases are in the BudgetLedger actor's memory: a restarted
actor starts with every slot free, so for a moment a key may have up to twice its limit in flight.

Unlike ``rpm``, nothing refills with time, so a refusal cannot say when to retry: it suggests one
second (``Retry-After: 1``), and OpenAI's SDKs retry a 429 with backoff on their own.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from serve_app.rate_limits import RateDecision

RETRY_AFTER_S = 1.0
UNIT = "parallel_requests"


@dataclass(frozen=True)
class Slot:
    """One of ``limit`` slots of ``bucket`` (``parallel:<key id>`` or ``parallel:team:<name>``)."""

    bucket: str
    limit: int
    scope: str = "key"  # or "team"


@dataclass(frozen=True)
class Lease:
    """What a request takes for as long as it runs: ``slots`` under its id, for ``ttl_s`` at most."""

    request_id: str
    slots: tuple[Slot, ...]
    ttl_s: float


def slots(
    key_id: str, key_limit: int | None, team: str | None = None, team_limit: int | None = None
) -> list[Slot]:
    """The slots one request needs: its key's and its team's (a limit that is None is not there)."""
    out = [Slot(f"parallel:{key_id}", key_limit)] if key_limit is not None else []
    if team is not None and team_limit is not None:
        out.append(Slot(f"parallel:team:{team}", team_limit, "team"))
    return out


class ConcurrencyLimiter:
    """Leases by bucket. Not thread-safe: one event loop owns it (the ledger actor's)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._leases: dict[str, dict[str, float]] = {}  # bucket -> request id -> expires at
        self._held: dict[str, tuple[str, ...]] = {}  # request id -> its buckets

    def check(self, wanted: list[Slot]) -> list[RateDecision]:
        """Whether each slot is free now (nothing is taken)."""
        now = self.clock()
        out = []
        for s in wanted:
            if s.limit <= 0:
                raise ValueError("a parallel-request limit must be positive")
            busy = self._busy(s.bucket, now)
            allowed = busy < s.limit
            out.append(
                RateDecision(
                    allowed,
                    s.limit,
                    max(0, s.limit - busy - 1) if allowed else 0,
                    0.0,
                    0.0 if allowed else RETRY_AFTER_S,
                    UNIT,
                    scope=s.scope,
                )
            )
        return out

    def acquire(self, request_id: str, wanted: list[Slot], ttl_s: float) -> None:
        """Lease every slot in ``wanted`` (``check`` said they are free) until ``ttl_s`` from now.
        Leasing again under the same request id (a call retried after an actor crash) changes
        nothing."""
        if not wanted or request_id in self._held:
            return
        expires = self.clock() + ttl_s
        for s in wanted:
            self._leases.setdefault(s.bucket, {})[request_id] = expires
        self._held[request_id] = tuple(s.bucket for s in wanted)

    def release(self, request_ids: Iterable[str]) -> int:
        """Give back the leases of these requests (unknown ids are ignored); how many had some."""
        n = 0
        for rid in request_ids:
            buckets = self._held.pop(rid, None)
            if buckets is None:
                continue
            n += 1
            for bucket in buckets:
                leases = self._leases.get(bucket)
                if leases is not None:
                    leases.pop(rid, None)
                    if not leases:
                        del self._leases[bucket]
        return n

    def in_flight(self, bucket: str) -> int:
        return self._busy(bucket, self.clock())

    def _busy(self, bucket: str, now: float) -> int:
        leases = self._leases.get(bucket)
        if not leases:
            return 0
        stale = [rid for rid, expires in leases.items() if expires <= now]
        if stale:
            self.release(stale)  # their replica died: the request cannot be running any more
        return len(self._leases.get(bucket, {}))
