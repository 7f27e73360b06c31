"""The ledger's hourly spend totals: kept in step with the rows, built for an older file, read by
budgets and reports exactly as the rows would be, and still there once retention drops the rows."""

from __future__ import annotations

import asyncio
import random
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from deployments import ledger as ledger_actor
from serve_app import spend_rollup
from serve_app.ledger import SCHEMA, Budget, Charge, Ledger, LedgerConfig
from serve_app.spend_rollup import UsageRangeError
from serve_app.usage import UsageQuery, read_usage
from tests.unit.serve_app.test_usage import Clock

HOUR, DAY = 3600, 86_400
T0 = 1_764_115_200  # 2025-11-26 00:00 UTC
KEYS = [None, "k1", "k2", "k3"]
TEAMS = [None, "red", "blue"]
MODELS = [None, "gpt-4o", "claude", "llama"]


def _random_charges(rng: random.Random, n: int, prefix: str = "r") -> list[Charge]:
    out = []
    for i in range(n):
        model = rng.choice(MODELS)
        out.append(
            Charge(
                f"{prefix}{i}",
                0.0 if model is None else rng.randrange(1, 1000) / 1e5,
                key_id=rng.choice(KEYS),
                team=rng.choice(TEAMS),
                model=model,
                provider=None if model is None else f"p-{model}",
                input_tokens=rng.randrange(500),
                output_tokens=rng.randrange(200),
                cached_tokens=rng.randrange(50),
                reasoning_tokens=rng.randrange(20),
                cache_write_tokens=rng.randrange(10),
                task_type=rng.choice([None, "coding", "analysis"]),
                policy=rng.choice(["auto", "direct"]),
            )
        )
    return out


def _filled(path: Path, rng: random.Random, n: int = 600, days: float = 3.0) -> tuple[Ledger, Clock]:
    """``n`` requests settled at random times over ``days`` days from T0, in random batches."""
    clock = Clock(T0)
    ledger = Ledger(path, [Budget("global", 1e6, "month"), Budget("team:red", 1e6, "day")], clock=clock)
    charges = _random_charges(rng, n)
    times = sorted(T0 + rng.random() * days * DAY for _ in charges)
    i = 0
    while i < len(charges):
        size = rng.randrange(1, 8)
        clock.now = times[i]
        ledger.settle(charges[i : i + size])
        i += size
    clock.now = T0 + days * DAY + 1
    return ledger, clock


def _rows_only(path: Path, tmp_path: Path) -> Path:
    """A copy of the file without its totals: reports then read every row, as before the totals."""
    copy = tmp_path / "rows_only.db"
    src = sqlite3.connect(path)
    src.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    src.close()
    shutil.copy(path, copy)
    db = sqlite3.connect(copy)
    db.execute("DROP TABLE spend_hourly")
    db.commit()
    db.close()
    return copy


