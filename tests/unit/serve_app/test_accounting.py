"""Keys, budgets, stats, feedback and metrics on the HTTP surface, with the ledger in process."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from serve_app.accounting import Accountant, LocalLedgerClient
from serve_app.api import create_api
from serve_app.config import FusionConfig
from serve_app.emulator import EmulatorServer
from serve_app.errors import RateLimitError
from serve_app.ledger import BudgetsConfig, Ledger
from serve_app.metrics import MemoryBackend, Metrics
from serve_app.rate_limits import RateDecision, RateLimitsConfig, TeamLimits
from serve_app.schemas import parse_request
from tests.unit.serve_app.inprocess import emulated_config, inprocess_gateway

ADMIN = "admin-secret-for-tests"
USER = [{"role": "user", "content": "What is the capital of France?"}]


@dataclass
class Router:
    client: httpx.AsyncClient
    accountant: Accountant
    ledger: Ledger
    metrics: MemoryBackend
    app: Any = None  # the ASGI app, for tests that watch what it sends

    async def chat(self, key: str | None = None, **body: object) -> httpx.Response:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        payload = {"model": "auto", "messages": USER, **body}
        return await self.client.post("/v1/chat/completions", json=payload, headers=headers)

    async def admin(self, method: str, path: str, json: object = None) -> httpx.Response:
        headers = {"authorization": f"Bearer {ADMIN}"}
        return await self.client.request(method, path, headers=headers, json=json)


async def _router(cfg: FusionConfig, tmp_path: Path) -> AsyncIterator[Router]:
    ledger = Ledger(tmp_path / "ledger.db", cfg.budgets.budgets())
    accountant = Accountant(cfg, LocalLedgerClient(ledger), environ={"FUSION_ADMIN_KEY": ADMIN})
    await accountant.refresh()
    backend = MemoryBackend()
    app = create_api(cfg, inprocess_gateway(cfg), {}, accountant=accountant, metrics=Metrics(backend))
    transport = httpx.ASGITransport(app=app)
    settlements = asyncio.create_task(accountant.run_settlements())
    async with httpx.AsyncClient(transport=transport, base_url="http://router") as client:
        yield Router(client, accountant, ledger, backend, app)
    settlements.cancel()
    ledger.close()


@pytest.fixture
async def router(emu: EmulatorServer, config: FusionConfig, tmp_path: Path) -> AsyncIterator[Router]:
    async for r in _router(emulated_config(config, emu.url), tmp_path):
        yield r


def _budgeted(config: FusionConfig, emu: EmulatorServer, usd: float, **budgets: object) -> FusionConfig:
    cfg = emulated_config(config, emu.url)
    spec = BudgetsConfig.model_validate({"global": {"limit_usd": usd, "period": "day"}, **budgets})
    return cfg.model_copy(update={"budgets": spec})


def _error(r: httpx.Response, status: int, code: str | None) -> None:
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code


async def test_without_keys_the_router_is_open_and_costs_are_reported(router: Router) -> None:
    r = await router.chat(model="gpt-4o-mini")
    assert r.status_code == 200, r.text
    fusion = r.json()["fusion"]
    assert fusion["cost_usd"] > 0 and float(r.headers["x-fusion-cost-usd"]) == pytest.approx(
        fusion["cost_usd"]
    )
    assert fusion["usage"]["input_tokens"] == r.json()["usage"]["prompt_tokens"]
    assert fusion["reserved_usd"] is None  # no budget applies: no call to the ledger
    timings = fusion["timings_ms"]  # where the time went (benchmarks/overhead_profile.py reads them)
    assert timings["handler_ms"] >= timings["provider_ms"] > 0 and "admit_ms" in timings
    routed = (await router.chat()).json()["fusion"]["timings_ms"]
    assert routed["classify_ms"] > 0 and routed["handler_ms"] >= routed["classify_ms"] + routed["provider_ms"]
    await router.accountant.flush()
    assert router.ledger.settled_total() == pytest.approx(fusion["cost_usd"])


async def test_keys_are_required_once_made_and_revocation_takes_effect(router: Router) -> None:
    assert (
        await router.admin("POST", "/v1/admin/keys", json={"team": "research", "name": "nb"})
    ).status_code == 201
    _error(await router.chat(), 401, "invalid_api_key")
    _error(await router.chat("fr-not-a-key"), 401, "invalid_api_key")
    made = (await router.admin("POST", "/v1/admin/keys", json={"team": "ops", "name": "batch"})).json()
    key = made["key"]
    assert (await router.chat(key)).status_code == 200
    assert (await router.client.get("/v1/models", headers={"x-api-key": key})).status_code == 200
    _error(await router.client.get("/v1/models"), 401, "invalid_api_key")
    listed = (await router.admin("GET", "/v1/admin/keys")).json()["data"]
    assert [k["name"] for k in listed] == ["nb", "batch"]
    assert key not in str(listed) and all("key_hash" not in k for k in listed)
    revoked = await router.admin("DELETE", f"/v1/admin/keys/{made['key_id']}")
    assert revoked.json()["active"] is False
    _error(await router.chat(key), 401, "invalid_api_key")
    _error(await router.admin("DELETE", "/v1/admin/keys/unknown"), 404, "not_found")


async def test_an_expired_key_gets_401_saying_so(router: Router) -> None:
    soon = int(time.time()) + 3600
    made = (
        await router.admin("POST", "/v1/admin/keys", json={"team": "t", "name": "n", "expires_at": soon})
    ).json()
    assert made["expires_at"] == soon and made["expired"] is False
    assert (await router.chat(made["key"])).status_code == 200
    path = f"/v1/admin/keys/{made['key_id']}"
    expired = await router.admin("PATCH", path, json={"expires_at": int(time.time()) - 1})
    assert expired.status_code == 200 and expired.json()["expired"] is True
    refused = await router.chat(made["key"])
    _error(refused, 401, "invalid_api_key")
    assert "expired" in refused.json()["error"]["message"]
    assert (await router.admin("PATCH", path, json={"expires_at": None})).json()["expired"] is False
    assert (await router.chat(made["key"])).status_code == 200
    past = await router.admin("POST", "/v1/admin/keys", json={"team": "t", "name": "n", "expires_at": 5})
    _error(past, 400, None)
    assert "expires_at" in past.json()["error"]["message"]


async def test_admin_routes_need_the_admin_key(router: Router) -> None:
    for headers in ({}, {"authorization": "Bearer wrong"}):
        r = await router.client.get("/v1/admin/keys", headers=headers)
        _error(r, 401, "invalid_api_key")
    bad = await router.admin("POST", "/v1/admin/keys", json={"team": "t", "name": "n", "budget_usd": 3})
    _error(bad, 400, None)


async def test_circuit_reset_needs_the_admin_key_once_one_is_set(router: Router) -> None:
    """Closing every circuit is an operator's action: a client key is not enough."""
    client = (await router.admin("POST", "/v1/admin/keys", json={"team": "t", "name": "n"})).json()["key"]
    for headers in ({}, {"authorization": f"Bearer {client}"}):
        _error(await router.client.post("/v1/router/circuits/reset", headers=headers), 401, "invalid_api_key")
    done = await router.admin("POST", "/v1/router/circuits/reset")
    assert done.status_code == 200 and done.json()["status"] == "ok"


