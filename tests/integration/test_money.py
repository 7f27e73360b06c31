"""Money through the real graph: costs settled by the BudgetLedger deployment, metrics on Ray's
Prometheus endpoint, statistics, and a ledger replica killed with kill -9."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from serve_app.concurrency import Lease, slots
from serve_app.config import load_config
from serve_app.emulator import EmulatorServer
from serve_app.ingress import _ActorLedger
from serve_app.rate_limits import RateDecision, wants
from serve_app.spend_rollup import UsageRangeError
from serve_app.usage import UsageQuery

pytestmark = pytest.mark.integration

BODY = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "Name three rivers."}],
    "max_tokens": 20,
}


def _settled_on_disk() -> dict[str, float]:
    db = sqlite3.connect(os.environ["FUSION_TEST_LEDGER"])
    try:
        return dict(db.execute("SELECT request_id, cost_usd FROM spend").fetchall())
    finally:
        db.close()


def _wait_settled(ids: list[str], timeout: float = 30.0) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while True:
        settled = _settled_on_disk()
        if all(i in settled for i in ids) or time.monotonic() > deadline:
            return settled
        time.sleep(0.2)


def test_costs_reach_the_ledger_and_the_stats(router: str, emu: EmulatorServer) -> None:
    answers = [httpx.post(f"{router}/v1/chat/completions", json=BODY, timeout=30).json() for _ in range(5)]
    ids = [a["id"] for a in answers]
    assert all(a["fusion"]["reserved_usd"] > 0 for a in answers)  # the global budget applies
    settled = _wait_settled(ids)
    for a in answers:
        assert settled[a["id"]] == pytest.approx(a["fusion"]["cost_usd"])
    fb = httpx.post(f"{router}/v1/router/feedback", json={"request_id": ids[0], "score": 0.9}, timeout=10)
    assert fb.status_code == 200 and fb.json()["model"] == "gpt-4o-mini"
    deadline = time.monotonic() + 10
    while True:  # replicas fetch the board's statistics every second
        row = httpx.get(f"{router}/v1/router/stats", timeout=10).json()["models"].get("gpt-4o-mini", {})
        if row.get("latency_p95_ms") is not None or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert row["latency_p95_ms"] > 0 and row["calls"] >= 1 and row["availability"] == 1.0
    assert row["cost_per_request_usd"] > 0 and row["quality"] == pytest.approx(0.9)


def test_rate_limits_count_once_for_every_replica_on_the_ledger_actor(router: str) -> None:
    """The limiter the ingress replicas share is the BudgetLedger actor's: its answers cross Ray."""
    import ray

    from deployments.autoscaling import NAMESPACE
    from deployments.ledger import ledger_name

    ledger = ray.get_actor(ledger_name("fusion"), namespace=NAMESPACE)
    decisions: list[list[RateDecision]] = ray.get(
        [ledger.take.remote(wants("integration-key", 2, None, 0)) for _ in range(3)], timeout=30
    )
    assert sorted(d.allowed for [d] in decisions) == [False, True, True]  # an async actor: any order
    refused = next(d for [d] in decisions if not d.allowed)
    assert refused.headers()["retry-after"] == "30" and refused.remaining == 0

    # parallel-request slots, leased and given back across Ray
    lease = [Lease(f"in-flight-{i}", tuple(slots("integration-key", 1)), 60.0) for i in range(2)]
    first: list[RateDecision] = ray.get(ledger.take.remote([], lease[0]), timeout=30)
    second: list[RateDecision] = ray.get(ledger.take.remote([], lease[1]), timeout=30)
    assert [d.allowed for d in first] == [True] and [d.allowed for d in second] == [False]
    assert ray.get(ledger.release.remote(["in-flight-0"]), timeout=30) == 1
    assert [d.allowed for d in ray.get(ledger.take.remote([], lease[1]), timeout=30)] == [True]
    ray.get(ledger.release.remote(["in-flight-1"]), timeout=30)