def _flat(page: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [
        (b["start_time"], *(round(v, 9) if isinstance(v, float) else v for v in r.values()))
        for b in page["data"]
        for r in b["results"]
    ]


def test_reports_from_the_totals_equal_reports_from_the_rows(tmp_path: Path) -> None:
    rng = random.Random(3)
    ledger, clock = _filled(tmp_path / "ledger.db", rng)
    rows_only = _rows_only(ledger.path, tmp_path)
    fields = ["model", "provider", "team", "key_id", "task_type", "policy"]
    checked = 0
    for _ in range(150):
        width = rng.choice(["1h", "1h", "1d", "1m"])
        start = T0 + rng.randrange(-HOUR, 3 * DAY)
        if rng.random() < 0.3:
            start -= start % HOUR  # on an hour
        end = None if rng.random() < 0.3 else start + rng.randrange(1, 2 * DAY)
        query: dict[str, Any] = {"start_time": start, "end_time": end, "bucket_width": width, "limit": 31}
        if width == "1h":
            query["limit"] = 168
        if width == "1m":
            query["limit"] = 1440
        query["group_by"] = rng.sample(fields, rng.randrange(3))
        if rng.random() < 0.3:
            query["teams"] = ["red"]
        if rng.random() < 0.3:
            query["models"] = ["gpt-4o", "llama"]
        q = UsageQuery.model_validate(query)
        expected = read_usage(rows_only, q, now=clock())
        got = read_usage(ledger.path, q, now=clock())
        assert _flat(got) == _flat(expected), query
        assert got["next_page"] == expected["next_page"]
        checked += bool(_flat(got))
    assert checked > 100  # most queries found spend


def test_totals_follow_settlements_and_ignore_a_resent_batch(tmp_path: Path) -> None:
    ledger, clock = _filled(tmp_path / "ledger.db", random.Random(5), n=200)
    before = ledger.settled_total()
    clock.now += 10
    again = _random_charges(random.Random(5), 20)  # request ids already settled
    assert ledger.settle(again) == 0
    assert ledger.settled_total() == pytest.approx(before)
    rows = ledger.db.execute("SELECT COUNT(*), SUM(cost_usd) FROM spend").fetchone()
    totals = ledger.db.execute("SELECT SUM(requests), SUM(cost_usd) FROM spend_hourly").fetchone()
    assert rows[0] == totals[0] == 200 and rows[1] == pytest.approx(totals[1])


def test_an_older_file_gets_its_totals_from_its_rows_when_opened(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(SCHEMA)  # a ledger from before the totals: rows only
    with db:
        for i, c in enumerate(_random_charges(random.Random(9), 300)):
            db.execute(
                f"INSERT INTO spend VALUES ({', '.join('?' * 15)})",
                (
                    *(c.request_id, T0 + i * 997.3, c.key_id, c.team, c.model, c.provider, c.cost_usd),
                    *(None, c.input_tokens, c.output_tokens, c.cached_tokens, c.reasoning_tokens),
                    *(c.cache_write_tokens, c.task_type, c.policy),
                ),
            )
    db.close()
    clock = Clock(T0 + 300 * 997.3)
    month_start = T0 - 25 * DAY  # 2025-11-01
    raw = {
        scope: sqlite3.connect(path)
        .execute(f"SELECT COALESCE(SUM(cost_usd), 0) FROM spend WHERE settled_at >= ? {where}", args)
        .fetchone()[0]
        for scope, where, args in [
            ("global", "", (month_start,)),
            ("team:red", "AND team = ?", (month_start, "red")),
        ]
    }
    ledger = Ledger(path, [Budget("global", 1e6, "month"), Budget("team:red", 1e6, "month")], clock=clock)
    spent = {row["scope"]: row["spent_usd"] for row in ledger.status()}
    assert spent == {s: pytest.approx(v) for s, v in raw.items()}
    assert ledger.db.execute("SELECT SUM(requests) FROM spend_hourly").fetchone()[0] == 300
    ledger.close()
    Ledger(path, clock=clock).close()  # opened again: built once, not twice
    assert sqlite3.connect(path).execute("SELECT SUM(requests) FROM spend_hourly").fetchone()[0] == 300


def test_building_the_totals_is_all_or_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(SCHEMA)
    db.execute(f"INSERT INTO spend VALUES ('r', {T0}, 'k', 't', 'm', 'p', 0.5, NULL, 1, 1, 0, 0, 0, '', '')")
    db.commit()
    monkeypatch.setattr(spend_rollup, "_BACKFILL", "INSERT INTO spend_hourly SELECT * FROM no_such_table")
    with pytest.raises(sqlite3.OperationalError):
        spend_rollup.ensure(db)
    assert not spend_rollup.exists(db)  # no empty table left to pass for a complete one
    monkeypatch.undo()
    spend_rollup.ensure(db)
    assert spend_rollup.spent_since(db, 0) == pytest.approx(0.5)


def test_retention_drops_rows_but_no_budget_or_hourly_report_changes(tmp_path: Path) -> None:
    ledger, clock = _filled(tmp_path / "ledger.db", random.Random(11), days=4.0)
    clock.now = T0 + 5 * DAY + 1800
    status = ledger.status()
    day_q = UsageQuery(start_time=T0, bucket_width="1d", group_by=("team", "model"))
    hour_q = UsageQuery(start_time=T0 + 2 * HOUR, end_time=T0 + 3 * DAY, bucket_width="1h", limit=168)
    daily, hourly = read_usage(ledger.path, day_q, clock()), read_usage(ledger.path, hour_q, clock())
    total, rows = ledger.settled_total(), ledger.db.execute("SELECT COUNT(*) FROM spend").fetchone()[0]
    old = ledger.db.execute("SELECT COUNT(*) FROM spend WHERE settled_at < ?", (T0 + 2 * DAY + 1800,))
    n_old = old.fetchone()[0]
    dropped = [ledger.prune(3 * DAY, max_rows=100) for _ in range(20)]
    assert sum(dropped) == n_old and dropped[0] == 100 and 0 in dropped  # in chunks, then done
    assert ledger.db.execute("SELECT COUNT(*) FROM spend").fetchone()[0] == rows - n_old
    assert spend_rollup.raw_kept_from(ledger.db) == T0 + 2 * DAY + 1800

    assert ledger.settled_total() == pytest.approx(total)
    fresh = Ledger(ledger.path, [Budget("global", 1e6, "month"), Budget("team:red", 1e6, "day")], clock=clock)
    assert fresh.status() == status  # a restarted ledger reads the same spend from the totals
    assert _flat(read_usage(ledger.path, day_q, clock())) == _flat(daily)
    assert _flat(read_usage(ledger.path, hour_q, clock())) == _flat(hourly)

    def refused(**kw: Any) -> str:
        with pytest.raises(UsageRangeError) as info:
            read_usage(ledger.path, UsageQuery.model_validate(kw), clock())
        assert "retention_days" in str(info.value)
        return info.value.param

    assert refused(start_time=T0 + DAY, bucket_width="1m") == "bucket_width"
    assert refused(start_time=T0 + 1, bucket_width="1h") == "start_time"  # a partial first hour
    assert refused(start_time=T0, end_time=T0 + DAY + 60, bucket_width="1h", limit=25) == "end_time"
    recent = UsageQuery(start_time=T0 + 3 * DAY, bucket_width="1m", limit=1440)
    assert _flat(read_usage(ledger.path, recent, clock()))  # minutes where the rows are kept


def test_feedback_on_a_dropped_request_is_refused_as_unknown(tmp_path: Path) -> None:
    clock = Clock(T0)
    ledger = Ledger(tmp_path / "ledger.db", clock=clock)
    ledger.settle([Charge("old", 0.1, model="m", policy="auto", task_type="coding")])
    clock.now = T0 + 2 * DAY
    ledger.settle([Charge("new", 0.1, model="m")])
    assert ledger.prune(DAY) == 1
    assert ledger.feedback("old", 1.0) is None and ledger.feedback("new", 1.0) == "m"


def test_retention_drops_old_feedback_scores_too(tmp_path: Path) -> None:
    clock = Clock(T0)
    ledger = Ledger(tmp_path / "ledger.db", clock=clock)
    ledger.settle([Charge(f"r{i}", 0.1, model="m") for i in range(5)])
    for i in range(3):
        assert ledger.feedback(f"r{i}", 0.0) == "m"  # three poor scores, early
    clock.now = T0 + 2 * DAY
    ledger.settle([Charge("late", 0.1, model="m")])
    assert ledger.feedback("late", 1.0) == "m"
    assert ledger.economics(7 * DAY)["m"]["feedback"] == 4
    # the 5 old spend rows go first, then the 3 old scores, 4 rows a call
    assert [ledger.prune(DAY, max_rows=4) for _ in range(4)] == [4, 4, 0, 0]
    assert ledger.economics(7 * DAY)["m"] == {
        "requests": 1,
        "cost_per_request_usd": pytest.approx(0.1),
        "quality": 1.0,  # the score still kept
        "feedback": 1,
    }


async def test_the_ledger_actor_prunes_in_chunks_past_its_retention(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ledger.db"
    ledger, clock = _filled(path, random.Random(13), n=120, days=4.0)
    ledger.close()
    monkeypatch.setattr(ledger_actor, "PRUNE_CHUNK", 7)
    keep = LedgerConfig(path=str(path))
    actor = ledger_actor.BudgetLedgerActor(keep, [], {})
    actor.ledger.clock = clock
    await asyncio.sleep(0)  # its own retention loop's first pass (none set), then it sleeps a minute
    try:
        assert await actor.prune() == 0  # no retention set: every row is kept
        await actor.configure(keep.model_copy(update={"retention_days": 2.0}), [], {})
        cutoff = clock() - 2 * DAY
        old = actor.ledger.db.execute("SELECT COUNT(*) FROM spend WHERE settled_at < ?", (cutoff,))
        n_old = old.fetchone()[0]
        assert n_old > 2 * 7
        seen: list[int] = []

        async def another_call() -> None:
            seen.append(actor.ledger.db.execute("SELECT COUNT(*) FROM spend").fetchone()[0])

        other = asyncio.ensure_future(another_call())
        assert await actor.prune() == n_old
        await other
        assert seen == [120 - 7]  # served between the first chunk and the second
        assert actor.ledger.db.execute("SELECT COUNT(*) FROM spend").fetchone()[0] == 120 - n_old
    finally:
        actor._export_task.cancel()
        actor._prune_task.cancel()
        actor.ledger.close()
