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

The report reads the file through its own read-only connection (``read_usage``), so the ledger
actor runs it on a worker thread without holding up reservations.
"""

from __future__ import annotations

import re
import sqlite3
import time
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

BucketWidth = Literal["1m", "1h", "1d"]
Name = Annotated[str, Field(min_length=1, max_length=200)]  # a model, team or key id to filter by
GroupField = Literal["model", "provider", "team", "key_id", "task_type", "policy"]

WIDTH_S: dict[str, int] = {"1m": 60, "1h": 3600, "1d": 86_400}
# buckets per page by width, as OpenAI's usage API: (default, most)
PAGE_LIMITS: dict[str, tuple[int, int]] = {"1m": (60, 1440), "1h": (24, 168), "1d": (7, 31)}

_SUMS = (
    ("num_model_requests", "COUNT(model)"),
    ("input_tokens", "SUM(input_tokens)"),
    ("input_cached_tokens", "SUM(cached_tokens)"),
    ("cache_write_tokens", "SUM(cache_write_tokens)"),
    ("output_tokens", "SUM(output_tokens)"),
    ("reasoning_tokens", "SUM(reasoning_tokens)"),
    ("cost_usd", "SUM(cost_usd)"),
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
    columns = ", ".join(query.group_by)
    where = ["settled_at >= ?", "settled_at < ?"]
    params: list[Any] = [lo, hi]
    for field, column in _FILTERS.items():
        values = getattr(query, field)
        if values:
            where.append(f"{column} IN ({', '.join('?' * len(values))})")
            params.extend(values)
    bucket = f"CAST((settled_at - {origin}) / {width} AS INTEGER)"
    sql = (
        f"SELECT {bucket} AS b{', ' + columns if columns else ''}, "
        f"{', '.join(expr for _, expr in _SUMS)} FROM spend WHERE {' AND '.join(where)} "
        f"GROUP BY b{', ' + columns if columns else ''} "
        f"ORDER BY b, SUM(cost_usd) DESC{', ' + columns if columns else ''}"
    )
    out: dict[int, list[tuple[Any, ...]]] = {}
    for row in db.execute(sql, params):
        out.setdefault(origin + int(row[0]) * width, []).append(tuple(row[1:]))
    return out


def _result(group_by: tuple[str, ...], row: tuple[Any, ...]) -> dict[str, Any]:
    groups, sums = row[: len(group_by)], row[len(group_by) :]
    result: dict[str, Any] = {"object": "router.usage.result"}
    for (name, _), value in zip(_SUMS, sums, strict=True):
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
