"""Client API keys: made here, stored only as hashes, each belonging to a team.

A key is ``fr-`` followed by 43 URL-safe characters (256 random bits). The store keeps its SHA-256
(a key has full entropy, so a slow password hash would add nothing), a short prefix to tell keys
apart in listings, its team, name, optional budget, its limits (``rpm`` requests and ``tpm`` tokens
a minute, ``max_parallel_requests`` in flight; the ``models`` it may use), when it expires
(``expires_at``; checked on every request against the clock, so it takes effect at once) and
whether it is revoked. The plain key is shown once, when it is created, and never again: not in
listings, logs, responses or metrics.

``KeyStore`` lives in the ledger's SQLite file (``serve_app/ledger.py`` opens it); the CLI and the
admin endpoints write it, and the ingress replicas authenticate against a snapshot of it
(``KeyRing``) that they refresh every ``auth.refresh_interval_s``, so checking a key costs no call.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Period = Literal["day", "month"]
PREFIX = "fr-"

KEYS_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    key_id      TEXT PRIMARY KEY,
    key_hash    TEXT NOT NULL UNIQUE,
    shown       TEXT NOT NULL,
    team        TEXT NOT NULL,
    name        TEXT NOT NULL,
    budget_usd  REAL,
    period      TEXT,
    created_at  REAL NOT NULL,
    revoked_at  REAL,
    rpm         INTEGER,
    models      TEXT,
    tpm         INTEGER,
    expires_at  REAL,
    max_parallel_requests INTEGER
);
CREATE TABLE IF NOT EXISTS api_key_retired (
    key_hash    TEXT PRIMARY KEY,
    key_id      TEXT NOT NULL,
    until       REAL NOT NULL
);
"""
MAX_GRACE_S = 30 * 86_400  # how long a rotated key's old secret may keep working
COLUMNS = (
    "key_id, shown, team, name, budget_usd, period, created_at, revoked_at, rpm, models, tpm, expires_at, "
    "max_parallel_requests"
)
# since the first key tables
ADDED_COLUMNS = {
    "rpm": "INTEGER",
    "models": "TEXT",
    "tpm": "INTEGER",
    "expires_at": "REAL",
    "max_parallel_requests": "INTEGER",
}
CHANGEABLE = (*ADDED_COLUMNS, "budget_usd", "period")  # what ``KeyStore.update`` may change


