"""The budget ledger: reserve a request's worst-case cost before the call, settle its real cost
after it, in SQLite (WAL), so that concurrent requests cannot overspend and a crash loses no
settled spend. Plain Python; ``deployments/ledger.py`` is the Ray actor that owns it.

Budgets have a scope (``global``, ``team:<name>``, ``key:<key id>``), a limit in USD and a period
(a UTC calendar day or month). A request is admitted when, for every scope that applies to it,
``spent + reserved + its reservation <= limit``; otherwise it is refused with the exhausted scope.
Each admitted reservation is written before ``reserve`` returns, and each settlement replaces
its reservation with a spend row in one transaction (idempotent by request id), so after a
kill -9 the ledger reopens with exactly the spend and the holds it had: requests in flight then
settle against the restarted ledger. Spend overshoots a limit only by what a request costs
beyond its own reservation (a stream continued on another model).

Budgets read their period's spend from hourly totals kept with the rows (``serve_app/spend_rollup.py``),
so their cost does not grow with the spend a file holds, and the rows may be dropped after
``ledger.retention_days`` (``prune``).

The same file holds the API keys (``serve_app/keys.py``) and the clients' quality feedback.
"""

from __future__ import annotations

import calendar
import datetime as dt
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from serve_app import spend_rollup
from serve_app.concurrency import ConcurrencyLimiter, Lease
from serve_app.keys import KeyStore, Period
from serve_app.rate_limits import RateDecision, RateLimiter, Want, answer_buckets
from serve_app.tuning import TuningStore

