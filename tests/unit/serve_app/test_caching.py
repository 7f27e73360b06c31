"""The response cache through the HTTP API (in process, the emulator behind the official SDKs)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from serve_app.accounting import Accountant, LocalLedgerClient
from serve_app.api import create_api
from serve_app.caching import Cache, CacheClient, LocalCacheClient
from serve_app.config import FusionConfig
from serve_app.emulator import EmulatorServer
from serve_app.ledger import Ledger
from serve_app.metrics import MemoryBackend, Metrics
from serve_app.response_cache import CacheConfig, CachedAnswer, ResponseCache
from tests.conftest import set_fault
from tests.unit.serve_app.inprocess import emulated_config, inprocess_gateway
from tests.unit.serve_app.test_accounting import ADMIN, USER, _error
from tests.unit.serve_app.test_failover import CODING, PRIMARY
from tests.unit.serve_app.test_tools import ASK, TIME, WEATHER, _chat


@dataclass
class Router:
    client: httpx.AsyncClient
    cache: Cache
    accountant: Accountant
    ledger: Ledger
    metrics: MemoryBackend
    emulator: str

    async def chat(
        self, key: str | None = None, headers: dict[str, str] | None = None, **body: Any
    ) -> httpx.Response:
        sent = {"authorization": f"Bearer {key}"} if key else {}
        payload = {"model": "gpt-4o-mini", "messages": USER, **body}
        r = await self.client.post("/v1/chat/completions", json=payload, headers={**sent, **(headers or {})})
        await self.cache.drain()  # the answer is stored off the request path
        return r

    async def admin(self, method: str, path: str, json: object = None) -> httpx.Response:
        headers = {"authorization": f"Bearer {ADMIN}"}
        return await self.client.request(method, path, headers=headers, json=json)

    async def key(self, team: str, **limits: object) -> str:
        made = await self.admin("POST", "/v1/admin/keys", json={"team": team, "name": f"k{team}", **limits})
        assert made.status_code == 201, made.text
        return str(made.json()["key"])

    async def provider_calls(self) -> int:
        async with httpx.AsyncClient() as direct:
            seen = (await direct.get(f"{self.emulator}/admin/stats")).json()["requests"]
        return sum(seen.values())


async def _router(
    config: FusionConfig, emu: EmulatorServer, tmp_path: Path, client: CacheClient | None = None, **cache: Any
) -> AsyncIterator[Router]:
    settings = CacheConfig.model_validate({"enabled": True, "path": str(tmp_path / "cache.db"), **cache})
    cfg = emulated_config(config, emu.url).model_copy(update={"cache": settings})
    ledger = Ledger(tmp_path / "ledger.db")
    accountant = Accountant(cfg, LocalLedgerClient(ledger), environ={"FUSION_ADMIN_KEY": ADMIN})
    await accountant.refresh()
    backend = MemoryBackend()
    front = Cache(settings, client or LocalCacheClient(ResponseCache(settings)), cfg.models)
    app = create_api(
        cfg, inprocess_gateway(cfg), {}, accountant=accountant, metrics=Metrics(backend), cache=front
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://router") as http:
        yield Router(http, front, accountant, ledger, backend, emu.url)
    ledger.close()


@pytest.fixture
async def router(emu: EmulatorServer, config: FusionConfig, tmp_path: Path) -> AsyncIterator[Router]:
    async for r in _router(config, emu, tmp_path):
        yield r


def _spend(ledger: Ledger) -> list[tuple[Any, ...]]:
    return ledger.db.execute(
        "SELECT request_id, model, provider, policy, cost_usd, input_tokens FROM spend ORDER BY settled_at"
    ).fetchall()


async def test_a_repeated_request_is_answered_from_the_cache_at_no_cost(router: Router) -> None:
    first = await router.chat()
    assert first.status_code == 200 and first.headers["x-fusion-cache"] == "miss"
    assert first.json()["fusion"]["cache"] == {"status": "miss"} and "age" not in first.headers
    calls = await router.provider_calls()
    again = await router.chat(temperature=None, user="someone-else")  # the same question
    assert again.status_code == 200, again.text
    body, fusion = again.json(), again.json()["fusion"]
    assert again.headers["x-fusion-cache"] == "hit" and int(again.headers["age"]) >= 0
    assert await router.provider_calls() == calls  # no provider was called
    assert body["choices"] == first.json()["choices"] and body["usage"] == first.json()["usage"]
    assert body["id"] != first.json()["id"] and body["model"] == "gpt-4o-mini"
    assert fusion["cost_usd"] == 0.0 and fusion["policy"] == "cache" and fusion["provider"] == "cache"
    assert fusion["cache"]["request_id"] == first.json()["id"] and fusion["cache"]["provider"] == "openai"
    assert fusion["cache"]["cost_usd"] == first.json()["fusion"]["cost_usd"] > 0
    assert again.headers["x-fusion-model"] == "gpt-4o-mini" and again.headers["x-fusion-provider"] == "cache"
    await router.accountant.flush()  # a hit is in the ledger: a request at no cost
    assert [row[1:] for row in _spend(router.ledger)] == [
        (
            "gpt-4o-mini",
            "openai",
            "direct",
            first.json()["fusion"]["cost_usd"],
            body["usage"]["prompt_tokens"],
        ),
        ("gpt-4o-mini", "cache", "cache", 0.0, 0),
    ]
    economics = router.ledger.economics(300)["gpt-4o-mini"]  # /v1/router/stats: the model's own calls
    assert (
        economics["requests"] == 1 and economics["cost_per_request_usd"] == first.json()["fusion"]["cost_usd"]
    )
    m = router.metrics
    assert m.total("fusion_cache_lookups_total", result="hit") == 1
    assert m.total("fusion_cache_lookups_total", result="miss") == 1
    assert m.total("fusion_requests_total", policy="cache", provider="cache", status="ok") == 1
    assert m.total("fusion_routing_decisions_total") == 1  # the first request's; a hit routes nothing
    saved = first.json()["fusion"]["cost_usd"]  # what the hit did not spend again
    assert m.total("fusion_cache_saved_usd_total", model="gpt-4o-mini", team="none") == pytest.approx(saved)
    assert (await router.cache.client.stats())["saved_usd"] == pytest.approx(saved)
    assert m.total("fusion_cost_usd_total", provider="cache") == 0


async def test_a_routed_hit_calls_no_classifier_and_keeps_the_task_type(router: Router) -> None:
    first = (await router.chat(model="auto")).json()["fusion"]
    hit = (await router.chat(model="auto")).json()["fusion"]
    assert hit["cache"]["status"] == "hit" and "classify_ms" not in hit["timings_ms"]
    assert hit["task_type"] == first["task_type"] and hit["model"] == first["model"]
    other = (await router.chat(model="auto:cost")).json()["fusion"]  # another policy: another entry
    assert other["cache"]["status"] == "miss"


async def test_a_stream_is_stored_and_replayed_and_shares_its_entry_with_json(router: Router) -> None:
    streamed = await router.chat(stream=True, stream_options={"include_usage": True})
    assert streamed.headers["x-fusion-cache"] == "miss"
    calls = await router.provider_calls()
    as_json = await router.chat()
    assert as_json.headers["x-fusion-cache"] == "hit"
    replay = await router.chat(stream=True, stream_options={"include_usage": True})
    assert replay.headers["x-fusion-cache"] == "hit" and "age" in replay.headers
    assert await router.provider_calls() == calls

    def events(r: httpx.Response) -> list[dict[str, Any]]:
        return [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]

    def text(r: httpx.Response) -> str:
        return "".join(c["choices"][0]["delta"].get("content") or "" for c in events(r) if c["choices"])

    assert text(replay) == text(streamed) == as_json.json()["choices"][0]["message"]["content"]
    assert replay.text.rstrip().endswith("data: [DONE]")
    usage = [c["usage"] for c in events(replay) if "usage" in c]
    assert usage == [c["usage"] for c in events(streamed) if "usage" in c] == [as_json.json()["usage"]]
    final = [c for c in events(replay) if c["choices"] and c["choices"][0]["finish_reason"]]
    assert final[0]["choices"][0]["finish_reason"] == "stop" and final[0]["fusion"]["cost_usd"] == 0.0


@pytest.mark.parametrize("first_stream", [False, True], ids=["json", "sse"])
async def test_tool_calls_are_given_back_whole(router: Router, first_stream: bool) -> None:
    body = {"model": "claude-sonnet-4-5", "messages": ASK, "tools": [WEATHER, TIME]}
    first = await _chat(router.client, stream=first_stream, **body)
    await router.cache.drain()
    calls = await router.provider_calls()
    for stream in (False, True):
        again = await _chat(router.client, stream=stream, **body)
        message = again["choices"][0]["message"]
        assert [c["function"] for c in message["tool_calls"]] == [
            c["function"] for c in first["choices"][0]["message"]["tool_calls"]
        ]
        assert [c["id"] for c in message["tool_calls"]] == [
            c["id"] for c in first["choices"][0]["message"]["tool_calls"]
        ]
        assert again["choices"][0]["finish_reason"] == "tool_calls"
    assert await router.provider_calls() == calls


async def test_cache_control_no_cache_no_store_and_max_age(router: Router) -> None:
    first = await router.chat()
    calls = await router.provider_calls()
    fresh = await router.chat(headers={"cache-control": "no-cache"})
    assert fresh.headers["x-fusion-cache"] == "bypass" and await router.provider_calls() == calls + 1
    hit = await router.chat()  # no-cache stored its fresh answer over the first one
    assert hit.json()["fusion"]["cache"]["request_id"] == fresh.json()["id"] != first.json()["id"]
    assert (await router.chat(headers={"cache-control": "max-age=3600"})).headers["x-fusion-cache"] == "hit"
    await asyncio.sleep(1.1)
    assert (await router.chat(headers={"cache-control": "max-age=1"})).headers["x-fusion-cache"] == "miss"
    unseen = [{"role": "user", "content": "Something never asked before?"}]
    kept_out = await router.chat(messages=unseen, headers={"cache-control": "no-store"})
    assert kept_out.headers["x-fusion-cache"] == "bypass"
    assert (await router.chat(messages=unseen)).headers["x-fusion-cache"] == "miss"  # nothing was stored


async def test_failed_requests_and_broken_streams_are_not_stored(router: Router, emu: EmulatorServer) -> None:
    set_fault(emu, "gpt-4o-mini", kind="http_error", status=500)
    assert (await router.chat()).status_code == 502
    set_fault(emu, "gpt-4o-mini", kind="cut", after_tokens=2)
    broken = await router.chat(stream=True, fusion={"allow_continuation": False})
    assert broken.status_code == 200 and '"error"' in broken.text  # the stream ended with an error event
    async with httpx.AsyncClient() as direct:
        await direct.delete(f"{emu.url}/admin/faults")
    answered = await router.chat()
    assert answered.status_code == 200 and answered.headers["x-fusion-cache"] == "miss"
    assert (await router.cache.client.stats())["stored"] == 1


async def test_a_stream_continued_on_another_model_is_not_stored(router: Router, emu: EmulatorServer) -> None:
    set_fault(emu, PRIMARY, kind="cut", after_tokens=3, times=1)
    coding = [{"role": "user", "content": CODING}]
    continued = await router.chat(model="auto", stream=True, messages=coding)
    final = [json.loads(line[6:]) for line in continued.text.splitlines() if '"fusion"' in line][-1]
    assert [c["from_model"] for c in final["fusion"]["continuations"]] == [PRIMARY]
    assert (await router.cache.client.stats())["stored"] == 0  # two models wrote it
    assert (await router.chat(model="auto", messages=coding)).headers["x-fusion-cache"] == "miss"


async def test_a_key_whose_budget_is_spent_still_gets_hits(router: Router) -> None:
    key = await router.key("red", budget_usd=1.0, period="day")
    assert (await router.chat(key)).headers["x-fusion-cache"] == "miss"
    key_id = (await router.client.get("/v1/router/key", headers={"authorization": f"Bearer {key}"})).json()
    changed = await router.admin(
        "PATCH", f"/v1/admin/keys/{key_id['key_id']}", json={"budget_usd": 0.0, "period": "day"}
    )
    assert changed.status_code == 200, changed.text
    await router.accountant.refresh()
    hit = await router.chat(key)
    assert hit.status_code == 200 and hit.headers["x-fusion-cache"] == "hit"  # it costs nothing
    _error(await router.chat(key, messages=ASK), 429, "insufficient_quota")  # a new question is refused


async def test_an_answer_by_a_model_no_longer_configured_is_not_given_again(router: Router) -> None:
    first = await router.chat()
    assert first.headers["x-fusion-cache"] == "miss"
    router.cache.models = frozenset({"gpt-4.1"})  # the configuration as redeployed without gpt-4o-mini
    assert (await router.chat()).headers["x-fusion-cache"] == "miss"


async def test_answers_are_kept_per_key_by_default(router: Router) -> None:
    red, blue = await router.key("red"), await router.key("blue")
    assert (await router.chat(red)).headers["x-fusion-cache"] == "miss"
    assert (await router.chat(red)).headers["x-fusion-cache"] == "hit"
    assert (await router.chat(blue)).headers["x-fusion-cache"] == "miss"  # another key: its own


async def test_team_scope_shares_within_a_team_but_not_a_model_a_key_may_not_use(
    emu: EmulatorServer, config: FusionConfig, tmp_path: Path
) -> None:
    async for router in _router(config, emu, tmp_path, scope="team"):
        one, two, other = await router.key("red"), await router.key("red"), await router.key("blue")
        narrow = await router.key("red", models=["claude-haiku-4-5", "gpt-4.1"])
        assert (await router.chat(one, model="auto")).headers["x-fusion-cache"] == "miss"
        served = (await router.chat(two, model="auto")).json()["fusion"]
        assert served["cache"]["status"] == "hit"
        assert (await router.chat(other, model="auto")).headers["x-fusion-cache"] == "miss"
        assert served["model"] not in ("claude-haiku-4-5", "gpt-4.1"), "pick a model the narrow key lacks"
        mine = await router.chat(narrow, model="auto")
        assert mine.headers["x-fusion-cache"] == "miss" and mine.json()["fusion"]["model"] in (
            "claude-haiku-4-5",
            "gpt-4.1",
        )


async def test_a_hit_counts_against_rate_limits_and_gives_its_slot_back(router: Router) -> None:
    key = await router.key("red", rpm=3, max_parallel_requests=1)
    for expected in ("miss", "hit", "hit"):
        r = await router.chat(key)
        assert r.status_code == 200 and r.headers["x-fusion-cache"] == expected
        assert r.headers["x-ratelimit-remaining-parallel-requests"] == "0"
    _error(await router.chat(key), 429, "rate_limit_exceeded")  # the fourth in a minute


class Broken:
    """A cache that fails every call, or answers too late."""

    def __init__(self, delay: float | None = None) -> None:
        self.delay = delay

    async def get(self, key: bytes, max_age_s: float | None) -> CachedAnswer | None:
        if self.delay is None:
            raise ConnectionError("the cache actor is gone")
        await asyncio.sleep(self.delay)
        return None

    async def put(self, key: bytes, scope: str, answer: CachedAnswer) -> bool:
        raise ConnectionError("the cache actor is gone")

    async def stats(self) -> dict[str, Any]:
        return {}

    async def clear(self, scope: str | None) -> int:
        return 0


@pytest.mark.parametrize("delay", [None, 5.0], ids=["failing", "slow"])
async def test_a_cache_that_fails_never_fails_a_request(
    emu: EmulatorServer, config: FusionConfig, tmp_path: Path, delay: float | None
) -> None:
    async for router in _router(config, emu, tmp_path, client=Broken(delay), lookup_timeout_s=0.05):
        for stream in (False, True):
            r = await router.chat(stream=stream)
            assert r.status_code == 200 and r.headers["x-fusion-cache"] == "error"
        assert router.metrics.total("fusion_cache_lookups_total", result="error") == 2


async def test_the_admin_api_reports_and_clears_the_cache(router: Router) -> None:
    red, blue = await router.key("red"), await router.key("blue")
    await router.chat(red)
    await router.chat(red)
    await router.chat(blue)
    assert (await router.client.get("/v1/admin/cache")).status_code == 401
    _error(
        await router.client.get("/v1/admin/cache", headers={"authorization": f"Bearer {red}"}),
        401,
        "invalid_api_key",
    )
    stats = (await router.admin("GET", "/v1/admin/cache")).json()
    assert stats["object"] == "router.cache" and stats["scope"] == "key"
    assert (stats["entries"], stats["hits"], stats["misses"], stats["stored"]) == (2, 1, 2, 2)
    red_id = (await router.client.get("/v1/router/key", headers={"authorization": f"Bearer {red}"})).json()[
        "key_id"
    ]
    _error(await router.admin("DELETE", "/v1/admin/cache?team=red"), 400, None)  # kept per key, not team
    _error(await router.admin("DELETE", "/v1/admin/cache?colour=red"), 400, None)
    _error(await router.admin("DELETE", f"/v1/admin/cache?key_id={red_id}&key_id=x"), 400, None)
    cleared = (await router.admin("DELETE", f"/v1/admin/cache?key_id={red_id}")).json()
    assert cleared == {"object": "router.cache", "deleted": 1, "scope": f"key:{red_id}"}
    assert (await router.chat(red)).headers["x-fusion-cache"] == "miss"
    assert (await router.chat(blue)).headers["x-fusion-cache"] == "hit"
    assert (await router.admin("DELETE", "/v1/admin/cache")).json()["deleted"] == 2


async def test_without_a_cache_there_is_no_cache_header_and_its_admin_routes_are_404(
    emu: EmulatorServer, config: FusionConfig, tmp_path: Path
) -> None:
    cfg = emulated_config(config, emu.url)
    ledger = Ledger(tmp_path / "ledger.db")
    accountant = Accountant(cfg, LocalLedgerClient(ledger), environ={"FUSION_ADMIN_KEY": ADMIN})
    await accountant.refresh()
    app = create_api(cfg, inprocess_gateway(cfg), {}, accountant=accountant)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://router") as http:
        r = await http.post("/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": USER})
        assert (
            r.status_code == 200 and "x-fusion-cache" not in r.headers and "cache" not in r.json()["fusion"]
        )
        admin = {"authorization": f"Bearer {ADMIN}"}
        _error(await http.get("/v1/admin/cache", headers=admin), 404, "not_found")
    ledger.close()