class AuthConfig(BaseModel):
    """Who may call the router: client keys (``fusion keys create``) and the admin key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    required: bool | None = Field(
        default=None,
        description="true/false forces it; unset: a valid key is required once any key has been made",
    )
    admin_key_env: str = Field(
        default="FUSION_ADMIN_KEY",
        pattern=r"^[A-Z_][A-Z0-9_]*$",
        description="the variable holding the admin key; /v1/admin/* answer 401 while it is unset",
    )
    refresh_interval_s: float = Field(
        default=1.0, gt=0, description="how often ingress replicas re-read the key table (revocation delay)"
    )


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return PREFIX + secrets.token_urlsafe(32)


MAX_RPM = 10_000_000  # requests a minute: far past what one router serves; a bound on typos
MAX_TPM = 10_000_000_000  # tokens a minute, likewise
MAX_PARALLEL = 100_000  # requests in flight at once, likewise


MAX_EXPIRES_AT = 10**11  # Unix seconds (year 5138): a bound on typos such as milliseconds


def _check_limits(
    rpm: int | None, tpm: int | None, expires_at: float | None = None, parallel: int | None = None
) -> None:
    if parallel is not None and not 1 <= parallel <= MAX_PARALLEL:
        raise ValueError(f"max_parallel_requests must be 1 to {MAX_PARALLEL:_} requests in flight")
    if rpm is not None and not 1 <= rpm <= MAX_RPM:
        raise ValueError(f"a rate limit (rpm) must be 1 to {MAX_RPM:_} requests a minute")
    if tpm is not None and not 1 <= tpm <= MAX_TPM:
        raise ValueError(f"a token limit (tpm) must be 1 to {MAX_TPM:_} tokens a minute")
    if expires_at is not None and not 0 <= expires_at <= MAX_EXPIRES_AT:
        raise ValueError(f"expires_at must be Unix seconds, 0 to {MAX_EXPIRES_AT:_}")


def _check_budget(budget_usd: float | None, period: str | None) -> None:
    if (budget_usd is None) != (period is None):
        raise ValueError("a key budget needs both an amount (budget_usd) and a period (day or month)")
    if budget_usd is not None and budget_usd < 0:
        raise ValueError("a budget cannot be negative")
    if period is not None and period not in ("day", "month"):
        raise ValueError("a budget's period is day or month")


def check_models(models: Sequence[str] | None, known: Iterable[str]) -> tuple[str, ...] | None:
    """A key's model list, checked against the configured models (routing policies such as auto
    are not models: a key may always use them, within its list)."""
    if models is None:
        return None
    if not models:
        raise ValueError("a key's model list cannot be empty (leave it out to allow every model)")
    unknown = sorted(set(models) - set(known))
    if unknown:
        raise ValueError(f"unknown models {', '.join(unknown)}; configured: {', '.join(sorted(known))}")
    return tuple(dict.fromkeys(models))


@dataclass(frozen=True)
class KeyRecord:
    """What the router knows about a key; never the key itself."""

    key_id: str
    shown: str  # the first characters, to recognise it in a listing
    team: str
    name: str
    budget_usd: float | None
    period: Period | None
    created_at: float
    revoked_at: float | None
    rpm: int | None = None  # requests a minute (serve_app/rate_limits.py); None: no limit
    models: tuple[str, ...] | None = None  # the models it may use, directly or routed; None: all
    tpm: int | None = None  # tokens a minute, prompt and answer (serve_app/rate_limits.py); None: no limit
    expires_at: float | None = None  # Unix seconds from which it is refused; None: never
    max_parallel_requests: int | None = None  # in flight at once (serve_app/concurrency.py); None: any
    # set only on the copy that a rotated key's old secret finds: when that secret stops working,
    # the end of the grace its rotation gave it (``expires_at`` is then the sooner of the two)
    retired_at: float | None = None
    # in listings: until when an old secret of this key (rotated with a grace) still works
    previous_key_until: float | None = None

    def allows(self, model: str) -> bool:
        return self.models is None or model in self.models

    @property
    def active(self) -> bool:
        """Not revoked (it may still have expired: ``usable``)."""
        return self.revoked_at is None

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def usable(self, now: float) -> bool:
        return self.active and not self.expired(now)

    def public(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "retired_at"} | {  # previous_key_until stays
            "active": self.active,
            "expired": self.expired(time.time()),
            "models": None if self.models is None else list(self.models),
        }


def _record(row: Sequence[Any]) -> KeyRecord:
    """A row of ``COLUMNS``; the model list is stored as JSON."""
    models = None if row[9] is None else tuple(json.loads(row[9]))
    return replace(
        KeyRecord(*row[:9]), models=models, tpm=row[10], expires_at=row[11], max_parallel_requests=row[12]
    )


def _models_json(models: Sequence[str] | None) -> str | None:
    if models is not None and not models:
        raise ValueError("a key's model list cannot be empty")
    return None if models is None else json.dumps(list(models))


class KeyStore:
    """The api_keys table of an open SQLite connection (the caller owns it and its transactions)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        db.executescript(KEYS_SCHEMA)
        have = {row[1] for row in db.execute("PRAGMA table_info(api_keys)")}
        with db:
            for column, kind in ADDED_COLUMNS.items():
                if column not in have:  # a key table made before it
                    db.execute(f"ALTER TABLE api_keys ADD COLUMN {column} {kind}")

    def create(
        self,
        team: str,
        name: str,
        budget_usd: float | None = None,
        period: Period | None = None,
        rpm: int | None = None,
        models: Sequence[str] | None = None,
        tpm: int | None = None,
        expires_at: float | None = None,
        max_parallel_requests: int | None = None,
    ) -> tuple[str, KeyRecord]:
        """A new key and its record; the plain key is returned here and nowhere else. ``models``
        must have been checked against the configuration (``check_models``)."""
        if not team or not name:
            raise ValueError("a key needs a team and a name")
        _check_budget(budget_usd, period)
        _check_limits(rpm, tpm, expires_at, max_parallel_requests)
        now = time.time()
        if expires_at is not None and expires_at <= now:
            raise ValueError("expires_at is in the past: a key would be made already expired")
        stored_models = _models_json(models)
        key = new_key()
        record = KeyRecord(
            key_id=uuid.uuid4().hex[:12],
            shown=key[:7] + "…",
            team=team,
            name=name,
            budget_usd=budget_usd,
            period=period,
            created_at=now,
            revoked_at=None,
            rpm=rpm,
            models=None if models is None else tuple(models),
            tpm=tpm,
            expires_at=None if expires_at is None else float(expires_at),  # as SQLite gives it back
            max_parallel_requests=max_parallel_requests,
        )
        with self.db:
            self.db.execute(
                "INSERT INTO api_keys (key_id, key_hash, shown, team, name, budget_usd, period, "
                "created_at, revoked_at, rpm, models, tpm, expires_at, max_parallel_requests) VALUES "
                "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.key_id,
                    hash_key(key),
                    record.shown,
                    team,
                    name,
                    budget_usd,
                    period,
                    record.created_at,
                    None,
                    rpm,
                    stored_models,
                    tpm,
                    expires_at,
                    max_parallel_requests,
                ),
            )
        return key, record

    def revoke(self, key_id: str) -> KeyRecord | None:
        with self.db:
            self.db.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL",
                (time.time(), key_id),
            )
        return self.get(key_id)

    def update(self, key_id: str, changes: Mapping[str, Any]) -> KeyRecord | None:
        """Change a key's limits: ``rpm``, ``tpm``, ``max_parallel_requests``, ``models``,
        ``expires_at`` and its budget,
        ``budget_usd`` with ``period`` (None removes one; an ``expires_at`` already past expires it
        now). None when there is no such key. ``models`` must have been checked against the
        configuration. A new budget counts what the key spent since its period began."""
        unknown = set(changes) - set(CHANGEABLE)
        if unknown:
            raise ValueError(f"cannot change {', '.join(sorted(unknown))} of a key")
        if ("budget_usd" in changes) != ("period" in changes):
            raise ValueError("change a key's budget_usd and period together")
        _check_budget(changes.get("budget_usd"), changes.get("period"))
        parallel = changes.get("max_parallel_requests")
        _check_limits(changes.get("rpm"), changes.get("tpm"), changes.get("expires_at"), parallel)
        values = dict(changes)
        if "models" in values:
            values["models"] = _models_json(values["models"])
        if values:
            assignments = ", ".join(f"{column} = ?" for column in values)
            with self.db:
                self.db.execute(
                    f"UPDATE api_keys SET {assignments} WHERE key_id = ?", (*values.values(), key_id)
                )
        return self.get(key_id)

    def rotate(self, key_id: str, grace_s: float = 0.0) -> tuple[str, KeyRecord] | None:
        """A new secret for the key, which keeps its id, team, limits, budget and spend; the old
        secret keeps working for ``grace_s`` (0: it stops now), so that the apps using it can be
        given the new one. The new key is returned here and nowhere else. None when there is no
        such key; a revoked key cannot be rotated."""
        if not 0 <= grace_s <= MAX_GRACE_S:
            raise ValueError(f"grace_s must be 0 to {MAX_GRACE_S:_} seconds")
        found = self.db.execute("SELECT key_hash, revoked_at FROM api_keys WHERE key_id = ?", (key_id,))
        row = found.fetchone()
        if row is None:
            return None
        if row[1] is not None:
            raise ValueError("a revoked key cannot be rotated: make a new one")
        key, now = new_key(), time.time()
        with self.db:
            self.db.execute("INSERT INTO api_key_retired VALUES (?, ?, ?)", (row[0], key_id, now + grace_s))
            self.db.execute(
                "UPDATE api_keys SET key_hash = ?, shown = ? WHERE key_id = ?",
                (hash_key(key), key[:7] + "…", key_id),
            )
        record = self.get(key_id)
        assert record is not None
        return key, record

    def get(self, key_id: str) -> KeyRecord | None:
        row = self.db.execute(f"SELECT {COLUMNS} FROM api_keys WHERE key_id = ?", (key_id,)).fetchone()
        return self._with_grace(_record(row), self._graces()) if row else None

    def list(self, include_revoked: bool = True) -> list[KeyRecord]:
        rows = self.db.execute(f"SELECT {COLUMNS} FROM api_keys ORDER BY created_at").fetchall()
        graces = self._graces()
        records = [self._with_grace(_record(row), graces) for row in rows]
        return [r for r in records if include_revoked or r.active]

    def _graces(self) -> dict[str, float]:
        """key id -> until when its last rotated-out secret works, for those still in their grace."""
        rows = self.db.execute(
            "SELECT key_id, MAX(until) FROM api_key_retired WHERE until > ? GROUP BY key_id", (time.time(),)
        )
        return {key_id: until for key_id, until in rows}

    @staticmethod
    def _with_grace(record: KeyRecord, graces: Mapping[str, float]) -> KeyRecord:
        until = graces.get(record.key_id)
        return record if until is None or not record.active else replace(record, previous_key_until=until)

    def snapshot(self) -> dict[str, KeyRecord]:
        """key hash -> record, every key ever made (revoked ones stay, so the ring stays required),
        and every secret a rotation replaced: its key's record, expiring when its grace ends."""
        rows = self.db.execute(f"SELECT key_hash, {COLUMNS} FROM api_keys").fetchall()
        graces = self._graces()
        out = {row[0]: self._with_grace(_record(row[1:]), graces) for row in rows}
        by_id = {r.key_id: r for r in out.values()}
        for old_hash, key_id, until in self.db.execute("SELECT key_hash, key_id, until FROM api_key_retired"):
            current = by_id.get(key_id)
            if current is not None:
                ends = until if current.expires_at is None else min(until, current.expires_at)
                out[old_hash] = replace(current, expires_at=ends, retired_at=until)
        return out


