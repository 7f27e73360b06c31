"""Hourly totals of the ledger's spend, kept beside its rows, and the retention of those rows.

Every settled request leaves one row in the ledger's ``spend`` table. Read as they are, those rows
make budgets and reports cost more as spend accumulates: a key's monthly budget was the sum of
every row of the month (90 ms at a million rows, read again for each budgeted key whenever the
ledger restarts or a period begins), and the file grows without end (125 MB a million rows).

So the ledger also keeps ``spend_hourly``: one row per UTC hour and (key, team, model, provider,
task type, policy), with the requests, cost and tokens of that hour, added to in the same
transaction as the spend row it sums (``add``). Budgets read their period's spend from it (every
period starts on a UTC hour); usage reports read whole hours from it and the partial hours at
either end from the rows. Once the totals exist, the rows themselves are needed only for
minute-by-minute reports, feedback on a request and the recent statistics, so a ledger may keep
them for ``ledger.retention_days`` only (``prune``): budgets and hourly or daily reports are
unchanged by it.

A ledger file made before the totals existed gets them from its rows when it is first opened
(``ensure``), in one transaction: a crash midway leaves no half-built table.

``ledger_meta`` records ``raw_kept_from``: rows settled before it may have been dropped. A report
that needs them (minute buckets, or a start or end inside an hour, before that time) is refused
with a ``UsageRangeError``, never answered short.
"""

from __future__ import annotations

import sqlite3
from typing import Any

GROUPS = ("key_id", "team", "model", "provider", "task_type", "policy")
TOTALS = (
    "cost_usd",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "cache_write_tokens",
)
HOUR = 3600

# '' stands for "none" in the grouping columns: SQLite's primary keys treat NULLs as distinct
_TABLE = f"""
CREATE TABLE spend_hourly (
    hour                INTEGER NOT NULL,  -- the UTC hour's first second
    {", ".join(f"{g} TEXT NOT NULL" for g in GROUPS)},
    requests            INTEGER NOT NULL,
    cost_usd            REAL NOT NULL,
    {", ".join(f"{t} INTEGER NOT NULL" for t in TOTALS[1:])},
    PRIMARY KEY (hour, {", ".join(GROUPS)})
) WITHOUT ROWID
"""
_INDEXES = (
    "CREATE INDEX spend_hourly_key ON spend_hourly (key_id, hour)",
    "CREATE INDEX spend_hourly_team ON spend_hourly (team, hour)",
)
_META = "CREATE TABLE IF NOT EXISTS ledger_meta (name TEXT PRIMARY KEY, value REAL NOT NULL)"
_ADD = (
    f"INSERT INTO spend_hourly VALUES (?, {', '.join('?' * len(GROUPS))}, 1, {', '.join('?' * len(TOTALS))}) "
    f"ON CONFLICT (hour, {', '.join(GROUPS)}) DO UPDATE SET requests = requests + 1, "
    + ", ".join(f"{t} = {t} + excluded.{t}" for t in TOTALS)
)
# the hour of a row: whole seconds, then integer division, so that Python's and SQLite's agree
HOUR_OF_ROW = f"CAST(settled_at AS INTEGER) / {HOUR} * {HOUR}"
_BACKFILL = (
    f"INSERT INTO spend_hourly SELECT {HOUR_OF_ROW}, "
    + ", ".join(f"COALESCE({g}, '')" for g in GROUPS)
    + ", COUNT(*), "
    + ", ".join(f"SUM({t})" for t in TOTALS)
    + f" FROM spend GROUP BY 1, {', '.join(str(i + 2) for i in range(len(GROUPS)))}"
)


class UsageRangeError(ValueError):
    """A report needs spend rows that retention has dropped; ``param``: the query parameter that
    reaches too far back."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message, param)  # both in args: it crosses Ray (pickled) whole
        self.message, self.param = message, param

    def __str__(self) -> str:
        return self.message


def hour_of(t: float) -> int:
    return int(t) // HOUR * HOUR


def exists(db: sqlite3.Connection) -> bool:
    found = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'spend_hourly'")
    return found.fetchone() is not None


def ensure(db: sqlite3.Connection) -> None:
    """Create the totals, from the spend rows already there, if this file has none yet."""
    db.execute(_META)
    if exists(db):
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute(_TABLE)
        for index in _INDEXES:
            db.execute(index)
        db.execute(_BACKFILL)
    except BaseException:
        db.rollback()
        raise
    db.commit()


def add(
    db: sqlite3.Connection, settled_at: float, groups: tuple[str | None, ...], totals: tuple[Any, ...]
) -> None:
    """Count one newly recorded spend row (``groups`` and ``totals`` in GROUPS' and TOTALS' order);
    the caller's transaction holds both."""
    db.execute(_ADD, (hour_of(settled_at), *(g or "" for g in groups), *totals))


def spent_since(
    db: sqlite3.Connection, start: float, key_id: str | None = None, team: str | None = None
) -> float:
    """The cost settled from ``start`` (the first second of an hour) on, of one key, one team or all."""
    sql = "SELECT COALESCE(SUM(cost_usd), 0) FROM spend_hourly WHERE hour >= ?"
    args: tuple[int | str, ...] = (hour_of(start),)
    if key_id is not None:
        sql, args = sql + " AND key_id = ?", (*args, key_id)
    elif team is not None:
        sql, args = sql + " AND team = ?", (*args, team)
    row = db.execute(sql, args).fetchone()
    return float(row[0])


def raw_kept_from(db: sqlite3.Connection) -> float | None:
    """Rows settled before this time may have been dropped (None: every row is kept)."""
    try:
        row = db.execute("SELECT value FROM ledger_meta WHERE name = 'raw_kept_from'").fetchone()
    except sqlite3.OperationalError:  # a file from before the totals
        return None
    return None if row is None else float(row[0])


def prune(db: sqlite3.Connection, before: float, max_rows: int) -> int:
    """Drop up to ``max_rows`` spend rows settled before ``before``; their totals stay. Records
    ``raw_kept_from`` first, so that no report reads a range that is being emptied. Returns the
    number of rows dropped: ``max_rows`` means there may be more."""
    with db:
        kept = raw_kept_from(db)
        if kept is None or before > kept:
            db.execute("INSERT OR REPLACE INTO ledger_meta VALUES ('raw_kept_from', ?)", (before,))
        cursor = db.execute(
            "DELETE FROM spend WHERE rowid IN "
            "(SELECT rowid FROM spend WHERE settled_at < ? ORDER BY settled_at LIMIT ?)",
            (before, max_rows),
        )
    return cursor.rowcount