Synchronous = Literal["OFF", "NORMAL", "FULL"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS reservations (
    request_id  TEXT PRIMARY KEY,
    amount_usd  REAL NOT NULL,
    key_id      TEXT,
    team        TEXT,
    created_at  REAL NOT NULL,
    expires_at  REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS spend (
    request_id          TEXT PRIMARY KEY,
    settled_at          REAL NOT NULL,
    key_id              TEXT,
    team                TEXT,
    model               TEXT,
    provider            TEXT,
    cost_usd            REAL NOT NULL,
    reserved_usd        REAL,
    input_tokens        INTEGER NOT NULL DEFAULT 0,
    output_tokens       INTEGER NOT NULL DEFAULT 0,
    cached_tokens       INTEGER NOT NULL DEFAULT 0,
    reasoning_tokens    INTEGER NOT NULL DEFAULT 0,
    cache_write_tokens  INTEGER NOT NULL DEFAULT 0,
    task_type           TEXT,
    policy              TEXT
);
CREATE INDEX IF NOT EXISTS spend_time ON spend (settled_at);
CREATE TABLE IF NOT EXISTS feedback (
    request_id  TEXT PRIMARY KEY,
    model       TEXT NOT NULL,
    score       REAL NOT NULL,
    given_at    REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS feedback_time ON feedback (given_at);
"""


class BudgetLimit(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    limit_usd: float = Field(ge=0)
    period: Period = "month"


class BudgetsConfig(BaseModel):
    """Budgets of the whole router and of teams (a key's own budget is set when it is made)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    global_: BudgetLimit | None = Field(default=None, alias="global")
    teams: dict[str, BudgetLimit] = Field(default_factory=dict)
    pressure: float = Field(
        default=0.8, gt=0, le=1, description="above this share spent, auto routing starts at cost_sensitive"
    )
    max_output_tokens: int = Field(
        default=4096,
        ge=1,
        description="the output a request under a budget may produce when it sets no max_tokens "
        "(reserved, and passed to the provider as its limit)",
    )
    reserve_timeout_s: float = Field(
        default=5.0,
        gt=0,
        description="how long a request waits for the ledger (restarting): then a budgeted request "
        "gets 503, and a rate-limited key's request goes on unchecked",
    )

    def budgets(self) -> list[Budget]:
        out = [Budget("global", self.global_.limit_usd, self.global_.period)] if self.global_ else []
        return out + [Budget(f"team:{t}", b.limit_usd, b.period) for t, b in self.teams.items()]


class LedgerConfig(BaseModel):
    """Where the ledger keeps its SQLite file, and how the ingress talks to it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(
        default="~/.local/share/fusion-router/ledger.db",
        description="the SQLite file (WAL); on a cluster it lives on the head node",
    )
    synchronous: Synchronous = Field(
        default="NORMAL", description="NORMAL survives a process crash; FULL also a power cut"
    )
    settle_interval_s: float = Field(
        default=0.25, gt=0, description="ingress replicas send settlements in batches this often"
    )
    pin_to_head_node: bool = Field(default=True, description="keep the replica where its file is")
    retention_days: float | None = Field(
        default=None,
        ge=1,
        description="drop each request's spend row and feedback score after this many days (null: "
        "keep them all); the hourly totals that budgets and hourly or daily usage reports read are kept",
    )


@dataclass(frozen=True)
class Budget:
    scope: str  # global, team:<name> or key:<key id>
    limit_usd: float
    period: Period


@dataclass(frozen=True)
class Charge:
    """One request's real cost, sent by the ingress after the call (or 0 when nothing was served)."""

    request_id: str
    cost_usd: float
    key_id: str | None = None
    team: str | None = None
    model: str | None = None
    provider: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cache_write_tokens: int = 0
    task_type: str | None = None  # what the classifier said (routed requests)
    policy: str | None = None  # auto, auto:cost, ..., or direct


@dataclass(frozen=True)
class Admission:
    """The answer to a reservation: admitted, or refused naming the exhausted scope."""

    admitted: bool
    amount_usd: float
    refused_scope: str | None = None
    remaining_usd: float | None = None  # of the refused scope
    pressure: float = 0.0  # the highest (spent + reserved) / limit over the request's scopes
    resets_at: float | None = None  # when the refused scope's period ends


@dataclass
class _Usage:
    period_start: float
    spent: float = 0.0
    reserved: float = 0.0


@dataclass
class _Hold:
    amount: float
    scopes: tuple[str, ...]
    expires_at: float


def period_start(period: Period, now: float) -> float:
    """The UTC start of the day or month that ``now`` falls in."""
    t = dt.datetime.fromtimestamp(now, dt.UTC)
    start = t.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "month":
        start = start.replace(day=1)
    return calendar.timegm(start.timetuple())


def _migrate(db: sqlite3.Connection) -> None:
    """Columns added since a ledger file was made."""
    have = {row[1] for row in db.execute("PRAGMA table_info(spend)")}
    with db:
        for column in ("task_type", "policy"):
            if column not in have:
                db.execute(f"ALTER TABLE spend ADD COLUMN {column} TEXT")


def period_end(period: Period, now: float) -> float:
    """When the UTC day or month that ``now`` falls in ends."""
    start = dt.datetime.fromtimestamp(period_start(period, now), dt.UTC)
    if period == "day":
        end = start + dt.timedelta(days=1)
    else:
        end = (start + dt.timedelta(days=32)).replace(day=1)
    return calendar.timegm(end.timetuple())


def connect(path: str | Path, synchronous: Synchronous = "NORMAL") -> sqlite3.Connection:
    """The ledger's SQLite file in WAL mode. NORMAL keeps every commit across a process crash
    (kill -9); FULL also across a power cut, at one fsync per commit."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(str(path), check_same_thread=False, timeout=10.0)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={synchronous}")
    db.execute("PRAGMA busy_timeout=10000")
    return db


class Ledger:
    """Budgets, reservations, spend and feedback over one SQLite connection. Not thread-safe: its
    owner calls it from one thread (the BudgetLedger actor's event loop, or the CLI)."""

    def __init__(
        self,
        path: str | Path,
        budgets: Iterable[Budget] = (),
        synchronous: Synchronous = "NORMAL",
        clock: Callable[[], float] = time.time,
        quality_targets: Mapping[str, float] | None = None,
    ) -> None:
        self.path = Path(path).expanduser()
        self.db = connect(self.path, synchronous)
        self.db.executescript(SCHEMA)
        _migrate(self.db)
        spend_rollup.ensure(self.db)  # hourly totals; built from the rows of an older file
        self.keys = KeyStore(self.db)
        self.tuning = TuningStore(self.db, quality_targets or {})
        self.clock = clock
        self.configured = {b.scope: b for b in budgets}
        self._usage: dict[str, _Usage] = {}
        self._holds: dict[str, _Hold] = {}
        self._load_holds()
        self.rates = RateLimiter()  # per-key rpm and tpm; in memory (serve_app/rate_limits.py)
        self.parallel = ConcurrencyLimiter()  # requests in flight per key and team (serve_app/concurrency.py)

    def configure(
        self, budgets: Iterable[Budget], quality_targets: Mapping[str, float] | None = None
    ) -> None:
        """Replace the configured budgets (a redeploy); holds and spend are re-read for them."""
        self.tuning.configure(quality_targets or {})
        self.configured = {b.scope: b for b in budgets}
        self._usage.clear()
        self._holds.clear()
        self._load_holds()

    # -- budgets ----------------------------------------------------------------------------------

    def budgets_for(self, key_id: str | None, team: str | None) -> list[Budget]:
        """The budgets that apply to a request made with this key (global, its team's, its own)."""
        out = []
        if "global" in self.configured:
            out.append(self.configured["global"])
        if team is not None and f"team:{team}" in self.configured:
            out.append(self.configured[f"team:{team}"])
        if key_id is not None:
            record = self.keys.get(key_id)
            if record is not None and record.budget_usd is not None and record.period is not None:
                out.append(Budget(f"key:{key_id}", record.budget_usd, record.period))
        return out

    def _usage_of(self, budget: Budget, now: float) -> _Usage:
        """The scope's spend in the current period (re-read from disk when a new period begins)."""
        start = period_start(budget.period, now)
        usage = self._usage.get(budget.scope)
        if usage is None or usage.period_start != start:
            reserved = sum(h.amount for h in self._holds.values() if budget.scope in h.scopes)
            usage = _Usage(start, self._spent_since(budget.scope, start), reserved)
            self._usage[budget.scope] = usage
        return usage

    def _spent_since(self, scope: str, start: float) -> float:
        """From the hourly totals (``serve_app/spend_rollup.py``): a period starts on a UTC hour."""
        if scope.startswith("team:"):
            return spend_rollup.spent_since(self.db, start, team=scope[5:])
        if scope.startswith("key:"):
            return spend_rollup.spent_since(self.db, start, key_id=scope[4:])
        return spend_rollup.spent_since(self.db, start)

    def reserve(
        self, request_id: str, amount_usd: float, key_id: str | None, team: str | None, ttl_s: float
    ) -> Admission:
        """Hold ``amount_usd`` against every budget of the request, or refuse without holding any."""
        now = self.clock()
        self._expire(now)
        budgets = self.budgets_for(key_id, team)
        pressure = 0.0
        for b in budgets:
            u = self._usage_of(b, now)
            if u.spent + u.reserved + amount_usd > b.limit_usd + 1e-12:
                remaining = max(0.0, b.limit_usd - u.spent - u.reserved)
                return Admission(
                    False,
                    amount_usd,
                    b.scope,
                    remaining,
                    self._pressure(budgets, now),
                    period_end(b.period, now),
                )
            if b.limit_usd > 0:
                pressure = max(pressure, (u.spent + u.reserved + amount_usd) / b.limit_usd)
        if not budgets or request_id in self._holds:
            return Admission(True, amount_usd, pressure=pressure)
        scopes = tuple(b.scope for b in budgets)
        with self.db:
            self.db.execute(
                "INSERT INTO reservations VALUES (?, ?, ?, ?, ?, ?)",
                (request_id, amount_usd, key_id, team, now, now + ttl_s),
            )
        self._holds[request_id] = _Hold(amount_usd, scopes, now + ttl_s)
        for b in budgets:
            self._usage_of(b, now).reserved += amount_usd
        return Admission(True, amount_usd, pressure=pressure)

    def take(self, requested: list[Want], lease: Lease | None = None) -> list[RateDecision]:
        """One request against its key's and team's limits: a minute's requests and tokens
        (``rate_limits.wants``) and, with ``lease``, requests in flight (``concurrency.slots``).
        Admitted against all of them, its slots leased until ``release``, or refused having taken
        nothing, with each limit's state. Its answer's tokens are charged when it settles."""
        slots = list(lease.slots) if lease is not None else []
        parallel = self.parallel.check(slots)
        if not all(d.allowed for d in parallel):
            return parallel  # no request or token is spent on a request refused here
        decisions = self.rates.take(*requested)
        if lease is not None and all(d.allowed for d in decisions):
            self.parallel.acquire(lease.request_id, slots, lease.ttl_s)
        return decisions + parallel

    def release(self, request_ids: list[str]) -> int:
        """Give back the parallel-request slots of requests that ended."""
        return self.parallel.release(request_ids)

    def settle(self, charges: Iterable[Charge]) -> int:
        """Record real costs and release their holds, all in one transaction. A charge already
        settled is ignored, so the ingress may resend a batch it is unsure about. Returns the
        number of charges newly recorded."""
        now = self.clock()
        done: list[tuple[Charge, bool, bool]] = []  # (charge, newly recorded, had a hold)
        with self.db:
            for c in charges:
                hold = self._holds.get(c.request_id)
                cursor = self.db.execute(
                    "INSERT OR IGNORE INTO spend VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        c.request_id,
                        now,
                        c.key_id,
                        c.team,
                        c.model,
                        c.provider,
                        c.cost_usd,
                        hold.amount if hold else None,
                        c.input_tokens,
                        c.output_tokens,
                        c.cached_tokens,
                        c.reasoning_tokens,
                        c.cache_write_tokens,
                        c.task_type,
                        c.policy,
                    ),
                )
                recorded = cursor.rowcount == 1
                if recorded:
                    spend_rollup.add(
                        self.db,
                        now,
                        (c.key_id, c.team, c.model, c.provider, c.task_type, c.policy),
                        (
                            c.cost_usd,
                            c.input_tokens,
                            c.output_tokens,
                            c.cached_tokens,
                            c.reasoning_tokens,
                            c.cache_write_tokens,
                        ),
                    )
                if hold is not None:
                    self.db.execute("DELETE FROM reservations WHERE request_id = ?", (c.request_id,))
                done.append((c, recorded, hold is not None))
        self.parallel.release(c.request_id for c, _, _ in done)  # ended, if not released already
        for charge, recorded, had_hold in done:  # committed: now the totals in memory follow
            if had_hold:
                self._release(charge.request_id)
            if recorded:
                self._add_spend(charge, now)
                for bucket in answer_buckets(charge.key_id, charge.team):  # tpm, where there is one
                    self.rates.charge(bucket, charge.output_tokens)
        return sum(1 for _, recorded, _ in done if recorded)

    def _release(self, request_id: str) -> None:
        hold = self._holds.pop(request_id, None)
        if hold is None:
            return
        for scope in hold.scopes:
            usage = self._usage.get(scope)
            if usage is not None:
                left = usage.reserved - hold.amount
                usage.reserved = left if left > 1e-12 else 0.0  # no float residue (1e-21) once all are gone

    def _add_spend(self, c: Charge, now: float) -> None:
        if not c.cost_usd:
            return
        scopes = ["global"]
        if c.team is not None:
            scopes.append(f"team:{c.team}")
        if c.key_id is not None:
            scopes.append(f"key:{c.key_id}")
        for scope in scopes:
            usage = self._usage.get(scope)
            if usage is not None and now >= usage.period_start:
                usage.spent += c.cost_usd

    def _load_holds(self) -> None:
        rows = self.db.execute("SELECT request_id, amount_usd, key_id, team, expires_at FROM reservations")
        for request_id, amount, key_id, team, expires_at in rows.fetchall():
            scopes = tuple(b.scope for b in self.budgets_for(key_id, team))
            self._holds[request_id] = _Hold(amount, scopes, expires_at)

    def _expire(self, now: float) -> None:
        """Release holds whose request never settled (its ingress replica died) after their TTL."""
        stale = [rid for rid, h in self._holds.items() if h.expires_at <= now]
        if not stale:
            return
        with self.db:
            self.db.executemany("DELETE FROM reservations WHERE request_id = ?", [(r,) for r in stale])
        for rid in stale:
            self._release(rid)

    def _pressure(self, budgets: list[Budget], now: float) -> float:
        out = 0.0
        for b in budgets:
            u = self._usage_of(b, now)
            out = max(out, (u.spent + u.reserved) / b.limit_usd if b.limit_usd > 0 else 1.0)
        return out

    def status(self) -> list[dict[str, Any]]:
        """Every budget with its period's spend, holds and what is left."""
        now = self.clock()
        self._expire(now)
        budgets = list(self.configured.values())
        budgets += [
            Budget(f"key:{r.key_id}", r.budget_usd, r.period)
            for r in self.keys.list(include_revoked=False)
            if r.budget_usd is not None and r.period is not None
        ]
        out = []
        for b in budgets:
            u = self._usage_of(b, now)
            remaining = max(0.0, b.limit_usd - u.spent - u.reserved)
            used = (u.spent + u.reserved) / b.limit_usd if b.limit_usd > 0 else 1.0
            out.append(
                asdict(b)
                | {
                    "spent_usd": u.spent,
                    "reserved_usd": u.reserved,
                    "remaining_usd": remaining,
                    "pressure": used,
                    "period_start": u.period_start,
                }
            )
        return out

    def pressure_by_scope(self) -> dict[str, float]:
        return {row["scope"]: row["pressure"] for row in self.status()}

    # -- feedback and per-model economics -------------------------------------------------------

    @property
    def holds(self) -> int:
        return len(self._holds)

    def feedback(self, request_id: str, score: float, key_id: str | None = None) -> str | None:
        """Record a client's score for a settled request; the model that served it, or None if the
        request is unknown, served no model, or was made with another key than ``key_id``."""
        row = self.db.execute(
            "SELECT model, key_id, task_type, policy FROM spend WHERE request_id = ?", (request_id,)
        ).fetchone()
        if row is None or row[0] is None or (row[1] is not None and row[1] != key_id):
            return None
        with self.db:
            self.db.execute(
                "INSERT OR REPLACE INTO feedback VALUES (?, ?, ?, ?)",
                (request_id, row[0], score, self.clock()),
            )
        if row[3] == "auto" and row[2] is not None:  # the routing policy's own choice: tune it
            self.tuning.observe(row[2], score)
        return str(row[0])

    def economics(self, window_s: float) -> dict[str, dict[str, float | int | None]]:
        """Per model: requests, mean cost per request over the last ``window_s``, and the mean
        feedback score with its count (every score kept: all of them, or those of the last
        ``retention_days`` when the ledger has a retention). Answers given again from the
        response cache (policy ``cache``, no cost) are not calls of the model: not counted."""
        since = self.clock() - window_s
        out: dict[str, dict[str, float | int | None]] = {}
        for model, n, mean_cost in self.db.execute(
            "SELECT model, COUNT(*), AVG(cost_usd) FROM spend WHERE settled_at >= ? AND model IS NOT NULL "
            "AND policy IS NOT 'cache' GROUP BY model",
            (since,),
        ):
            out[model] = {"requests": n, "cost_per_request_usd": mean_cost, "quality": None, "feedback": 0}
        for model, n, mean in self.db.execute(
            "SELECT model, COUNT(*), AVG(score) FROM feedback GROUP BY model"
        ):
            row = out.setdefault(model, {"requests": 0, "cost_per_request_usd": None})
            row["quality"], row["feedback"] = mean, n
        return out

    def settled_total(self) -> float:
        return spend_rollup.spent_since(self.db, 0.0)

    # -- retention ----------------------------------------------------------------------------------

    def prune(self, retention_s: float, max_rows: int = 2000) -> int:
        """Drop up to ``max_rows`` spend and feedback rows older than ``retention_s``, spend first;
        the spend's hourly totals, and so every budget and hourly or daily report, stay
        (``serve_app/spend_rollup.py``). Feedback on a dropped request is refused as on an unknown
        one. Returns the rows dropped: ``max_rows`` means there may be more."""
        before = self.clock() - retention_s
        dropped = spend_rollup.prune(self.db, before, max_rows)
        if dropped < max_rows:
            with self.db:
                dropped += self.db.execute(
                    "DELETE FROM feedback WHERE rowid IN "
                    "(SELECT rowid FROM feedback WHERE given_at < ? ORDER BY given_at LIMIT ?)",
                    (before, max_rows - dropped),
                ).rowcount
        return dropped

    def close(self) -> None:
        self.db.close()