class KeyRing:
    """An ingress replica's copy of the key table, checked on every request without a call."""

    def __init__(self, by_hash: dict[str, KeyRecord] | None = None, required: bool | None = None) -> None:
        """``required``: True or False forces it; None requires a key once any key was made."""
        self.by_hash = by_hash or {}
        self.forced = required

    @property
    def required(self) -> bool:
        return self.forced if self.forced is not None else bool(self.by_hash)

    def update(self, by_hash: dict[str, KeyRecord]) -> None:
        self.by_hash = by_hash

    def find(self, presented: str | None) -> KeyRecord | None:
        """The record of a key ever made (revoked and expired ones too); None for no key or an
        unknown one. Looked up by hash: what the lookup's timing could reveal is a hash, not a key."""
        return self.by_hash.get(hash_key(presented)) if presented else None

    def check(self, presented: str | None, now: float | None = None) -> KeyRecord | None:
        """The usable key's record; None for no key or an unknown, revoked or expired one."""
        record = self.find(presented)
        usable = record is not None and record.usable(time.time() if now is None else now)
        return record if usable else None


def bearer(authorization: str | None, api_key_header: str | None = None) -> str | None:
    """The key from ``Authorization: Bearer <key>`` (OpenAI's SDKs) or ``x-api-key`` (Anthropic's)."""
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return api_key_header.strip() if api_key_header else None
