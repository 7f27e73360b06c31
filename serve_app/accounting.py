"""The ingress's side of money: who is calling, how often, may they spend, what did they spend.

- ``authenticate``: the key from ``Authorization: Bearer`` (or ``x-api-key``) against the replica's
  copy of the key table (``KeyRing``), refreshed every ``auth.refresh_interval_s``: no call.
- ``limit``: for a key with rate limits (``rpm``, ``tpm``, ``max_parallel_requests``; its own or
  its team's), the request and its prompt's tokens counted, and a slot leased, on the ledger before
  any work is done for it (``serve_app/rate_limits.py``, ``serve_app/concurrency.py``); refused: 429
  rate_limit_exceeded. ``release`` gives the slots back when the request's work is done.
- ``admit``: when a budget applies to the request (global, its team's, its key's), reserve the
  worst case of the candidates it may be served by, on the ledger, before any provider is
  called; refused: 429 insufficient_quota. A request under a budget that sets no output limit
  gets ``budgets.max_output_tokens``, so that its real cost cannot pass what was reserved.
  Candidates dearer than the reservation are dropped. With ``limit``, the only calls on the
  request path.
- ``settle``: after the response (or the failure), the real cost goes into an outbox that is
  sent to the ledger in batches every ``ledger.settle_interval_s``, off the request path; a batch
  the ledger did not confirm is resent until it does (settling is idempotent by request id).

The ledger is reached through a ``LedgerClient``: the BudgetLedger actor in the ingress
(``serve_app/ingress.py``), the ``Ledger`` itself in unit tests and the CLI (``LocalLedgerClient``).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import time
from collections.abc import Mapping
from typing import Any, Protocol

from serve_app.concurrency import Lease, slots
from serve_app.config import FusionConfig
from serve_app.errors import AuthenticationError, BudgetExceededError, LedgerUnavailableError, RateLimitError
from serve_app.keys import KeyRecord, KeyRing, Period, bearer
from serve_app.ledger import Admission, Charge, Ledger
from serve_app.pricing import bounded, request_worst_case_usd
from serve_app.rate_limits import RateDecision, Want, wants
from serve_app.rate_limits import headers as rate_headers
from serve_app.route_info import RouteInfo
from serve_app.schemas import ChatCompletionRequest
from serve_app.usage import UsageQuery, read_usage

logger = logging.getLogger("fusion_router")

# what ingress replicas copy from the ledger: keys by hash, budget pressure by scope, and the
# self-tuned required quality by task type
Directory = tuple[dict[str, KeyRecord], dict[str, float], dict[str, float]]


def directory(ledger: Ledger) -> Directory:
    return ledger.keys.snapshot(), ledger.pressure_by_scope(), ledger.tuning.required()


class LedgerClient(Protocol):
    """The BudgetLedger actor's methods (``deployments/ledger.py``), as the ingress awaits them."""

    async def reserve(
        self, request_id: str, amount_usd: float, key_id: str | None, team: str | None, ttl_s: float
    ) -> Admission: ...
    async def take(self, requested: list[Want], lease: Lease | None = None) -> list[RateDecision]: ...
    async def release(self, request_ids: list[str]) -> int: ...
    async def settle(self, charges: list[Charge]) -> int: ...
    async def directory(self) -> Directory: ...
    async def create_key(
        self,
        team: str,
        name: str,
        budget_usd: float | None,
        period: Period | None,
        rpm: int | None = None,
        models: tuple[str, ...] | None = None,
        tpm: int | None = None,
        expires_at: float | None = None,
        max_parallel_requests: int | None = None,
    ) -> tuple[str, KeyRecord]: ...
    async def list_keys(self) -> list[KeyRecord]: ...
    async def revoke_key(self, key_id: str) -> KeyRecord | None: ...
    async def rotate_key(self, key_id: str, grace_s: float) -> tuple[str, KeyRecord] | None: ...
    async def update_key(self, key_id: str, changes: dict[str, Any]) -> KeyRecord | None: ...
    async def status(self) -> list[dict[str, Any]]: ...
    async def feedback(self, request_id: str, score: float, key_id: str | None) -> str | None: ...
    async def economics(self, window_s: float) -> dict[str, dict[str, Any]]: ...
    async def usage(self, query: UsageQuery) -> dict[str, Any]: ...


