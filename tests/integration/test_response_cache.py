"""The ResponseCache actor on the real local Ray: the ingress's client of it (lookups and stores
cross Ray, answers and keys as they travel), a kill -9 that loses no answer, and its admin calls."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import time
from pathlib import Path

import httpx

from serve_app.caching import Cache
from serve_app.emulator import EmulatorServer
from serve_app.ingress import _ActorCache
from serve_app.response_cache import CacheConfig, CacheControl, CachedAnswer
from serve_app.schemas import parse_request
from tests.integration.test_money import _wait_settled

CHAT = parse_request({"model": "auto", "messages": [{"role": "user", "content": "Cache me across Ray"}]})
ANSWER = CachedAnswer(
    request_id="chatcmpl-integration",
    model="gpt-4o-mini",
    provider="openai",
    provider_model="gpt-4o-mini",
    text="An answer kept on the head node.",
    finish_reason="tool_calls",
    usage={"input_tokens": 9, "output_tokens": 7},
    tool_calls=[{"id": "call_1", "name": "get_time", "arguments": '{"zone": "UTC"}'}],
    task_type="simple_queries",
    cost_usd=0.0001,
)


def test_answers_cross_ray_and_survive_the_actor_being_killed(router: str, tmp_path: Path) -> None:
    import ray

    settings = CacheConfig(enabled=True, path=str(tmp_path / "cache.db"), lookup_timeout_s=30)
    client = _ActorCache("cache-integration", settings)
    front = Cache(settings, client)

    async def scenario() -> None:
        await client.configure()
        found = await front.lookup(CHAT, None, CacheControl())
        assert found.status == "miss"
        assert await client.put(found.key, found.scope, ANSWER)
        hit = await front.lookup(CHAT, None, CacheControl())
        assert hit.status == "hit" and hit.answer is not None
        assert (hit.answer.text, hit.answer.tool_calls, hit.answer.usage) == (
            ANSWER.text,
            ANSWER.tool_calls,
            ANSWER.usage,
        )
        assert hit.answer.created_at <= time.time() and hit.answer.hits == 1

        pid = await client.actor.pid.remote()
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while True:  # the lookups that fail while Ray restarts it are misses ("error"), never raise
            again = await front.lookup(CHAT, None, CacheControl())
            if again.status == "hit" or time.monotonic() > deadline:
                break
            assert again.status == "error"
            await asyncio.sleep(0.2)
        assert again.status == "hit" and await client.actor.pid.remote() != pid  # kept in its file
        stats = await client.stats()
        assert stats["entries"] == 1 and stats["hits"] == 1  # counted since the restart
        assert await client.clear(None) == 1
        assert (await front.lookup(CHAT, None, CacheControl())).status == "miss"

    try:
        asyncio.run(scenario())
    finally:
        ray.kill(client.actor)


def test_the_graph_with_the_cache_on_answers_a_repeat_without_a_provider(
    router: str, emu: EmulatorServer, tmp_path: Path
) -> None:
    """Redeploys the graph with ``cache.enabled`` (two ingress replicas, as in these tests): the
    ingress replicas find the actor at start, a repeat is a hit from either replica with no call
    to the provider deployment, and the hit is settled in the ledger under policy ``cache``. Then
    puts the tests' config back (the other tests expect every request to reach a provider)."""
    import ray
    import yaml
    from ray import serve

    from deployments.autoscaling import NAMESPACE
    from deployments.response_cache import cache_name
    from serve_app.app import AppArgs, build_app

    def deploy(path: str) -> None:
        serve.run(build_app(AppArgs(config_path=path, emulator_url=emu.url)), name="fusion", route_prefix="/")

    data = yaml.safe_load(Path(os.environ["FUSION_TEST_CONFIG"]).read_text())
    data["cache"] = {"enabled": True, "path": str(tmp_path / "graph-cache.db")}
    changed = tmp_path / "with_cache.yaml"
    changed.write_text(yaml.safe_dump(data))
    handle = serve.get_deployment_handle("Provider_openai", app_name="fusion")
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Cached through the graph?"}]}
    url = f"{router}/v1/chat/completions"
    try:
        deploy(str(changed))
        first = httpx.post(url, json=body, timeout=30)
        assert first.status_code == 200 and first.headers["x-fusion-cache"] == "miss", first.text
        time.sleep(0.5)  # the store is sent after the answer
        before = handle.call_count.remote().result()
        repeats = [httpx.post(url, json=body, timeout=30) for _ in range(6)]
        assert [r.headers["x-fusion-cache"] for r in repeats] == ["hit"] * 6
        assert all(r.json()["choices"] == first.json()["choices"] for r in repeats)
        assert handle.call_count.remote().result() == before  # no provider was called
        ids = [r.json()["id"] for r in repeats]
        assert all(r.json()["fusion"]["cost_usd"] == 0.0 for r in repeats)
        settled = _wait_settled(list(ids))
        assert [settled.get(i) for i in ids] == [0.0] * len(ids)
        db = sqlite3.connect(os.environ["FUSION_TEST_LEDGER"])
        try:
            marks = ",".join("?" * len(ids))
            query = f"SELECT DISTINCT provider, policy FROM spend WHERE request_id IN ({marks})"
            rows = db.execute(query, ids).fetchall()
        finally:
            db.close()
        assert rows == [("cache", "cache")]
    finally:
        deploy(os.environ["FUSION_TEST_CONFIG"])
        ray.kill(ray.get_actor(cache_name("fusion"), namespace=NAMESPACE))
