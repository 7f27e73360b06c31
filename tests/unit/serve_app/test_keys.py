"""Client keys: stored hashed, checked against the replica's copy, revocable, required once made."""

from __future__ import annotations

from pathlib import Path

import pytest

from serve_app.keys import KeyRing, bearer
from serve_app.ledger import Ledger


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