class LocalLedgerClient:
    """A ``Ledger`` in this process (unit tests, and the CLI)."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    async def reserve(
        self, request_id: str, amount_usd: float, key_id: str | None, team: str | None, ttl_s: float
    ) -> Admission:
        return self.ledger.reserve(request_id, amount_usd, key_id, team, ttl_s)

    async def take(self, requested: list[Want], lease: Lease | None = None) -> list[RateDecision]:
        return self.ledger.take(requested, lease)

    async def release(self, request_ids: list[str]) -> int:
        return self.ledger.release(request_ids)

    async def settle(self, charges: list[Charge]) -> int:
        return self.ledger.settle(charges)

    async def directory(self) -> Directory:
        return directory(self.ledger)

    async def create_key(
        self,
        team: str,
        name: str,
        budget_usd: float | None,
        period: Period | None,
        rpm: int | None = None,
        models: tuple[str, ...] | None = None,
        tpm: int | None = None,
        expires_at: float | None = None,
        max_parallel_requests: int | None = None,
    ) -> tuple[str, KeyRecord]:
        return self.ledger.keys.create(
            team, name, budget_usd, period, rpm, models, tpm, expires_at, max_parallel_requests
        )

    async def list_keys(self) -> list[KeyRecord]:
        return self.ledger.keys.list()

    async def revoke_key(self, key_id: str) -> KeyRecord | None:
        return self.ledger.keys.revoke(key_id)

    async def rotate_key(self, key_id: str, grace_s: float) -> tuple[str, KeyRecord] | None:
        return self.ledger.keys.rotate(key_id, grace_s)

    async def update_key(self, key_id: str, changes: dict[str, Any]) -> KeyRecord | None:
        return self.ledger.keys.update(key_id, changes)

    async def status(self) -> list[dict[str, Any]]:
        return self.ledger.status()

    async def feedback(self, request_id: str, score: float, key_id: str | None) -> str | None:
        return self.ledger.feedback(request_id, score, key_id)

    async def economics(self, window_s: float) -> dict[str, dict[str, Any]]:
        return self.ledger.economics(window_s)

    async def usage(self, query: UsageQuery) -> dict[str, Any]:
        """A usage report, read on a worker thread through its own read-only connection, so that
        a long one holds up no reservation (``serve_app/usage.py``)."""
        return await asyncio.to_thread(read_usage, self.ledger.path, query, self.ledger.clock())


# a reservation is held for a request's whole life at most; one left by a dead replica expires
_HOLD_MARGIN_S = 60.0


class Accountant:
    def __init__(
        self,
        config: FusionConfig,
        ledger: LedgerClient,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config
        self.ledger = ledger
        self.ring = KeyRing(required=config.auth.required)
        self.pressure: dict[str, float] = {}  # scope -> (spent + reserved) / limit, from the ledger
        self.required_quality: dict[str, float] = {}  # task type -> self-tuned target (updated in place)
        self.outbox: list[Charge] = []
        env = os.environ if environ is None else environ
        self._admin_key = env.get(config.auth.admin_key_env) or None
        self._teams = set(config.budgets.teams)
        self._failures = 0
        self._limit_failures = 0
        self._leased: set[str] = set()  # requests holding parallel-request slots on the ledger
        self._releases: set[asyncio.Task[Any]] = set()

    def _longest_life_s(self) -> float:
        """How long a request can live: what its budget hold and its parallel-request slot are
        leased for, so that those a dead replica left behind expire."""
        return 2 * self.config.server.request_timeout_s + _HOLD_MARGIN_S

    # -- who ----------------------------------------------------------------------------------------

    def authenticate(self, authorization: str | None, x_api_key: str | None = None) -> KeyRecord | None:
        presented = bearer(authorization, x_api_key)
        record = self.ring.check(presented)
        if record is None and self.ring.required:
            if presented is None:
                raise AuthenticationError(
                    "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'."
                )
            found = self.ring.find(presented)
            if found is not None and found.active and found.expires_at is not None:
                when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(found.expires_at))
                if found.retired_at is not None and found.retired_at <= found.expires_at:
                    raise AuthenticationError(
                        f"This API key was replaced by a new one (rotated) and stopped working at {when}."
                    )
                raise AuthenticationError(f"This API key expired at {when}.")
            raise AuthenticationError("Incorrect API key provided (unknown or revoked).")
        return record

    @property
    def admin_enabled(self) -> bool:
        return self._admin_key is not None

    def check_admin(self, authorization: str | None, x_api_key: str | None = None) -> None:
        if self._admin_key is None:
            raise AuthenticationError(
                f"The admin API is off: set {self.config.auth.admin_key_env} for the router to enable it."
            )
        presented = bearer(authorization, x_api_key) or ""
        if not hmac.compare_digest(presented.encode(), self._admin_key.encode()):
            raise AuthenticationError("Incorrect admin key provided.")

    # -- how often ----------------------------------------------------------------------------------

    async def limit(
        self, key: KeyRecord | None, chat: ChatCompletionRequest, request_id: str
    ) -> list[RateDecision]:
        """Count the request against the key's ``rpm`` and its prompt's tokens against its ``tpm``,
        and both against its team's (``rate_limits.teams``), on the ledger (one limiter for every
        ingress replica; the answer's tokens are charged when it settles), and lease it a slot of
        the key's and the team's ``max_parallel_requests`` until ``release``; over a limit: 429
        rate_limit_exceeded with Retry-After. A key without limits, of a team without, costs
        nothing. When the ledger does not answer in time the request goes on unlimited (a rate limit
        protects capacity, not money: budgets still fail closed) and a warning is logged."""
        if key is None:
            return []
        team = self.config.rate_limits.teams.get(key.team)
        team_rpm, team_tpm, team_parallel = (
            (team.rpm, team.tpm, team.max_parallel_requests) if team is not None else (None, None, None)
        )
        tokens = chat.prompt_tokens_upper() if key.tpm is not None or team_tpm is not None else 0
        requested = wants(key.key_id, key.rpm, key.tpm, tokens, key.team, team_rpm, team_tpm)
        needed = slots(key.key_id, key.max_parallel_requests, key.team, team_parallel)
        if not requested and not needed:
            return []
        ttl = self._longest_life_s()
        lease = Lease(request_id, tuple(needed), ttl) if needed else None
        try:
            decisions = await asyncio.wait_for(
                self.ledger.take(requested, lease), timeout=self.config.budgets.reserve_timeout_s
            )
        except Exception as exc:  # timeout, or the actor restarting
            self._limit_failures += 1
            if self._limit_failures in (1, 10, 100) or self._limit_failures % 1000 == 0:
                logger.warning(
                    "rate limit check failed %d times (%s): admitted without it",
                    self._limit_failures,
                    type(exc).__name__,
                )
            return []
        refused = [d for d in decisions if not d.allowed]
        if refused:
            first = max(refused, key=lambda d: (d.never, d.retry_after_s))
            who = f"key '{key.name}' ({key.key_id})" if first.scope == "key" else f"team '{key.team}'"
            what = f"Rate limit reached for {who}: {first.limit} {first.unit} per minute."
            if first.unit == "parallel_requests":
                what = (
                    f"Too many requests in flight for {who}: at most {first.limit} at a time. "
                    "Retry when one of them has finished."
                )
            elif first.never:
                what = (
                    f"Request too large for {who}: its prompt is about {tokens} "
                    f"tokens, more than its limit of {first.limit} tokens per minute. Shorten it."
                )
            else:
                what += f" Retry after {first.retry_after_s:.2f} s."
            limit = first.unit if first.scope == "key" else f"team_{first.unit}"
            raise RateLimitError(what, limit=limit, headers=rate_headers(decisions))
        if lease is not None:
            self._leased.add(request_id)
        return decisions

    async def release(self, request_id: str) -> None:
        """The request's work is done: give its parallel-request slots back before its client
        sees the end of the answer, so that the client's next request finds them free (a release
        sent after the answer raced that request, and lost, in tests). Costs one ledger call, only
        for requests that took slots. Settling gives them back too, should this call fail."""
        if request_id not in self._leased:
            return
        self._leased.discard(request_id)
        try:
            await asyncio.wait_for(
                self.ledger.release([request_id]), timeout=self.config.budgets.reserve_timeout_s
            )
        except Exception as exc:  # the settlement or the lease's expiry gives the slot back
            logger.warning("releasing a parallel-request slot failed (%s)", type(exc).__name__)

    def release_soon(self, request_id: str) -> None:
        """``release`` without waiting for it, for a request that ended where nothing can wait (a
        stream its client left). Never blocks."""
        if request_id not in self._leased:
            return
        task = asyncio.get_running_loop().create_task(self.release(request_id))
        self._releases.add(task)  # a reference until it is done (the loop keeps only weak ones)
        task.add_done_callback(self._releases.discard)

    # -- may they spend -------------------------------------------------------------------------------

    def scopes(self, key: KeyRecord | None) -> list[str]:
        """The budgets that apply to a request made with ``key``."""
        out = ["global"] if self.config.budgets.global_ is not None else []
        if key is not None and key.team in self._teams:
            out.append(f"team:{key.team}")
        if key is not None and key.budget_usd is not None:
            out.append(f"key:{key.key_id}")
        return out

    def under_pressure(self, key: KeyRecord | None) -> bool:
        """Some budget of the request is past ``budgets.pressure`` (auto then starts cost-sensitive)."""
        threshold = self.config.budgets.pressure
        return any(self.pressure.get(scope, 0.0) >= threshold for scope in self.scopes(key))

    async def admit(
        self, chat: ChatCompletionRequest, info: RouteInfo, key: KeyRecord | None
    ) -> ChatCompletionRequest:
        """Reserve the request's worst-case cost; the request, with an output limit when it needed one."""
        scopes = self.scopes(key)
        if not scopes:
            return chat
        chat = bounded(self.config, chat)
        costs = [request_worst_case_usd(self.config, chat, c.model) for c in info.candidates]
        amount = max(costs[:3])  # the routing table's row: primary, fallback, cost_sensitive
        info.candidates = [c for c, cost in zip(info.candidates, costs, strict=True) if cost <= amount]
        ttl = self._longest_life_s()
        team = key.team if key is not None else None
        key_id = key.key_id if key is not None else None
        try:
            admission = await asyncio.wait_for(
                self.ledger.reserve(info.request_id, amount, key_id, team, ttl),
                timeout=self.config.budgets.reserve_timeout_s,
            )
        except TimeoutError:
            raise LedgerUnavailableError(
                "The budget ledger did not answer in time; nothing was charged. Retry shortly."
            ) from None
        if not admission.admitted:
            left = admission.remaining_usd or 0.0
            scope = admission.refused_scope or "budget"
            wait = admission.resets_at - time.time() if admission.resets_at else None
            raise BudgetExceededError(
                f"The {scope} budget is exhausted: ${left:.6f} left in this period, and this request may "
                f"cost up to ${amount:.6f}. Lower max_tokens, wait for the period to reset, or raise "
                "the budget.",
                scope=scope,
                retry_after_s=wait,
            )
        info.reserved_usd = amount
        for scope in scopes:  # keep the replica's picture current between refreshes
            self.pressure[scope] = max(self.pressure.get(scope, 0.0), admission.pressure)
        return chat

    # -- what did they spend --------------------------------------------------------------------------

    def settle(self, info: RouteInfo, key: KeyRecord | None) -> None:
        """Queue the request's real cost (released hold when nothing was spent). Never blocks."""
        served = info.served_by
        if info.reserved_usd is None and served is None and not info.cost_usd:
            return  # nothing held, nothing spent, nothing to score
        u = info.usage
        self.outbox.append(
            Charge(
                request_id=info.request_id,
                cost_usd=info.cost_usd or 0.0,
                key_id=key.key_id if key is not None else None,
                team=key.team if key is not None else None,
                model=served.model if served is not None else None,
                provider=served.provider if served is not None else None,
                input_tokens=u.input_tokens,
                output_tokens=u.output_tokens,
                cached_tokens=u.cached_tokens,
                reasoning_tokens=u.reasoning_tokens,
                cache_write_tokens=u.cache_write_tokens,
                task_type=info.plan.task_type,
                policy=info.plan.policy,
            )
        )

    async def flush(self) -> bool:
        """Send the outbox; on failure keep it for the next try. True when it is empty."""
        if not self.outbox:
            return True
        batch, self.outbox = self.outbox, []
        try:
            await self.ledger.settle(batch)
        except Exception as exc:  # the ledger is restarting: resend the same batch later
            self.outbox = batch + self.outbox
            self._failures += 1
            if self._failures in (1, 10, 100):
                logger.warning(
                    "settlement of %d charges failed (%s); retrying", len(batch), type(exc).__name__
                )
            return False
        self._failures = 0
        return not self.outbox

    async def refresh(self) -> None:
        keys, pressure, required = await self.ledger.directory()
        self.ring.update(keys)
        self.pressure = dict(pressure)
        self.required_quality.clear()
        self.required_quality.update(required)

    async def run_settlements(self) -> None:
        interval = self.config.ledger.settle_interval_s
        while True:
            ok = await self.flush()
            await asyncio.sleep(interval if ok else min(1.0, interval * 2 ** min(self._failures, 5)))

    async def run_refresh(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception as exc:  # keep the last copy until the ledger answers again
                logger.warning("key table refresh failed (%s)", type(exc).__name__)
            await asyncio.sleep(self.config.auth.refresh_interval_s)
