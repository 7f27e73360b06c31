"""Parallel-request limits: the slots on the ledger, and through the HTTP API."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from serve_app.concurrency import ConcurrencyLimiter, Lease, Slot, slots
from serve_app.config import FusionConfig
from serve_app.emulator import EmulatorServer
from serve_app.gateway import Gateway
from serve_app.ledger import Charge, Ledger
from serve_app.rate_limits import RateLimitsConfig, TeamLimits, Want
from tests.unit.serve_app.inprocess import emulated_config
from tests.unit.serve_app.test_accounting import USER, Router, _error, _router


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_slots_are_all_or_none_and_come_back_when_released() -> None:
    limiter = ConcurrencyLimiter()
    need = slots("k", 2, "red", 3)
    assert need == [Slot("parallel:k", 2), Slot("parallel:team:red", 3, "team")]
    assert slots("k", None, "red", None) == [] and slots("k", 1) == [Slot("parallel:k", 1)]
    for rid in ("a", "b"):
        assert all(d.allowed for d in limiter.check(need))
        limiter.acquire(rid, need, ttl_s=60)
    key, team = limiter.check(need)
    assert not key.allowed and key.retry_after_s == 1.0 and key.unit == "parallel_requests"
    assert team.allowed and team.remaining == 0  # the team's third slot is free, and it would be its last
    other_key = slots("k2", 5, "red", 3)
    assert all(d.allowed for d in limiter.check(other_key))
    limiter.acquire("c", other_key, ttl_s=60)
    assert not limiter.check(other_key)[1].allowed  # the team is full now, for every key of it
    assert limiter.release(["a", "unknown"]) == 1
    assert limiter.in_flight("parallel:k") == 1 and limiter.in_flight("parallel:team:red") == 2
    assert [(d.allowed, d.remaining) for d in limiter.check(need)] == [(True, 0), (True, 0)]
    limiter.release(["b", "c", "b"])
    assert limiter.in_flight("parallel:team:red") == 0


def test_a_lease_taken_twice_counts_once_and_a_dead_replicas_lease_expires() -> None:
    clock = Clock()
    limiter = ConcurrencyLimiter(clock)
    need = [Slot("parallel:k", 1)]
    limiter.acquire("a", need, ttl_s=30)
    limiter.acquire("a", need, ttl_s=30)  # a call retried after an actor crash
    assert limiter.in_flight("parallel:k") == 1 and not limiter.check(need)[0].allowed
    clock.now += 31  # its replica never gave it back
    assert limiter.check(need)[0].allowed and limiter.in_flight("parallel:k") == 0
    with pytest.raises(ValueError):
        limiter.check([Slot("parallel:k", 0)])


def test_the_ledger_spends_no_rate_on_a_request_refused_for_parallel_and_no_slot_on_one_refused_for_rate(
    tmp_path: Path,
) -> None:
    ledger = Ledger(tmp_path / "l.db")
    per_minute = [Want("requests:k", 2)]
    lease = Lease("a", (Slot("parallel:k", 1),), 60)
    assert all(d.allowed for d in ledger.take(per_minute, lease))
    refused = ledger.take(per_minute, Lease("b", (Slot("parallel:k", 1),), 60))
    assert [d.unit for d in refused] == ["parallel_requests"] and not refused[0].allowed
    assert ledger.release(["a"]) == 1
    assert all(d.allowed for d in ledger.take(per_minute, Lease("c", (Slot("parallel:k", 1),), 60)))
    ledger.settle([Charge("c", 0.0)])  # settling gives the slot back too
    assert ledger.parallel.in_flight("parallel:k") == 0
    out_of_rate = ledger.take(per_minute, Lease("d", (Slot("parallel:k", 1),), 60))
    assert not out_of_rate[0].allowed and ledger.parallel.in_flight("parallel:k") == 0
    ledger.close()


async def _slow(emu: EmulatorServer, model: str, ttft_ms: float) -> None:
    async with httpx.AsyncClient() as direct:
        await direct.put(f"{emu.url}/admin/latency_scale", json={"scale": 1.0})
        await direct.put(f"{emu.url}/admin/profiles/{model}", json={"ttft_ms": ttft_ms, "tokens_per_s": 1e6})


async def test_a_key_over_its_parallel_limit_gets_429_until_one_finishes(
    emu: EmulatorServer, config: FusionConfig, tmp_path: Path
) -> None:
    async for router in _router(emulated_config(config, emu.url), tmp_path):
        spec = {"team": "t", "name": "pool", "max_parallel_requests": 2}
        made = (await router.admin("POST", "/v1/admin/keys", json=spec)).json()
        assert made["max_parallel_requests"] == 2
        key = made["key"]
        await _slow(emu, "gpt-4o-mini", 300)
        answers = await asyncio.gather(*(router.chat(key, model="gpt-4o-mini") for _ in range(3)))
        codes = sorted(r.status_code for r in answers)
        assert codes == [200, 200, 429]
        refused = next(r for r in answers if r.status_code == 429)
        _error(refused, 429, "rate_limit_exceeded")
        assert "at most 2 at a time" in refused.json()["error"]["message"]
        assert refused.headers["retry-after"] == "1"
        assert refused.headers["x-ratelimit-limit-parallel-requests"] == "2"
        assert router.metrics.total("fusion_rate_limited_total", team="t", limit="parallel_requests") == 1
        ok = next(r for r in answers if r.status_code == 200)
        assert ok.headers["x-ratelimit-remaining-parallel-requests"] in ("0", "1")
        assert "x-ratelimit-reset-parallel-requests" not in ok.headers  # slots free as requests end
        # both ended: their slots are back at once, before any settlement (every 50 ms)
        again = await asyncio.gather(*(router.chat(key, model="gpt-4o-mini") for _ in range(2)))
        assert [r.status_code for r in again] == [200, 200]
        assert router.ledger.parallel.in_flight(f"parallel:{made['key_id']}") == 0


async def test_streams_and_failures_give_their_slots_back(
    emu: EmulatorServer, config: FusionConfig, tmp_path: Path
) -> None:
    async for router in _router(emulated_config(config, emu.url), tmp_path):
        made = (
            await router.admin(
                "POST", "/v1/admin/keys", json={"team": "t", "name": "one", "max_parallel_requests": 1}
            )
        ).json()
        key, bucket = made["key"], f"parallel:{made['key_id']}"
        for _ in range(3):
            streamed = await router.chat(key, model="gpt-4o-mini", stream=True)
            assert streamed.status_code == 200 and streamed.text.rstrip().endswith("data: [DONE]")
            assert router.ledger.parallel.in_flight(bucket) == 0  # back before [DONE] reached the client
        async with httpx.AsyncClient() as direct:
            await direct.put(f"{emu.url}/admin/faults/*", json={"kind": "http_error", "status": 503})
        for _ in range(2):  # every provider fails: 503 after the attempts, and the slot is back
            assert (await router.chat(key, model="gpt-4o-mini")).status_code in (502, 503)
        assert router.ledger.parallel.in_flight(bucket) == 0


async def test_a_request_that_fails_unexpectedly_gives_its_slot_back(
    router: Router, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = {"team": "t", "name": "one", "max_parallel_requests": 1}
    made = (await router.admin("POST", "/v1/admin/keys", json=spec)).json()

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a fault of ours")

    with monkeypatch.context() as patched:
        patched.setattr(Gateway, "plan", broken)
        with pytest.raises(RuntimeError):  # answered 500; the in-process transport re-raises it too
            await router.chat(made["key"], model="gpt-4o-mini")
    assert router.ledger.parallel.in_flight(f"parallel:{made['key_id']}") == 0
    assert (await router.chat(made["key"], model="gpt-4o-mini")).status_code == 200


async def test_a_streams_slot_is_free_before_its_client_reads_done(router: Router) -> None:
    """Watched at the ASGI boundary: a client that reads [DONE] and sends its next request at once
    must find the slot free (in-process HTTP clients only see a stream once it has ended)."""
    spec = {"team": "t", "name": "one", "max_parallel_requests": 1}
    made = (await router.admin("POST", "/v1/admin/keys", json=spec)).json()
    body = json.dumps({"model": "gpt-4o-mini", "messages": USER, "stream": True}).encode()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"router"),
            (b"content-type", b"application/json"),
            (b"authorization", f"Bearer {made['key']}".encode()),
        ],
        "server": ("router", 80),
        "client": ("127.0.0.1", 5000),
    }
    requested = asyncio.Event()
    never = asyncio.Event()

    async def receive() -> dict[str, Any]:
        if not requested.is_set():
            requested.set()
            return {"type": "http.request", "body": body, "more_body": False}
        await never.wait()  # the client stays connected
        return {"type": "http.disconnect"}

    busy_at_done: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and b"[DONE]" in message.get("body", b""):
            busy_at_done.append(router.ledger.parallel.in_flight(f"parallel:{made['key_id']}"))

    await router.app(scope, receive, send)
    assert busy_at_done == [0]


async def test_a_team_limit_is_shared_and_keys_can_change_theirs(
    emu: EmulatorServer, config: FusionConfig, tmp_path: Path
) -> None:
    limits = RateLimitsConfig(teams={"red": TeamLimits(max_parallel_requests=1)})
    cfg = emulated_config(config, emu.url).model_copy(update={"rate_limits": limits})
    async for router in _router(cfg, tmp_path):
        a = (await router.admin("POST", "/v1/admin/keys", json={"team": "red", "name": "a"})).json()
        b = (await router.admin("POST", "/v1/admin/keys", json={"team": "red", "name": "b"})).json()
        await _slow(emu, "gpt-4o-mini", 300)
        both = await asyncio.gather(
            router.chat(a["key"], model="gpt-4o-mini"), router.chat(b["key"], model="gpt-4o-mini")
        )
        assert sorted(r.status_code for r in both) == [200, 429]
        refused = next(r for r in both if r.status_code == 429)
        assert "team 'red'" in refused.json()["error"]["message"]
        changed = await router.admin(
            "PATCH", f"/v1/admin/keys/{a['key_id']}", json={"max_parallel_requests": 5}
        )
        assert changed.status_code == 200 and changed.json()["max_parallel_requests"] == 5
        bad = await router.admin("PATCH", f"/v1/admin/keys/{a['key_id']}", json={"max_parallel_requests": 0})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "max_parallel_requests"
        lifted = await router.admin(
            "PATCH", f"/v1/admin/keys/{a['key_id']}", json={"max_parallel_requests": None}
        )
        assert lifted.json()["max_parallel_requests"] is None


async def test_a_request_refused_after_its_slot_was_leased_gives_it_back(router: Router) -> None:
    """A budget refusal comes after the rate limits: the slot the request took is released."""
    made = (
        await router.admin(
            "POST",
            "/v1/admin/keys",
            json={
                "team": "t",
                "name": "poor",
                "max_parallel_requests": 1,
                "budget_usd": 0.0,
                "period": "day",
            },
        )
    ).json()
    for _ in range(3):
        _error(await router.chat(made["key"], model="gpt-4o-mini", messages=USER), 429, "insufficient_quota")
    assert router.ledger.parallel.in_flight(f"parallel:{made['key_id']}") == 0


@pytest.fixture
async def router(emu: EmulatorServer, config: FusionConfig, tmp_path: Path) -> AsyncIterator[Router]:
    async for r in _router(emulated_config(config, emu.url), tmp_path):
        yield r
