"""Usage and cost reports from the ledger's spend rows, shaped like OpenAI's usage API.

Every request the router settles leaves one row in the ledger's ``spend`` table (when it settled,
its key and team, the model and provider that answered, its tokens and its cost). A report sums
those rows into time buckets (``1m``, ``1h`` or ``1d``, aligned to UTC), optionally grouped by
``model``, ``provider``, ``team``, ``key_id``, ``task_type`` and ``policy`` and filtered by model,
team or key: what a platform team needs to charge teams back and to see where the money goes.

    {"object": "page", "data": [{"object": "bucket", "start_time", "end_time",
      "results": [{"object": "router.usage.result", "num_model_requests", "input_tokens",
                   "input_cached_tokens", "cache_write_tokens", "output_tokens",
                   "reasoning_tokens", "cost_usd", <each group_by field>}]}],
     "has_more", "next_page"}

A page holds at most ``limit`` buckets (by width: 60 or up to 1,440 minutes, 24 or up to 168
hours, 7 or up to 31 days), empty buckets included, as OpenAI's; ``next_page`` is passed back as
``page`` for the next. Tokens are the sum over every call a request made (fallbacks included) and
are counted under the model that finally answered; a request no model answered counts in
``cost_usd`` (a broken stream can cost something) but not in ``num_model_requests``.

Hour and day buckets read whole hours from the ledger's hourly totals (``serve_app/spend_rollup.py``)
and only the partial hours at either end from the rows, so their cost follows the hours asked
for, not the requests made in them; minute buckets read the rows. Where ``ledger.retention_days``
has dropped the rows, a report that needs them is refused (``UsageRangeError``, a 400).

The report reads the file through its own read-only connection (``read_usage``), so the ledger
actor runs it on a worker thread without holding up reservations.
"""

from __future__ import annotations

import datetime as dt
import re
import sqlite3
import time
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from serve_app import spend_rollup
from serve_app.spend_rollup import HOUR

BucketWidth = Literal["1m", "1h", "1d"]
Name = Annotated[str, Field(min_length=1, max_length=200)]  # a model, team or key id to filter by
GroupField = Literal["model", "provider", "team", "key_id", "task_type", "policy"]

WIDTH_S: dict[str, int] = {"1m": 60, "1h": 3600, "1d": 86_400}
# buckets per page by width, as OpenAI's usage API: (default, most)
PAGE_LIMITS: dict[str, tuple[int, int]] = {"1m": (60, 1440), "1h": (24, 168), "1d": (7, 31)}

# (name in the answer, over the spend rows, over the hourly totals)
_SUMS = (
    ("num_model_requests", "COUNT(model)", "SUM(CASE WHEN model <> '' THEN requests ELSE 0 END)"),
    ("input_tokens", "SUM(input_tokens)", "SUM(input_tokens)"),
    ("input_cached_tokens", "SUM(cached_tokens)", "SUM(cached_tokens)"),
    ("cache_write_tokens", "SUM(cache_write_tokens)", "SUM(cache_write_tokens)"),
    ("output_tokens", "SUM(output_tokens)", "SUM(output_tokens)"),
    ("reasoning_tokens", "SUM(reasoning_tokens)", "SUM(reasoning_tokens)"),
    ("cost_usd", "SUM(cost_usd)", "SUM(cost_usd)"),
)
_FILTERS = {"models": "model", "teams": "team", "key_ids": "key_id"}


