"""The ledger's core: holds that cannot overspend, settlements that survive kill -9, periods, feedback."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
from pathlib import Path

import pytest

from serve_app.ledger import Budget, Charge, Ledger, period_end, period_start
from serve_app.rate_limits import wants
from tests.conftest import Clock

DAY = 86_400.0
MIDDAY = 1_780_000_000.0  # 2026-05-28, mid-day UTC


def _ledger(tmp_path: Path, *budgets: Budget, clock: Clock | None = None) -> Ledger:
    return Ledger(tmp_path / "ledger.db", budgets, clock=clock or Clock(MIDDAY))


def test_concurrent_reservations_never_pass_the_limit(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path, Budget("global", 1.0, "day"))
    admitted = [ledger.reserve(f"r{i}", 0.1, None, None, 60).admitted for i in range(200)]
    assert sum(admitted) == 10
    refused = ledger.reserve("late", 0.1, None, None, 60)
    assert not refused.admitted and refused.refused_scope == "global"
    assert refused.remaining_usd == pytest.approx(0.0, abs=1e-9)


def test_settling_releases_the_hold_and_counts_the_real_cost(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path, Budget("global", 1.0, "day"))
    for i in range(10):
        assert ledger.reserve(f"r{i}", 0.1, None, None, 60).admitted
    ledger.settle([Charge(f"r{i}", 0.02, model="m") for i in range(10)])
    [row] = ledger.status()
    assert row["spent_usd"] == pytest.approx(0.2) and row["reserved_usd"] == pytest.approx(0.0)
    assert sum(ledger.reserve(f"s{i}", 0.1, None, None, 60).admitted for i in range(20)) == 8
    ledger.settle([Charge(f"s{i}", 0.0) for i in range(20)])
    for i, amount in enumerate((0.1, 0.2)):  # 0.1 + 0.2 - 0.1 - 0.2 is 5.6e-17 in floats
        ledger.reserve(f"t{i}", amount, None, None, 60)
    ledger.settle([Charge("t0", 0.0), Charge("t1", 0.0)])
    assert ledger.status()[0]["reserved_usd"] == 0.0  # no residue once every hold is gone


def test_settle_is_idempotent(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path, Budget("global", 1.0, "day"))
    ledger.reserve("r1", 0.5, None, None, 60)
    assert ledger.settle([Charge("r1", 0.3, model="m")]) == 1
    assert ledger.settle([Charge("r1", 0.3, model="m")]) == 0  # a resent batch
    assert ledger.settled_total() == pytest.approx(0.3)
    assert ledger.status()[0]["spent_usd"] == pytest.approx(0.3)


def test_team_and_key_budgets_apply_with_the_global_one(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path, Budget("global", 10.0, "month"), Budget("team:research", 0.3, "day"))
    _, key = ledger.keys.create("research", "ci", budget_usd=0.15, period="day")
    first = ledger.reserve("a", 0.1, key.key_id, "research", 60)
    assert first.admitted
    second = ledger.reserve("b", 0.1, key.key_id, "research", 60)
    assert not second.admitted and second.refused_scope == f"key:{key.key_id}"
    assert ledger.reserve("c", 0.2, None, "research", 60).admitted  # the team has 0.2 left
    third = ledger.reserve("d", 0.1, None, "research", 60)
    assert not third.admitted and third.refused_scope == "team:research"
    assert ledger.reserve("e", 1.0, None, "other", 60).admitted  # another team: only the global one


def test_a_new_period_starts_from_zero(tmp_path: Path) -> None:
    clock = Clock(MIDDAY)
    ledger = _ledger(tmp_path, Budget("global", 1.0, "day"), clock=clock)
    ledger.reserve("r1", 1.0, None, None, 60)
    ledger.settle([Charge("r1", 1.0, model="m")])
    refused = ledger.reserve("r2", 0.5, None, None, 60)
    assert not refused.admitted
    assert refused.resets_at == period_end("day", clock.now)
    clock.now = period_end("day", clock.now) + 1
    assert ledger.reserve("r3", 0.5, None, None, 60).admitted


def test_period_bounds_are_utc_calendar_days_and_months() -> None:
    now = 1_780_000_000.0  # 2026-05-28T20:26:40Z
    assert period_start("day", now) == 1_779_926_400  # 2026-05-28T00:00:00Z
    assert period_start("month", now) == 1_777_593_600  # 2026-05-01T00:00:00Z
    assert period_end("month", now) == 1_780_272_000  # 2026-06-01T00:00:00Z
    assert period_end("day", now) - period_start("day", now) == DAY


def test_holds_of_requests_that_never_settle_expire(tmp_path: Path) -> None:
    clock = Clock(MIDDAY)
    ledger = _ledger(tmp_path, Budget("global", 1.0, "day"), clock=clock)
    assert ledger.reserve("lost", 1.0, None, None, ttl_s=30).admitted
    assert not ledger.reserve("next", 0.1, None, None, 30).admitted
    clock.now += 31
    assert ledger.reserve("next", 0.1, None, None, 30).admitted


def _crash_after_writes(path: str) -> None:
    ledger = Ledger(path, [Budget("global", 1.0, "day")])
    for i in range(5):
        ledger.reserve(f"r{i}", 0.1, None, None, 600)
    ledger.settle([Charge(f"r{i}", 0.05, model="m") for i in range(3)])
    os.kill(os.getpid(), signal.SIGKILL)  # no close, no checkpoint


def test_kill_9_loses_no_settled_spend_and_keeps_open_holds(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    child = multiprocessing.get_context("spawn").Process(target=_crash_after_writes, args=(str(path),))
    child.start()
    child.join(30)
    assert child.exitcode == -signal.SIGKILL
    ledger = Ledger(path, [Budget("global", 1.0, "day")])
    assert ledger.settled_total() == pytest.approx(0.15)
    assert ledger.holds == 2
    [row] = ledger.status()
    assert row["reserved_usd"] == pytest.approx(0.2) and row["spent_usd"] == pytest.approx(0.15)
    # the two requests in flight settle against the reopened ledger
    ledger.settle([Charge("r3", 0.05, model="m"), Charge("r4", 0.05, model="m")])
    assert ledger.settled_total() == pytest.approx(0.25) and ledger.holds == 0


def test_the_file_is_sqlite_in_wal_mode(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    assert ledger.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    ledger.close()
    assert sqlite3.connect(tmp_path / "ledger.db").execute("SELECT COUNT(*) FROM spend").fetchone()[0] == 0


def test_feedback_scores_the_model_that_served_and_only_for_its_key(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    ledger.settle(
        [
            Charge("a", 0.01, key_id="k1", model="gpt-4.1"),
            Charge("b", 0.03, key_id="k1", model="gpt-4.1"),
            Charge("c", 0.0),  # served nothing
        ]
    )
    assert ledger.feedback("a", 1.0, "k1") == "gpt-4.1"
    assert ledger.feedback("b", 0.5, "k1") == "gpt-4.1"
    assert ledger.feedback("b", 0.0, "k2") is None  # another key's request
    assert ledger.feedback("c", 1.0, None) is None
    assert ledger.feedback("nope", 1.0, None) is None
    row = ledger.economics(window_s=3600)["gpt-4.1"]
    assert row["requests"] == 2 and row["cost_per_request_usd"] == pytest.approx(0.02)
    assert row["quality"] == pytest.approx(0.75) and row["feedback"] == 2


def test_a_teams_token_limit_is_charged_every_key_answer(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    assert all(d.allowed for d in ledger.take(wants("k1", None, None, 10, "red", None, 100)))
    ledger.settle([Charge("r1", 0.0, key_id="k1", team="red", model="m", output_tokens=80)])
    [refused] = ledger.take(wants("k2", None, None, 20, "red", None, 100))  # 10 + 80 + 20 > 100
    assert not refused.allowed and refused.scope == "team" and refused.unit == "tokens"
    assert all(d.allowed for d in ledger.take(wants("k3", None, None, 20, "blue", None, 100)))
    ledger.close()


def test_a_keys_new_budget_counts_what_it_spent_in_the_period(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    _, record = ledger.keys.create("t", "n", budget_usd=0.1, period="day")
    assert ledger.reserve("a", 0.1, record.key_id, "t", 60).admitted
    ledger.settle([Charge("a", 0.1, key_id=record.key_id, team="t", model="m")])
    assert not ledger.reserve("b", 0.05, record.key_id, "t", 60).admitted
    ledger.keys.update(record.key_id, {"budget_usd": 0.12, "period": "day"})
    assert ledger.reserve("c", 0.05, record.key_id, "t", 60).refused_scope == f"key:{record.key_id}"
    assert ledger.reserve("d", 0.02, record.key_id, "t", 60).admitted  # 0.1 spent + 0.02 <= 0.12
    ledger.keys.update(record.key_id, {"budget_usd": None, "period": None})
    assert ledger.reserve("e", 50.0, record.key_id, "t", 60).admitted  # no budget applies
    ledger.close()
