"""The response cache: an answer given once is given again, at no provider cost, to the same
request from the same scope (a key, a team, or everyone) until it expires. Plain Python over
SQLite; ``deployments/response_cache.py`` is the Ray actor that owns the file, and
``serve_app/caching.py`` the ingress's side.

The cache key is a SHA-256 of the scope and of the request as parsed (aliases resolved), less
what does not change the answer: ``stream``, ``stream_options``, ``user`` and the parameters the
router accepts without effect (``metadata``, ``store``, ...). Two requests that differ only in key
order or whitespace of their JSON share an entry; a stream and a non-stream request share one too.

Entries expire ``cache.ttl_s`` after they were stored; past ``cache.max_entries`` the oldest go
first. A client steers it per request with ``Cache-Control``: ``no-cache`` (do not answer from the
cache, store the fresh answer), ``no-store`` (neither), ``max-age=N`` (only an answer at most N
seconds old).
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from serve_app.ledger import Synchronous, connect
from serve_app.schemas import IGNORED_PARAMS, ChatCompletionRequest

Scope = Literal["key", "team", "global"]

# fields of a request that do not change its answer (and the parameters accepted without effect)
NOT_IN_KEY = {"stream", "stream_options", "user", *IGNORED_PARAMS}

SCHEMA = """
CREATE TABLE IF NOT EXISTS response_cache (
    key         BLOB PRIMARY KEY,
    scope       TEXT NOT NULL,
    created_at  REAL NOT NULL,
    expires_at  REAL NOT NULL,
    hits        INTEGER NOT NULL DEFAULT 0,
    answer      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS response_cache_expiry ON response_cache (expires_at);
CREATE INDEX IF NOT EXISTS response_cache_age ON response_cache (created_at);
"""


class CacheConfig(BaseModel):
    """``cache:`` in the configuration. Off unless ``enabled``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    scope: Scope = Field(
        default="key",
        description="who shares answers: each API key its own (key), a team's keys (team), or every "
        "caller (global); without API keys every caller is one scope",
    )
    ttl_s: float = Field(default=3600.0, gt=0, description="an answer is served this long after it is stored")
    max_entries: int = Field(default=100_000, ge=1, description="past this, the oldest answers are dropped")
    max_answer_bytes: int = Field(default=262_144, ge=1, description="a longer answer is not stored")
    path: str = Field(
        default="~/.local/share/fusion-router/response_cache.db",
        description="the SQLite file (WAL); on a cluster it lives on the head node",
    )
    synchronous: Synchronous = "NORMAL"
    lookup_timeout_s: float = Field(
        default=0.25, gt=0, description="a lookup slower than this counts as a miss (the request goes on)"
    )
    pin_to_head_node: bool = True


@dataclass(frozen=True)
class CacheControl:
    """A request's ``Cache-Control``: may it be answered from the cache, may its answer be stored."""

    read: bool = True
    write: bool = True
    max_age_s: float | None = None


def parse_cache_control(header: str | None) -> CacheControl:
    """``no-store`` wins over everything; ``no-cache`` and ``max-age=0`` skip the lookup; unknown
    directives are ignored, as HTTP says."""
    if not header:
        return CacheControl()
    directives = [d.strip().lower() for d in header.split(",")]
    if "no-store" in directives:
        return CacheControl(read=False, write=False)
    max_age: float | None = None
    for d in directives:
        m = re.fullmatch(r"max-age\s*=\s*\"?(\d+)\"?", d)
        if m:
            max_age = float(m.group(1))
    if "no-cache" in directives or max_age == 0:
        return CacheControl(read=False)
    return CacheControl(max_age_s=max_age)


def cache_key(chat: ChatCompletionRequest, scope: str) -> bytes:
    """The entry a request reads and writes: its scope and what in it changes the answer."""
    fields = chat.model_dump(mode="json", exclude_none=True, exclude=NOT_IN_KEY)
    canonical = json.dumps([scope, fields], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).digest()


@dataclass
class CachedAnswer:
    """What is stored of an answer: enough to give it again, as JSON or as a stream."""

    request_id: str  # the request that was answered by a provider
    model: str
    provider: str
    provider_model: str
    text: str
    finish_reason: str
    usage: dict[str, int]
    tool_calls: list[dict[str, str]] = field(default_factory=list)  # id, name, arguments
    task_type: str | None = None
    cost_usd: float | None = None  # what the first answer cost
    created_at: float = 0.0  # filled in by the cache
    hits: int = 0

    def to_json(self) -> str:
        data = asdict(self)
        del data["created_at"], data["hits"]
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_row(cls, answer: str, created_at: float, hits: int) -> CachedAnswer:
        return cls(**json.loads(answer), created_at=created_at, hits=hits)


class ResponseCache:
    """Entries in one SQLite file. Not thread-safe: its owner calls it from one thread."""

    def __init__(self, settings: CacheConfig, clock: Any = time.time) -> None:
        self.settings = settings
        self.path = Path(settings.path).expanduser()
        self._clock = clock
        self.db: sqlite3.Connection = connect(self.path, settings.synchronous)
        self.db.executescript(SCHEMA)
        self.counts: dict[str, float] = {"hits": 0, "misses": 0, "stored": 0, "too_large": 0, "evicted": 0}
        self.counts["saved_usd"] = 0.0  # what the answers given again cost the first time
        # kept, not counted per store: count(*) reads the whole table (milliseconds at 100,000)
        (self.entries,) = self.db.execute("SELECT count(*) FROM response_cache").fetchone()

    def configure(self, settings: CacheConfig) -> None:
        self.settings = settings

    def get(self, key: bytes, max_age_s: float | None = None) -> CachedAnswer | None:
        """The live entry for ``key`` (no older than ``max_age_s``), counted as a hit; else None."""
        now = self._clock()
        row = self.db.execute(
            "SELECT answer, created_at, hits FROM response_cache WHERE key = ? AND expires_at > ?",
            (key, now),
        ).fetchone()
        if row is None or (max_age_s is not None and now - row[1] > max_age_s):
            self.counts["misses"] += 1
            return None
        with self.db:
            self.db.execute("UPDATE response_cache SET hits = hits + 1 WHERE key = ?", (key,))
        self.counts["hits"] += 1
        answer = CachedAnswer.from_row(row[0], row[1], row[2] + 1)
        self.counts["saved_usd"] += answer.cost_usd or 0.0
        return answer

    def put(self, key: bytes, scope: str, answer: CachedAnswer) -> bool:
        """Store (or replace) an answer; False when it is longer than ``max_answer_bytes``."""
        encoded = answer.to_json()
        if len(encoded.encode()) > self.settings.max_answer_bytes:
            self.counts["too_large"] += 1
            return False
        now = self._clock()
        with self.db:
            known = self.db.execute("SELECT 1 FROM response_cache WHERE key = ?", (key,)).fetchone()
            self.db.execute(
                "INSERT OR REPLACE INTO response_cache (key, scope, created_at, expires_at, hits, answer) "
                "VALUES (?, ?, ?, ?, 0, ?)",
                (key, scope, now, now + self.settings.ttl_s, encoded),
            )
            added = 0 if known else 1
            evicted = 0
            over = self.entries + added - self.settings.max_entries
            if over > 0:
                evicted = self.db.execute(
                    "DELETE FROM response_cache WHERE key IN "
                    "(SELECT key FROM response_cache ORDER BY created_at LIMIT ?)",
                    (over,),
                ).rowcount
        self.entries += added - evicted
        self.counts["evicted"] += evicted
        self.counts["stored"] += 1
        return True

    def purge(self, limit: int = 2000) -> int:
        """Drop up to ``limit`` expired entries; how many went."""
        with self.db:
            cur = self.db.execute(
                "DELETE FROM response_cache WHERE key IN "
                "(SELECT key FROM response_cache WHERE expires_at <= ? LIMIT ?)",
                (self._clock(), limit),
            )
        self.entries -= cur.rowcount
        return cur.rowcount

    def clear(self, scope: str | None = None) -> int:
        """Drop every entry (of one scope: ``key:<id>``, ``team:<name>`` or ``global``)."""
        with self.db:
            if scope is None:
                cur = self.db.execute("DELETE FROM response_cache")
            else:
                cur = self.db.execute("DELETE FROM response_cache WHERE scope = ?", (scope,))
        self.entries -= cur.rowcount
        return cur.rowcount

    def stats(self) -> dict[str, Any]:
        now = self._clock()
        entries, live, size, oldest = self.db.execute(
            "SELECT count(*), sum(expires_at > ?), coalesce(sum(length(answer)), 0), min(created_at) "
            "FROM response_cache",
            (now,),
        ).fetchone()  # a full read: an operator's call, never on the request path
        self.entries = entries
        lookups = self.counts["hits"] + self.counts["misses"]
        return {
            "enabled": self.settings.enabled,
            "scope": self.settings.scope,
            "ttl_s": self.settings.ttl_s,
            "max_entries": self.settings.max_entries,
            "entries": entries,
            "live_entries": live or 0,
            "answer_bytes": size,
            "oldest_age_s": round(now - oldest, 3) if oldest is not None else None,
            **self.counts,
            "saved_usd": round(self.counts["saved_usd"], 8),
            "hit_ratio": round(self.counts["hits"] / lookups, 4) if lookups else None,
        }

    def close(self) -> None:
        self.db.close()
