"""Client keys: stored hashed, checked against the replica's copy, revocable, required once made."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from serve_app.cli import cli
from serve_app.keys import KEYS_SCHEMA, KeyRing, bearer, check_models
from serve_app.ledger import Ledger
from tests.unit.serve_app.inprocess import config_file


def test_only_the_hash_is_stored(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.db")
    key, record = ledger.keys.create("research", "notebook")
    assert key.startswith("fr-") and len(key) > 40
    ledger.close()
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert key.encode() not in stored
    assert key[3:].encode() not in stored
    assert record.shown == key[:7] + "…"
    assert key not in repr(record) and key not in str(record.public())


def test_ring_accepts_active_keys_and_refuses_revoked_ones(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.db")
    key, record = ledger.keys.create("research", "notebook")
    other, _ = ledger.keys.create("ops", "batch")
    ring = KeyRing()
    assert not ring.required  # no keys yet: open
    ring.update(ledger.keys.snapshot())
    assert ring.required
    assert ring.check(key) == record
    assert ring.check("fr-" + "x" * 43) is None
    assert ring.check(None) is None
    ledger.keys.revoke(record.key_id)
    ring.update(ledger.keys.snapshot())
    assert ring.check(key) is None and ring.check(other) is not None
    ledger.keys.revoke(ledger.keys.list()[1].key_id)
    ring.update(ledger.keys.snapshot())
    assert ring.required  # revoking every key does not open the router


def test_required_can_be_forced_either_way() -> None:
    assert KeyRing(required=True).required
    assert not KeyRing({}, required=False).required


def test_a_budget_needs_amount_and_period(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.db")
    with pytest.raises(ValueError, match="period"):
        ledger.keys.create("t", "n", budget_usd=5.0)
    with pytest.raises(ValueError, match="team and a name"):
        ledger.keys.create("", "n")


@pytest.mark.parametrize(
    ("authorization", "x_api_key", "expected"),
    [
        ("Bearer fr-abc", None, "fr-abc"),
        ("bearer  fr-abc ", None, "fr-abc"),
        (None, "fr-xyz", "fr-xyz"),
        ("Basic dXNlcg==", None, None),
        ("Bearer ", None, None),
        (None, None, None),
    ],
)
def test_bearer(authorization: str | None, x_api_key: str | None, expected: str | None) -> None:
    assert bearer(authorization, x_api_key) == expected


def test_a_key_table_made_before_rate_limits_and_expiry_gains_the_columns(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    added = (
        ",\n    rpm         INTEGER,\n    models      TEXT,\n    tpm         INTEGER,\n    expires_at  REAL"
        ",\n    max_parallel_requests INTEGER"
    )
    assert added in KEYS_SCHEMA
    db.executescript(KEYS_SCHEMA.replace(added, ""))
    db.execute(
        "INSERT INTO api_keys VALUES ('id1', 'hash', 'fr-abcd…', 'team', 'name', NULL, NULL, 1.0, NULL)"
    )
    db.commit()
    db.close()
    ledger = Ledger(path)
    old = ledger.keys.get("id1")
    assert (
        old is not None and old.rpm is None and old.models is None and old.tpm is None and old.team == "team"
    )
    assert old.expires_at is None and old.usable(time.time()) and old.max_parallel_requests is None
    _, made = ledger.keys.create("t", "n", rpm=60, models=("gpt-4o-mini",), tpm=10_000)
    assert made.tpm == 10_000
    assert ledger.keys.get(made.key_id) == made and made.rpm == 60 and made.models == ("gpt-4o-mini",)
    assert made.allows("gpt-4o-mini") and not made.allows("gpt-4.1") and old.allows("gpt-4.1")
    assert ledger.keys.update("id1", {"rpm": 5, "models": ["a", "b"], "max_parallel_requests": 3})
    assert ledger.keys.snapshot()["hash"].max_parallel_requests == 3
    assert ledger.keys.snapshot()["hash"].rpm == 5 and ledger.keys.snapshot()["hash"].models == ("a", "b")
    changed = ledger.keys.update("id1", {"models": None})
    assert changed is not None and changed.models is None and changed.rpm == 5  # rpm untouched
    assert ledger.keys.update("nope", {"rpm": 5}) is None
    with pytest.raises(ValueError, match="rpm"):
        ledger.keys.create("t", "n", rpm=0)
    with pytest.raises(ValueError, match="rpm"):
        ledger.keys.update("id1", {"rpm": 10**9})
    with pytest.raises(ValueError, match="tpm"):
        ledger.keys.update("id1", {"tpm": 0})
    assert ledger.keys.update("id1", {"tpm": 500}).tpm == 500  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="budget_usd and period together"):
        ledger.keys.update("id1", {"budget_usd": 1.0})
    with pytest.raises(ValueError, match="both an amount"):
        ledger.keys.update("id1", {"budget_usd": 1.0, "period": None})
    with pytest.raises(ValueError, match="negative"):
        ledger.keys.update("id1", {"budget_usd": -1.0, "period": "day"})
    with pytest.raises(ValueError, match="day or month"):
        ledger.keys.update("id1", {"budget_usd": 1.0, "period": "week"})
    with pytest.raises(ValueError, match="cannot change team"):
        ledger.keys.update("id1", {"team": "other"})
    with pytest.raises(ValueError, match="empty"):
        ledger.keys.update("id1", {"models": []})
    ledger.close()


def test_model_lists_are_checked_against_the_configuration() -> None:
    assert check_models(None, ["a"]) is None
    assert check_models(["a", "b", "a"], ["a", "b", "c"]) == ("a", "b")
    with pytest.raises(ValueError, match="unknown models x"):
        check_models(["a", "x"], ["a"])
    with pytest.raises(ValueError, match="empty"):
        check_models([], ["a"])


def _cli_key(tmp_path: Path, *options: str) -> tuple[Path, str]:
    """A config file with its ledger in ``tmp_path``, and the id of a key made with ``options``."""
    config = config_file(tmp_path, tmp_path / "l.db")
    made = CliRunner().invoke(
        cli, ["keys", "create", "--team", "t", "--name", "n", *options, "-c", str(config)]
    )
    assert made.exit_code == 0, made.output
    return config, made.output.split()[1]


def test_cli_sets_lists_and_lifts_rate_limits(tmp_path: Path) -> None:
    config, key_id = _cli_key(tmp_path, "--rpm", "30")
    run = CliRunner().invoke
    listed_first = run(cli, ["keys", "list", "-c", str(config)]).output
    assert "rpm=30      tpm=-         parallel=-     models=all" in listed_first
    lifted = run(
        cli,
        [
            "keys",
            "update",
            key_id,
            "--no-rpm",
            "--tpm",
            "9000",
            "--models",
            "gpt-4o-mini, gpt-4.1",
            "-c",
            str(config),
        ],
    )
    assert lifted.exit_code == 0
    assert "rpm=-       tpm=9000      parallel=-     models=gpt-4o-mini,gpt-4.1" in lifted.output
    parallel = run(cli, ["keys", "update", key_id, "--max-parallel", "4", "-c", str(config)])
    assert parallel.exit_code == 0 and "parallel=4 " in parallel.output
    unlimited = run(cli, ["keys", "update", key_id, "--no-max-parallel", "-c", str(config)])
    assert "parallel=- " in unlimited.output
    listed = run(cli, ["keys", "list", "--json", "-c", str(config)]).output
    assert (
        '"rpm": null' in listed
        and '"tpm": 9000' in listed
        and '"models": ["gpt-4o-mini", "gpt-4.1"]' in listed
    )
    assert "models=all" in run(cli, ["keys", "update", key_id, "--all-models", "-c", str(config)]).output
    for bad in (
        ["--rpm", "0"],
        ["--tpm", "0"],
        ["--max-parallel", "0"],
        ["--models", "gpt-5"],
        [],
        ["--rpm", "3", "--no-rpm"],
    ):
        assert run(cli, ["keys", "update", key_id, *bad, "-c", str(config)]).exit_code == 2, bad
    assert run(cli, ["keys", "update", "unknown", "--rpm", "5", "-c", str(config)]).exit_code == 1
    create = ["keys", "create", "--team", "t", "--name", "p", "--max-parallel", "2"]
    made = run(cli, [*create, "-c", str(config)])
    assert made.exit_code == 0 and "parallel=2 " in run(cli, ["keys", "list", "-c", str(config)]).output
    bad_create = run(
        cli, ["keys", "create", "--team", "t", "--name", "n", "--models", "x", "-c", str(config)]
    )
    assert bad_create.exit_code == 2 and "unknown models x" in bad_create.output


def test_a_key_stops_working_when_it_expires(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.db")
    now = time.time()
    key, record = ledger.keys.create("t", "n", expires_at=now + 3600)
    forever, _ = ledger.keys.create("t", "m")
    ring = KeyRing(ledger.keys.snapshot())
    assert ring.check(key, now=now) == record and record.expires_at == now + 3600
    assert ring.check(key, now=now + 3600) is None and ring.check(forever, now=now + 10**6) is not None
    assert ring.find(key) == record  # what the 401 says comes from it: expired, not unknown
    assert record.public()["expired"] is False and record.public()["expires_at"] == now + 3600
    past = ledger.keys.update(record.key_id, {"expires_at": now - 1})  # an admin may expire it now
    assert past is not None and past.public()["expired"] is True and not past.usable(now)
    lifted = ledger.keys.update(record.key_id, {"expires_at": None})
    assert lifted is not None and lifted.usable(now + 10**9)
    with pytest.raises(ValueError, match="expires_at"):
        ledger.keys.create("t", "n", expires_at=now - 5)  # a key made already expired is a mistake
    with pytest.raises(ValueError, match="expires_at"):
        ledger.keys.update(record.key_id, {"expires_at": -1.0})
    ledger.close()


def test_cli_sets_and_removes_a_keys_budget(tmp_path: Path) -> None:
    config, key_id = _cli_key(tmp_path)
    run = CliRunner().invoke
    raised = run(cli, ["keys", "update", key_id, "--budget-usd", "3", "--period", "month", "-c", str(config)])
    assert raised.exit_code == 0 and "budget=$3/month" in raised.output, raised.output
    assert "budget=$3/month" in run(cli, ["keys", "list", "-c", str(config)]).output
    removed = run(cli, ["keys", "update", key_id, "--no-budget", "-c", str(config)])
    assert removed.exit_code == 0 and "budget=- " in removed.output, removed.output
    for bad in (
        ["--budget-usd", "3"],
        ["--period", "day"],
        ["--no-budget", "--budget-usd", "1", "--period", "day"],
    ):
        assert run(cli, ["keys", "update", key_id, *bad, "-c", str(config)]).exit_code == 2, bad


def test_cli_sets_and_lifts_an_expiry(tmp_path: Path) -> None:
    config, key_id = _cli_key(tmp_path, "--expires", "30d")
    run = CliRunner().invoke
    [listed] = [
        json.loads(line)
        for line in run(cli, ["keys", "list", "--json", "-c", str(config)]).output.splitlines()
    ]
    assert abs(listed["expires_at"] - (time.time() + 30 * 86_400)) < 60 and listed["expired"] is False
    day = time.strftime("%Y-%m-%d", time.gmtime(listed["expires_at"]))
    assert f"active, expires {day}" in run(cli, ["keys", "list", "-c", str(config)]).output
    moved = run(cli, ["keys", "update", key_id, "--expires", "2020-01-01", "-c", str(config)])
    assert moved.exit_code == 0 and "expired 2020-01-01" in moved.output, moved.output
    assert "expired 2020-01-01" in run(cli, ["keys", "list", "-c", str(config)]).output
    lifted = run(cli, ["keys", "update", key_id, "--no-expiry", "-c", str(config)])
    assert lifted.exit_code == 0 and "expire" not in lifted.output, lifted.output
    for bad in (["--expires", "soon"], ["--expires", "5d", "--no-expiry"]):
        assert run(cli, ["keys", "update", key_id, *bad, "-c", str(config)]).exit_code == 2, bad
    past = run(
        cli, ["keys", "create", "--team", "t", "--name", "n", "--expires", "2020-01-01", "-c", str(config)]
    )
    assert past.exit_code == 2 and "expires_at" in past.output


def test_a_rotated_key_keeps_its_record_and_its_old_secret_works_through_the_grace(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.db")
    old, made = ledger.keys.create("t", "app", rpm=60, budget_usd=5.0, period="day")
    rotated = ledger.keys.rotate(made.key_id, grace_s=3600)
    assert rotated is not None
    new, record = rotated
    assert new != old and record.key_id == made.key_id and record.rpm == 60 and record.budget_usd == 5.0
    assert record.shown == new[:7] + "…" and "retired_at" not in record.public()
    assert record.previous_key_until == pytest.approx(time.time() + 3600, abs=5)
    assert [r.previous_key_until for r in ledger.keys.list()] == [record.previous_key_until]
    ring = KeyRing(ledger.keys.snapshot())
    now = time.time()
    assert ring.check(new, now) == record
    during = ring.check(old, now + 3500)  # the old secret, within its grace: the same key
    assert during is not None and during.key_id == made.key_id and during.rpm == 60
    assert ring.check(old, now + 3700) is None and ring.check(new, now + 3700) == record
    retired = ring.find(old)
    assert retired is not None and retired.retired_at is not None and retired.expires_at == retired.retired_at
    again = ledger.keys.rotate(made.key_id)  # no grace: the second secret stops at once
    assert again is not None
    ring.update(ledger.keys.snapshot())
    assert ring.check(new, time.time() + 1) is None and ring.check(again[0]) is not None
    assert ring.check(old, time.time() + 1) is not None  # the first one's grace still runs
    ledger.keys.revoke(made.key_id)
    ring.update(ledger.keys.snapshot())
    assert ring.check(old) is None and ring.check(again[0]) is None  # revoking stops every secret
    with pytest.raises(ValueError, match="revoked"):
        ledger.keys.rotate(made.key_id)
    with pytest.raises(ValueError, match="grace_s"):
        ledger.keys.rotate(made.key_id, grace_s=-1)
    assert ledger.keys.rotate("nope") is None
    short_old, short = ledger.keys.create("t", "short", expires_at=time.time() + 60)
    rotated_short = ledger.keys.rotate(short.key_id, grace_s=3600)
    assert rotated_short is not None
    ring.update(ledger.keys.snapshot())
    assert ring.check(short_old, time.time() + 120) is None  # the key's own expiry comes first
    ledger.close()


def test_cli_rotates_a_key(tmp_path: Path) -> None:
    config, key_id = _cli_key(tmp_path, "--rpm", "30")
    run = CliRunner().invoke
    out = run(cli, ["keys", "rotate", key_id, "--grace", "12h", "-c", str(config)])
    assert out.exit_code == 0, out.output
    assert (
        f"key_id: {key_id}" in out.output and "key:    fr-" in out.output and "stops working at" in out.output
    )
    assert run(cli, ["keys", "rotate", key_id, "--grace", "soon", "-c", str(config)]).exit_code == 2
    assert run(cli, ["keys", "rotate", "unknown", "-c", str(config)]).exit_code == 1
    assert "old key until" in run(cli, ["keys", "list", "-c", str(config)]).output  # the 12 h grace
    assert "stops working now" in run(cli, ["keys", "rotate", key_id, "-c", str(config)]).output