class UsageQuery(BaseModel):
    """What to report. Times are Unix seconds; ``end_time`` defaults to now."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start_time: int = Field(ge=0, le=10**11, description="first second covered (Unix seconds)")
    end_time: int | None = Field(default=None, ge=0, le=10**11, description="end, exclusive; default now")
    bucket_width: BucketWidth = "1d"
    group_by: tuple[GroupField, ...] = ()
    models: tuple[Name, ...] = Field(default=(), max_length=100)
    teams: tuple[Name, ...] = Field(default=(), max_length=100)
    key_ids: tuple[Name, ...] = Field(default=(), max_length=100)
    limit: int | None = Field(default=None, ge=1, description="buckets per page")
    page: str | None = Field(default=None, max_length=20, description="a previous page's next_page")

    @model_validator(mode="after")
    def _check(self) -> UsageQuery:
        most = PAGE_LIMITS[self.bucket_width][1]
        if self.limit is not None and self.limit > most:
            raise ValueError(f"limit: at most {most} buckets of {self.bucket_width}")
        if self.end_time is not None and self.end_time <= self.start_time:
            raise ValueError("end_time: must be after start_time")
        if len(set(self.group_by)) != len(self.group_by):
            raise ValueError("group_by: a field is named twice")
        if self.page is not None:
            if not re.fullmatch(r"[0-9]{1,12}", self.page):
                raise ValueError("page: not a next_page this API gave")
            first = int(self.page)
            if first % WIDTH_S[self.bucket_width] or first < self.start_time - WIDTH_S[self.bucket_width]:
                raise ValueError("page: not a next_page of this query")
        return self


def report(db: sqlite3.Connection, query: UsageQuery, now: float) -> dict[str, Any]:
    """One page of ``query`` over the spend rows in ``db``."""
    width = WIDTH_S[query.bucket_width]
    end = query.end_time if query.end_time is not None else int(now) + 1
    first = int(query.page) if query.page is not None else query.start_time - query.start_time % width
    limit = query.limit or PAGE_LIMITS[query.bucket_width][0]
    total = max(0, -(-(end - first) // width))  # buckets from ``first`` to the end (ceiling)
    starts = [first + i * width for i in range(min(total, limit))]
    has_more = total > limit
    data: list[dict[str, Any]] = []
    if starts:
        lo, hi = max(query.start_time, starts[0]), min(end, starts[-1] + width)
        rows = _grouped(db, query, lo, hi, starts[0], width)
        for start in starts:
            results = [_result(query.group_by, row) for row in rows.get(start, [])]
            data.append(
                {"object": "bucket", "start_time": start, "end_time": start + width, "results": results}
            )
    return {
        "object": "page",
        "data": data,
        "has_more": has_more,
        "next_page": str(starts[-1] + width) if has_more else None,
    }


def _grouped(
    db: sqlite3.Connection, query: UsageQuery, lo: int, hi: int, origin: int, width: int
) -> dict[int, list[tuple[Any, ...]]]:
    """bucket start -> one row per group (the group's values, then the sums), dearest first.
    Hour and day buckets read whole hours from the hourly totals and only the partial hours at
    either end from the spend rows; minute buckets read the rows."""
    n = len(query.group_by)
    raw = [(lo, hi)]
    first_hour, last_hour = -(-lo // HOUR) * HOUR, hi // HOUR * HOUR
    summed: dict[tuple[int, tuple[Any, ...]], list[float]] = {}
    if width >= HOUR and first_hour < last_hour and spend_rollup.exists(db):
        raw = [(lo, first_hour), (last_hour, hi)]
        _add_rows(summed, _from_totals(db, query, first_hour, last_hour, origin, width), n, origin, width)
    kept = spend_rollup.raw_kept_from(db)
    for start, end in raw:
        if start >= end:
            continue
        if kept is not None and start < kept:
            param = "bucket_width" if width < HOUR else "start_time" if start == lo else "end_time"
            raise spend_rollup.UsageRangeError(
                f"The ledger keeps each request's spend row for ledger.retention_days: before "
                f"{_iso(kept)} it has hourly totals only, so minute buckets, and a start_time or "
                "end_time inside an hour, cannot reach back that far.",
                param,
            )
        _add_rows(summed, _from_rows(db, query, start, end, origin, width), n, origin, width)
    out: dict[int, list[tuple[Any, ...]]] = {}
    for (bucket, groups), sums in summed.items():
        out.setdefault(bucket, []).append((*groups, *sums))
    for rows in out.values():  # dearest first, then by the groups (none before any)
        rows.sort(key=lambda r: (-(r[-1] or 0.0), tuple((g is not None, g or "") for g in r[:n])))
    return out


def _filters(query: UsageQuery) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    params: list[Any] = []
    for field, column in _FILTERS.items():
        values = getattr(query, field)
        if values:
            where.append(f"{column} IN ({', '.join('?' * len(values))})")
            params.extend(values)
    return where, params


def _from_rows(
    db: sqlite3.Connection, query: UsageQuery, lo: int, hi: int, origin: int, width: int
) -> sqlite3.Cursor:
    columns = "".join(f", {g}" for g in query.group_by)
    where, params = _filters(query)
    bucket = f"CAST((settled_at - {origin}) / {width} AS INTEGER)"
    sql = (
        f"SELECT {bucket} AS b{columns}, {', '.join(raw for _, raw, _ in _SUMS)} FROM spend "
        f"WHERE {' AND '.join(['settled_at >= ?', 'settled_at < ?', *where])} GROUP BY b{columns}"
    )
    return db.execute(sql, [lo, hi, *params])


def _from_totals(
    db: sqlite3.Connection, query: UsageQuery, lo: int, hi: int, origin: int, width: int
) -> sqlite3.Cursor:
    """``lo`` and ``hi`` on whole hours; '' in the totals is none in the answer."""
    selected = "".join(f", NULLIF({g}, '') AS {g}" for g in query.group_by)
    grouped = "".join(f", {g}" for g in query.group_by)
    where, params = _filters(query)
    sql = (
        f"SELECT (hour - {origin}) / {width} AS b{selected}, {', '.join(t for _, _, t in _SUMS)} "
        f"FROM spend_hourly WHERE {' AND '.join(['hour >= ?', 'hour < ?', *where])} GROUP BY b{grouped}"
    )
    return db.execute(sql, [lo, hi, *params])


def _add_rows(
    summed: dict[tuple[int, tuple[Any, ...]], list[float]],
    rows: sqlite3.Cursor,
    n: int,
    origin: int,
    width: int,
) -> None:
    """Add each row (bucket index, ``n`` group values, the sums) to its bucket's and group's sums."""
    for row in rows:
        key = (origin + int(row[0]) * width, tuple(row[1 : 1 + n]))
        sums = summed.setdefault(key, [0.0] * len(_SUMS))
        for i, value in enumerate(row[1 + n :]):
            sums[i] += value or 0


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _result(group_by: tuple[str, ...], row: tuple[Any, ...]) -> dict[str, Any]:
    groups, sums = row[: len(group_by)], row[len(group_by) :]
    result: dict[str, Any] = {"object": "router.usage.result"}
    for (name, _, _), value in zip(_SUMS, sums, strict=True):
        result[name] = round(value or 0.0, 10) if name == "cost_usd" else int(value or 0)
    result.update(zip(group_by, groups, strict=True))
    return result


def read_usage(path: str | Path, query: UsageQuery, now: float | None = None) -> dict[str, Any]:
    """``report`` through a read-only connection of its own to the ledger's file (safe on any
    thread, beside the ledger's writer: WAL readers see the last commit and block nobody)."""
    uri = f"{Path(path).expanduser().resolve().as_uri()}?mode=ro"
    db = sqlite3.connect(uri, uri=True, timeout=10.0)
    try:
        return report(db, query, time.time() if now is None else now)
    finally:
        db.close()