def test_usage_reports_come_from_the_ledger_actor(router: str) -> None:
    """The admin usage report crosses Ray like the rest, and the actor reads it on a worker thread
    through its own read-only connection: it agrees with the spend rows on disk."""
    import ray

    from deployments.autoscaling import NAMESPACE
    from deployments.ledger import ledger_name

    start = int(time.time()) - 1
    ids = [httpx.post(f"{router}/v1/chat/completions", json=BODY, timeout=30).json()["id"] for _ in range(3)]
    _wait_settled(ids)
    ledger = ray.get_actor(ledger_name("fusion"), namespace=NAMESPACE)
    query = UsageQuery(start_time=start, bucket_width="1h", group_by=("model",))
    ref: Any = ledger.usage.remote(query)
    page: dict[str, Any] = ray.get(ref, timeout=30)
    rows = [r for b in page["data"] for r in b["results"]]  # one hour's bucket, or two across an hour
    db = sqlite3.connect(os.environ["FUSION_TEST_LEDGER"])
    try:
        n, cost = db.execute(
            "SELECT COUNT(*), SUM(cost_usd) FROM spend WHERE settled_at >= ?", (start,)
        ).fetchone()
    finally:
        db.close()
    assert {r["model"] for r in rows} == {"gpt-4o-mini"}
    assert sum(r["num_model_requests"] for r in rows) == n >= 3
    assert sum(r["cost_usd"] for r in rows) == pytest.approx(cost) and rows[0]["output_tokens"] > 0

    # a range whose rows retention dropped: the refusal crosses Ray as itself, naming the parameter
    db = sqlite3.connect(os.environ["FUSION_TEST_LEDGER"])
    with db:
        db.execute("INSERT OR REPLACE INTO ledger_meta VALUES ('raw_kept_from', 1000.0)")
    try:
        with pytest.raises(UsageRangeError) as refused:
            ray.get(ledger.usage.remote(UsageQuery(start_time=0, bucket_width="1m")), timeout=30)
        assert refused.value.param == "bucket_width" and "retention_days" in str(refused.value)
        # and through the ingress's client of the actor, which retries only when the actor is gone
        client = _ActorLedger("fusion", load_config(None))
        with pytest.raises(UsageRangeError):
            asyncio.run(asyncio.wait_for(client.usage(UsageQuery(start_time=0, bucket_width="1m")), 30))
    finally:
        with db:
            db.execute("DELETE FROM ledger_meta WHERE name = 'raw_kept_from'")
        db.close()


def test_metrics_appear_on_rays_prometheus_endpoint(router: str) -> None:
    httpx.post(f"{router}/v1/chat/completions", json=BODY, timeout=30).raise_for_status()
    url = f"http://127.0.0.1:{os.environ['FUSION_TEST_METRICS_PORT']}/metrics"
    wanted = [
        "ray_fusion_requests_total",
        "ray_fusion_request_latency_seconds_bucket",
        "ray_fusion_input_tokens_total",
        "ray_fusion_output_tokens_total",
        "ray_fusion_cost_usd_total",
        "ray_fusion_routing_decisions_total",
        "ray_fusion_budget_remaining_usd",
    ]
    deadline = time.monotonic() + 60
    missing = wanted
    while missing and time.monotonic() < deadline:
        text = httpx.get(url, timeout=10).text
        missing = [name for name in wanted if name not in text]
        time.sleep(1)
    assert not missing, f"not exported: {missing}"
    lines = [x for x in text.splitlines() if x.startswith("ray_fusion_requests_total{")]
    assert any('model="gpt-4o-mini"' in x and 'status="ok"' in x for x in lines), lines


def test_ledger_killed_mid_run_loses_no_settled_spend(router: str, emu: EmulatorServer) -> None:
    import ray

    from deployments.autoscaling import NAMESPACE
    from deployments.ledger import ledger_name

    ledger = ray.get_actor(ledger_name("fusion"), namespace=NAMESPACE)
    pid = int(ray.get([ledger.pid.remote()], timeout=30)[0])
    httpx.put(f"{emu.url}/admin/latency_scale", json={"scale": 0.5})  # ~0.25 s calls: in flight at the kill

    def one(_: int) -> httpx.Response:
        return httpx.post(f"{router}/v1/chat/completions", json=BODY, timeout=60)

    with ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(one, i) for i in range(48)]
        time.sleep(0.5)
        os.kill(pid, signal.SIGKILL)
        responses = [f.result() for f in futures]
    httpx.put(f"{emu.url}/admin/latency_scale", json={"scale": 0.0})
    ok = [r.json() for r in responses if r.status_code == 200]
    refused = [r.json()["error"]["code"] for r in responses if r.status_code != 200]
    # calls to the ledger in flight at the kill ran again on the restarted actor: none was refused
    # for it (the suite's 1 s provider timeouts may still time a call out on this loaded machine)
    assert "budget_ledger_unavailable" not in refused and len(ok) >= 40, refused
    settled = _wait_settled([a["id"] for a in ok], timeout=60)
    lost = [a["id"] for a in ok if a["id"] not in settled]
    assert not lost
    assert sum(settled[a["id"]] for a in ok) == pytest.approx(sum(a["fusion"]["cost_usd"] for a in ok))
    assert ray.get([ledger.pid.remote()], timeout=60)[0] != pid  # Ray restarted the actor