async def test_keys_never_reach_logs(router: Router, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    key = (await router.admin("POST", "/v1/admin/keys", json={"team": "t", "name": "n"})).json()["key"]
    await router.chat(key)
    await router.chat(key + "x")
    assert key not in caplog.text and ADMIN not in caplog.text


async def test_a_key_over_its_rate_limit_gets_429_before_anything_is_done(
    router: Router, emu: EmulatorServer
) -> None:
    made = await router.admin("POST", "/v1/admin/keys", json={"team": "t", "name": "slow", "rpm": 3})
    assert made.status_code == 201 and made.json()["rpm"] == 3
    limited = made.json()["key"]
    free = (await router.admin("POST", "/v1/admin/keys", json={"team": "t", "name": "free"})).json()["key"]
    answers = [await router.chat(limited, model="gpt-4o-mini") for _ in range(3)]
    assert [r.status_code for r in answers] == [200, 200, 200]
    assert [r.headers["x-ratelimit-remaining-requests"] for r in answers] == ["2", "1", "0"]
    assert all(r.headers["x-ratelimit-limit-requests"] == "3" for r in answers)
    stream = await router.chat(free, model="gpt-4o-mini", stream=True)
    assert stream.status_code == 200 and "x-ratelimit-limit-requests" not in stream.headers
    await router.accountant.flush()
    settled = router.ledger.settled_total()
    async with httpx.AsyncClient() as direct:
        seen = (await direct.get(f"{emu.url}/admin/stats")).json()["requests"]
    refused = await router.chat(limited, model="gpt-4o-mini", stream=True)
    _error(refused, 429, "rate_limit_exceeded")
    assert refused.json()["error"]["type"] == "rate_limit_error" and "3 requests per minute" in refused.text
    assert 1 <= int(refused.headers["retry-after"]) <= 20 and int(refused.headers["retry-after-ms"]) > 0
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    async with httpx.AsyncClient() as direct:  # nothing was sent on for it, nothing charged
        assert (await direct.get(f"{emu.url}/admin/stats")).json()["requests"] == seen
    await router.accountant.flush()
    assert router.ledger.settled_total() == settled
    assert router.metrics.total("fusion_errors_total", kind="request_rate_limit_exceeded") == 1
    assert router.metrics.total("fusion_rate_limited_total", team="t", limit="requests") == 1
    assert (await router.chat(free, model="gpt-4o-mini")).status_code == 200  # other keys go on
    listed = {k["name"]: k["rpm"] for k in (await router.admin("GET", "/v1/admin/keys")).json()["data"]}
    assert listed == {"slow": 3, "free": None}
    key_id = made.json()["key_id"]
    lifted = await router.admin("PATCH", f"/v1/admin/keys/{key_id}", json={"rpm": None})
    assert lifted.status_code == 200 and lifted.json()["rpm"] is None
    again = await router.chat(limited, model="gpt-4o-mini")
    assert again.status_code == 200 and "x-ratelimit-limit-requests" not in again.headers
    await router.admin("PATCH", f"/v1/admin/keys/{key_id}", json={"rpm": 1})
    assert (await router.chat(limited, model="gpt-4o-mini")).status_code == 429  # its bucket is spent


async def test_a_teams_rate_limit_is_shared_by_its_keys(
    emu: EmulatorServer, config: FusionConfig, tmp_path: Path
) -> None:
    limits = RateLimitsConfig(teams={"red": TeamLimits(rpm=2, tpm=100_000)})
    cfg = emulated_config(config, emu.url).model_copy(update={"rate_limits": limits})
    async for router in _router(cfg, tmp_path):
        keys = {}
        for team, name in (("red", "a"), ("red", "b"), ("blue", "c")):
            made = await router.admin("POST", "/v1/admin/keys", json={"team": team, "name": name})
            keys[name] = made.json()["key"]
        first = await router.chat(keys["a"], model="gpt-4o-mini")
        assert first.status_code == 200 and first.headers["x-ratelimit-remaining-requests"] == "1"
        assert first.headers["x-ratelimit-limit-tokens"] == "100000"  # the team's, on a key without
        assert (await router.chat(keys["b"], model="gpt-4o-mini")).status_code == 200
        refused = await router.chat(keys["a"], model="gpt-4o-mini")
        _error(refused, 429, "rate_limit_exceeded")
        assert "team 'red'" in refused.json()["error"]["message"] and "retry-after" in refused.headers
        assert router.metrics.total("fusion_rate_limited_total", team="red", limit="team_requests") == 1
        blue = await router.chat(keys["c"], model="gpt-4o-mini")
        assert blue.status_code == 200 and "x-ratelimit-limit-requests" not in blue.headers


async def test_a_key_uses_only_its_models_directly_and_routed(router: Router, emu: EmulatorServer) -> None:
    spec = {"team": "t", "name": "mini", "models": ["gpt-4o-mini", "llama-3.1-8b-instruct"]}
    made = await router.admin("POST", "/v1/admin/keys", json=spec)
    assert made.status_code == 201 and made.json()["models"] == spec["models"]
    key = made.json()["key"]
    listed = (await router.client.get("/v1/models", headers={"x-api-key": key})).json()["data"]
    assert {m["id"] for m in listed if m["owned_by"] != "fusion-router"} == set(spec["models"])
    one = await router.client.get("/v1/models/gpt-4o-mini", headers={"x-api-key": key})
    assert one.status_code == 200 and one.json()["id"] == "gpt-4o-mini"
    _error(await router.client.get("/v1/models/gpt-4.1", headers={"x-api-key": key}), 404, "model_not_found")
    async with httpx.AsyncClient() as direct:
        seen = (await direct.get(f"{emu.url}/admin/stats")).json()["requests"]
    refused = await router.chat(key, model="gpt-4.1")
    _error(refused, 403, "model_not_allowed")
    assert refused.json()["error"]["type"] == "permission_error" and "'gpt-4.1'" in refused.text
    async with httpx.AsyncClient() as direct:  # refused before any provider was called
        assert (await direct.get(f"{emu.url}/admin/stats")).json()["requests"] == seen
    prompts = ["Write a Python function that merges two sorted lists.", "Write a sonnet about rain."]
    for policy in ("auto", "auto:quality", "auto:cost"):
        for prompt in prompts:
            r = await router.chat(key, model=policy, messages=[{"role": "user", "content": prompt}])
            assert r.status_code == 200, r.text
            assert r.headers["x-fusion-model"] in spec["models"], (policy, prompt)
            assert set(r.json()["fusion"]["candidates"]) <= set(spec["models"])
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    assert (await router.chat(key, tools=[tool])).headers["x-fusion-model"] == "gpt-4o-mini"
    narrowed = await router.admin(
        "PATCH", f"/v1/admin/keys/{made.json()['key_id']}", json={"models": ["llama-3.1-8b-instruct"]}
    )
    assert narrowed.json()["models"] == ["llama-3.1-8b-instruct"]
    _error(await router.chat(key, tools=[tool]), 403, "model_not_allowed")  # none of its models has tools
    wide = await router.admin("PATCH", f"/v1/admin/keys/{made.json()['key_id']}", json={"models": None})
    assert wide.json()["models"] is None
    assert (await router.chat(key, model="gpt-4.1")).status_code == 200
    unknown = await router.admin("POST", "/v1/admin/keys", json={**spec, "models": ["gpt-5"]})
    _error(unknown, 400, None)
    assert unknown.json()["error"]["param"] == "models" and "unknown models gpt-5" in unknown.text


async def test_a_key_over_its_token_limit_waits_for_its_answers_tokens(router: Router) -> None:
    """The prompt's tokens are taken before the call, the answer's when it settles."""
    made = await router.admin("POST", "/v1/admin/keys", json={"team": "t", "name": "tok", "tpm": 100})
    assert made.json()["tpm"] == 100
    key = made.json()["key"]
    router.ledger.rates.clock = lambda: 1000.0  # no refill during the test: exact counts
    answers = []
    for _ in range(10):
        answers.append(await router.chat(key, model="gpt-4o-mini", max_tokens=20))
        await router.accountant.flush()  # settled: the answer's tokens are charged
    first = answers[0]
    assert first.status_code == 200, first.text
    assert first.headers["x-ratelimit-limit-tokens"] == "100"
    assert "x-ratelimit-limit-requests" not in first.headers  # no rpm on this key
    prompt = 100 - int(first.headers["x-ratelimit-remaining-tokens"])  # the router's upper estimate
    outputs = [r.json()["usage"]["completion_tokens"] for r in answers if r.status_code == 200]
    admitted = len(outputs)
    assert [r.status_code for r in answers] == [200] * admitted + [429] * (10 - admitted)
    # each admitted request spent its prompt and, once settled, its answer: the next needs a prompt's room
    assert sum(outputs[:-1]) + prompt * admitted <= 100 < sum(outputs) + prompt * (admitted + 1)
    assert admitted < 100 // prompt  # counting prompts alone would have admitted more
    refused = answers[admitted]
    _error(refused, 429, "rate_limit_exceeded")
    assert "100 tokens per minute" in refused.text and int(refused.headers["retry-after"]) >= 1
    assert router.metrics.total("fusion_rate_limited_total", team="t", limit="tokens") == 10 - admitted
    huge = await router.chat(key, messages=[{"role": "user", "content": "word " * 400}])
    _error(huge, 429, "rate_limit_exceeded")
    assert "Request too large" in huge.text and "retry-after" not in huge.headers
    patched = await router.admin(
        "PATCH", f"/v1/admin/keys/{made.json()['key_id']}", json={"tpm": None, "rpm": 5}
    )
    assert patched.json()["tpm"] is None and patched.json()["rpm"] == 5
    lifted = await router.chat(key, model="gpt-4o-mini")
    assert lifted.status_code == 200 and "x-ratelimit-limit-tokens" not in lifted.headers


async def test_a_cost_seeking_route_takes_the_keys_cheapest_model_when_its_row_has_none(
    router: Router,
) -> None:
    spec = {"team": "t", "name": "pair", "models": ["claude-opus-4-5", "gpt-4o-mini"]}
    key = (await router.admin("POST", "/v1/admin/keys", json=spec)).json()["key"]
    prompt = [{"role": "user", "content": "Compare the GDP growth of France and Germany since 2000."}]
    r = await router.chat(key, model="auto:cost", messages=prompt)
    assert r.headers["x-fusion-task-type"] == "analysis"  # its row: gpt-4.1, claude-sonnet-4-5, gemini
    assert r.json()["fusion"]["candidates"] == ["gpt-4o-mini", "claude-opus-4-5"]
    assert r.headers["x-fusion-model"] == "gpt-4o-mini"


async def test_admin_rotates_a_key_and_the_old_one_works_through_its_grace(router: Router) -> None:
    made = (await router.admin("POST", "/v1/admin/keys", json={"team": "t", "name": "app", "rpm": 50})).json()
    rotated = await router.admin("POST", f"/v1/admin/keys/{made['key_id']}/rotate", json={"grace_s": 600})
    assert rotated.status_code == 200, rotated.text
    body = rotated.json()
    assert body["key_id"] == made["key_id"] and body["key"] != made["key"] and body["rpm"] == 50
    assert body["previous_key_until"] == pytest.approx(time.time() + 600, abs=5)
    for key in (body["key"], made["key"]):  # the new one, and the old one within its grace
        r = await router.chat(key, model="gpt-4o-mini")
        assert r.status_code == 200 and r.headers["x-ratelimit-limit-requests"] == "50"
    assert r.headers["x-ratelimit-remaining-requests"] == "48"  # one bucket: the same key
    own = await router.client.get("/v1/router/key", headers={"authorization": f"Bearer {body['key']}"})
    assert own.json()["previous_key_until"] == body["previous_key_until"] and "retired_at" not in own.json()
    now_rotated = await router.admin("POST", f"/v1/admin/keys/{made['key_id']}/rotate", json={})
    newest = now_rotated.json()["key"]
    assert now_rotated.json()["previous_key_until"] == body["previous_key_until"]  # the first grace runs on
    refused = await router.chat(body["key"], model="gpt-4o-mini")  # no grace: stopped at once
    _error(refused, 401, "invalid_api_key")
    assert "rotated" in refused.json()["error"]["message"]
    assert (await router.chat(newest, model="gpt-4o-mini")).status_code == 200
    missing = await router.admin("POST", "/v1/admin/keys/nope/rotate", json={})
    assert missing.status_code == 404
    bad = await router.admin("POST", f"/v1/admin/keys/{made['key_id']}/rotate", json={"grace_s": -1})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "grace_s"
    await router.admin("DELETE", f"/v1/admin/keys/{made['key_id']}")
    revoked = await router.admin("POST", f"/v1/admin/keys/{made['key_id']}/rotate", json={})
    assert revoked.status_code == 400 and "revoked" in revoked.json()["error"]["message"]


async def test_an_alias_is_allowed_by_the_model_it_names(
    emu: EmulatorServer, config: FusionConfig, tmp_path: Path
) -> None:
    routing = config.routing.model_copy(update={"aliases": {"gpt-4": "gpt-4.1", "mini": "gpt-4o-mini"}})
    cfg = emulated_config(config, emu.url).model_copy(update={"routing": routing})
    async for router in _router(cfg, tmp_path):
        spec = {"team": "t", "name": "mini", "models": ["gpt-4o-mini"]}
        key = (await router.admin("POST", "/v1/admin/keys", json=spec)).json()["key"]
        assert (await router.chat(key, model="mini")).json()["model"] == "gpt-4o-mini"
        _error(await router.chat(key, model="gpt-4"), 403, "model_not_allowed")
        listed = (await router.client.get("/v1/models", headers={"x-api-key": key})).json()["data"]
        assert {m["id"] for m in listed if m["owned_by"] != "fusion-router"} == {"gpt-4o-mini", "mini"}


async def test_a_request_for_a_model_the_key_may_not_use_spends_none_of_its_limit(router: Router) -> None:
    spec = {"team": "t", "name": "one", "models": ["gpt-4o-mini"], "rpm": 1}
    key = (await router.admin("POST", "/v1/admin/keys", json=spec)).json()["key"]
    for _ in range(3):
        _error(await router.chat(key, model="gpt-4.1"), 403, "model_not_allowed")
    assert (await router.chat(key, model="gpt-4o-mini")).status_code == 200  # its one request is left
    _error(await router.chat(key, model="gpt-4o-mini"), 429, "rate_limit_exceeded")


async def test_every_ingress_replica_counts_against_one_limit(
    emu: EmulatorServer, config: FusionConfig, tmp_path: Path
) -> None:
    """Two accountants (two ingress replicas) on one ledger share the key's bucket."""
    cfg = emulated_config(config, emu.url)
    ledger = Ledger(tmp_path / "l.db")
    _, record = ledger.keys.create("t", "n", rpm=4)
    replicas = [Accountant(cfg, LocalLedgerClient(ledger)) for _ in range(2)]
    chat = parse_request({"model": "auto", "messages": USER})
    taken = [await replicas[i % 2].limit(record, chat, f"r{i}") for i in range(4)]
    assert [d.remaining for [d] in taken] == [3, 2, 1, 0]
    for replica in replicas:
        with pytest.raises(RateLimitError):
            await replica.limit(record, chat, "late")
    ledger.close()


async def test_a_silent_ledger_lets_limited_keys_through(
    emu: EmulatorServer, config: FusionConfig, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A rate limit guards capacity: when the ledger cannot answer, the request goes on, logged."""

    class Silent(LocalLedgerClient):
        async def take(self, *args: object, **kwargs: object) -> list[RateDecision]:
            await asyncio.sleep(10)
            raise AssertionError("unreachable")

    cfg = emulated_config(config, emu.url)
    cfg = cfg.model_copy(update={"budgets": cfg.budgets.model_copy(update={"reserve_timeout_s": 0.05})})
    ledger = Ledger(tmp_path / "l.db")
    _, record = ledger.keys.create("t", "n", rpm=1)
    accountant = Accountant(cfg, Silent(ledger))
    assert await accountant.limit(record, parse_request({"model": "auto", "messages": USER}), "r") == []
    assert "rate limit check failed 1 times (TimeoutError)" in caplog.text
    ledger.close()


async def test_exhausted_budget_is_429_insufficient_quota(
    emu: EmulatorServer, config: FusionConfig, tmp_path: Path
) -> None:
    cfg = _budgeted(config, emu, usd=0.005)
    async for router in _router(cfg, tmp_path):
        statuses = [(await router.chat(model="gpt-4.1", max_tokens=200)).status_code for _ in range(40)]
        assert 200 in statuses and 429 in statuses
        refused = await router.chat(model="gpt-4.1", max_tokens=200)
        _error(refused, 429, "insufficient_quota")
        assert refused.json()["error"]["type"] == "insufficient_quota"
        assert "global" in refused.json()["error"]["message"] and int(refused.headers["retry-after"]) > 0
        await router.accountant.flush()
        assert router.ledger.settled_total() <= 0.005
        assert router.metrics.total("fusion_errors_total", kind="request_insufficient_quota") >= 1


async def test_a_keys_budget_can_be_raised_and_removed(router: Router) -> None:
    spec = {"team": "t", "name": "n", "budget_usd": 0.0, "period": "day"}
    made = (await router.admin("POST", "/v1/admin/keys", json=spec)).json()
    _error(await router.chat(made["key"], model="gpt-4o-mini"), 429, "insufficient_quota")
    path = f"/v1/admin/keys/{made['key_id']}"
    raised = await router.admin("PATCH", path, json={"budget_usd": 5.0, "period": "month"})
    assert raised.status_code == 200 and raised.json()["budget_usd"] == 5.0, raised.text
    answered = await router.chat(made["key"], model="gpt-4o-mini")
    assert answered.status_code == 200 and answered.json()["fusion"]["reserved_usd"] > 0  # held against it
    for half in ({"budget_usd": 9.0}, {"period": "day"}, {"budget_usd": 9.0, "period": None}):
        _error(await router.admin("PATCH", path, json=half), 400, None)
    removed = await router.admin("PATCH", path, json={"budget_usd": None, "period": None})
    assert removed.json()["budget_usd"] is None and removed.json()["period"] is None
    assert (await router.chat(made["key"], model="gpt-4o-mini")).json()["fusion"]["reserved_usd"] is None


async def test_concurrent_requests_cannot_overspend(
    emu: EmulatorServer, config: FusionConfig, tmp_path: Path
) -> None:
    """Fifty requests at once against a budget for about five: spend stays within the budget."""
    async with httpx.AsyncClient() as admin:  # calls overlap
        await admin.put(f"{emu.url}/admin/latency_scale", json={"scale": 0.05})
    cfg = _budgeted(config, emu, usd=0.01)
    async for router in _router(cfg, tmp_path):
        responses = await asyncio.gather(*[router.chat(model="gpt-4.1", max_tokens=100) for _ in range(50)])
        ok = [r for r in responses if r.status_code == 200]
        assert ok and len(ok) < 50
        reservations = [r.json()["fusion"]["reserved_usd"] for r in ok]
        charged = sum(r.json()["fusion"]["cost_usd"] for r in ok)
        assert all(res is not None and res > 0 for res in reservations)
        await router.accountant.flush()
        spent = router.ledger.settled_total()
        assert spent == pytest.approx(charged)  # what clients were told is what the ledger holds
        assert spent <= 0.01 + max(reservations)


async def test_a_request_under_a_budget_gets_an_output_limit(
    emu: EmulatorServer, config: FusionConfig, tmp_path: Path
) -> None:
    cfg = _budgeted(config, emu, usd=100.0, max_output_tokens=3)
    async for router in _router(cfg, tmp_path):
        r = await router.chat(model="gpt-4.1")
        assert r.json()["usage"]["completion_tokens"] == 3  # cut by the reserved limit
        assert r.json()["choices"][0]["finish_reason"] == "length"


async def test_budget_pressure_routes_auto_to_cost_sensitive(
    emu: EmulatorServer, config: FusionConfig, tmp_path: Path
) -> None:
    cfg = _budgeted(config, emu, usd=1.0)
    complex_prompt = [{"role": "user", "content": "Write a Python function that merges two sorted lists."}]
    async for router in _router(cfg, tmp_path):
        first = (await router.chat(messages=complex_prompt)).json()["fusion"]
        assert first["slot"] == "primary" and not first["budget_pressure"]
        router.ledger.reserve("big", 0.85, None, None, 600)  # 85% of the day's budget held
        await router.accountant.refresh()
        later = (await router.chat(messages=complex_prompt)).json()["fusion"]
        assert later["budget_pressure"] and later["slot"] == "cost_sensitive"
        await router.accountant.flush()  # release the holds: only the big one stays
        quality = (await router.chat(model="auto:quality", messages=complex_prompt)).json()["fusion"]
        assert quality["slot"] == "primary"  # an explicit policy is honoured


async def test_stats_and_feedback(router: Router) -> None:
    ids = []
    for _ in range(3):
        r = await router.chat(model="gpt-4o-mini")
        ids.append(r.json()["id"])
    stream = await router.chat(model="gpt-4o-mini", stream=True)
    assert stream.status_code == 200
    for rid, score in zip(ids, (1.0, 0.5, 0.0), strict=True):
        fb = await router.client.post("/v1/router/feedback", json={"request_id": rid, "score": score})
        assert fb.status_code == 200 and fb.json()["model"] == "gpt-4o-mini", fb.text
    _error(
        await router.client.post("/v1/router/feedback", json={"request_id": "nope", "score": 1.0}),
        404,
        "not_found",
    )
    _error(
        await router.client.post("/v1/router/feedback", json={"request_id": ids[0], "score": 2}), 400, None
    )
    stats = (await router.client.get("/v1/router/stats")).json()
    row = stats["models"]["gpt-4o-mini"]
    assert row["requests"] == 4 and row["cost_per_request_usd"] > 0
    assert row["quality"] == pytest.approx(0.5) and row["feedback"] == 3


async def test_metrics_are_recorded_per_request(router: Router) -> None:
    await router.chat(model="gpt-4o-mini")
    await router.chat(model="gpt-4o-mini", stream=True)
    await router.chat(model="no-such-model")
    m = router.metrics
    assert m.total("fusion_requests_total", model="gpt-4o-mini", status="ok") == 2
    assert m.total("fusion_input_tokens_total", model="gpt-4o-mini") > 0
    assert m.total("fusion_output_tokens_total", model="gpt-4o-mini") > 0
    assert m.total("fusion_cost_usd_total", model="gpt-4o-mini") > 0
    assert m.total("fusion_routing_decisions_total", model="gpt-4o-mini", slot="requested") == 2
    assert m.total("fusion_errors_total", kind="request_model_not_found") == 1
    assert len(m.observations["fusion_request_latency_seconds"]) == 2
    assert len(m.observations["fusion_time_to_first_token_seconds"]) == 1


async def test_provider_keys_never_reach_responses_logs_or_metrics(
    emu: EmulatorServer,
    config: FusionConfig,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A live key (here pointed at the emulator) is sent to the provider and nowhere else."""
    secret = "sk-live-SENTINEL-0123456789abcdef"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    cfg = emulated_config(config, emu.url)
    openai = cfg.providers["openai"].model_copy(update={"base_url": f"{emu.url}/openai/v1"})
    cfg = cfg.model_copy(update={"providers": {**cfg.providers, "openai": openai}})
    assert cfg.providers["openai"].mode({"OPENAI_API_KEY": secret}) == "live"
    caplog.set_level(logging.DEBUG)
    async for router in _router(cfg, tmp_path):
        texts = []
        for body in ({"model": "gpt-4.1"}, {"model": "gpt-4.1", "stream": True}, {"model": "nope"}):
            r = await router.chat(**body)
            texts.append(r.text + str(r.headers))
        texts.append((await router.client.get("/v1/router/stats")).text)
        texts.append((await router.client.get("/healthz")).text)
        tags = " ".join(str(k) for k in router.metrics.counters) + str(dict(router.metrics.observations))
        assert all(secret not in t for t in texts)
        assert secret not in tags and secret not in caplog.text


async def test_live_latency_statistics_demote_slow_models(router: Router) -> None:
    """The routing policy reads p95 latency from the board's statistics (the same as /v1/router/stats)."""
    gateway = router.client._transport.app.state.gateway  # type: ignore[attr-defined]
    gateway.stats = {"claude-sonnet-4-5": {"latency_p95_ms": 4000.0}, "gpt-4.1": {"latency_p95_ms": 300.0}}
    prompt = [{"role": "user", "content": "Write a Python function that merges two sorted lists."}]
    fast = (await router.chat(messages=prompt, fusion={"max_latency_ms": 1000})).json()["fusion"]
    assert fast["model"] != "claude-sonnet-4-5" and fast["candidates"][-1] == "claude-sonnet-4-5"
    usual = (await router.chat(messages=prompt)).json()["fusion"]
    assert usual["model"] == "claude-sonnet-4-5"  # no limit configured or asked for


async def test_feedback_on_auto_routed_answers_tunes_the_quality_target(
    emu: EmulatorServer, config: FusionConfig, tmp_path: Path
) -> None:
    cfg = emulated_config(config, emu.url)
    routing = cfg.routing.model_copy(update={"quality_target": {t: 0.6 for t in cfg.routing.table}})
    cfg = cfg.model_copy(update={"routing": routing})
    ledger = Ledger(tmp_path / "ledger.db", quality_targets=cfg.tuned_targets())
    ledger.tuning.tuners["coding"].min_observations = 1
    accountant = Accountant(cfg, LocalLedgerClient(ledger))
    await accountant.refresh()
    app = create_api(cfg, inprocess_gateway(cfg), {}, accountant=accountant)
    prompt = [{"role": "user", "content": "Write a Python function that merges two sorted lists."}]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://router") as client:
        answer = (
            await client.post("/v1/chat/completions", json={"model": "auto", "messages": prompt})
        ).json()
        fusion = answer["fusion"]
        assert fusion["quality_target"] == 0.6 and set(fusion["predicted_quality"]) >= set(
            fusion["candidates"][:3]
        )
        knob = (
            await client.post("/v1/chat/completions", json={"model": "auto:0.99", "messages": prompt})
        ).json()
        assert knob["fusion"]["quality_target"] == 0.99 and knob["fusion"]["policy"] == "auto:0.99"
        await accountant.flush()
        before = ledger.tuning.required()["coding"]
        r = await client.post("/v1/router/feedback", json={"request_id": answer["id"], "score": 1.0})
        assert r.status_code == 200
        await accountant.refresh()
    assert ledger.tuning.required()["coding"] < before
    assert accountant.required_quality["coding"] == ledger.tuning.required()["coding"]
    ledger.close()


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/v1/router/feedback", b"{not json", 400),
        ("POST", "/v1/router/feedback", b"[]", 400),
        ("POST", "/v1/router/feedback", b'{"request_id": "x"}', 400),
        ("POST", "/v1/router/feedback", b'{"request_id": "x", "score": "high"}', 400),
        ("POST", "/v1/router/feedback", b'{"request_id": "x", "score": 0.5, "extra": 1}', 400),
        ("POST", "/v1/admin/keys", b"", 400),
        ("POST", "/v1/admin/keys", b'{"team": "", "name": "n"}', 400),
        ("POST", "/v1/admin/keys", b'{"team": "t", "name": "n", "period": "week", "budget_usd": 1}', 400),
        ("POST", "/v1/admin/keys", b'{"team": "t", "name": "n", "budget_usd": -1, "period": "day"}', 400),
        ("POST", "/v1/admin/keys", b'{"team": "t", "name": "n", "rpm": 0}', 400),
        ("POST", "/v1/admin/keys", b'{"team": "t", "name": "n", "rpm": 1.5}', 400),
        ("PATCH", "/v1/admin/keys/abc", b"{}", 400),
        ("PATCH", "/v1/admin/keys/abc", b'{"rpm": -3}', 400),
        ("PATCH", "/v1/admin/keys/abc", b'{"tpm": 0}', 400),
        ("POST", "/v1/admin/keys", b'{"team": "t", "name": "n", "tpm": "lots"}', 400),
        ("PATCH", "/v1/admin/keys/abc", b'{"rpm": 5}', 404),
        ("PATCH", "/v1/admin/keys/abc", b'{"models": []}', 400),
        ("PATCH", "/v1/admin/keys/abc", b'{"models": "gpt-4.1"}', 400),
        ("PATCH", "/v1/admin/keys/abc", b'{"models": ["nope"]}', 400),
        ("GET", "/v1/router/feedback", b"", 405),
        ("PUT", "/v1/admin/keys", b"{}", 405),
    ],
)
async def test_bad_input_to_router_endpoints_is_an_envelope(
    router: Router, method: str, path: str, body: bytes, status: int
) -> None:
    headers = {"authorization": f"Bearer {ADMIN}", "content-type": "application/json"}
    r = await router.client.request(method, path, content=body, headers=headers)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["message"] and error["type"]
