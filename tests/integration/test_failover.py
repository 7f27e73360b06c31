"""Failover on the real local Ray: health shared between ingress replicas, a provider replica
killed mid-request, a redeploy that drains, and a broken stream continued over HTTP."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from typing import Any

import httpx
import pytest

from serve_app.emulator import EmulatorServer
from tests.conftest import set_fault

pytestmark = pytest.mark.integration

CODING = "Write a Python function that merges two sorted lists and add unit tests."
PRIMARY, FALLBACK = "claude-sonnet-4-5", "gpt-4.1"


def _ask(router: str, stream: bool = False, timeout: float = 30) -> httpx.Response:
    body = {"model": "auto:quality", "stream": stream, "messages": [{"role": "user", "content": CODING}]}
    return httpx.post(f"{router}/v1/chat/completions", json=body, timeout=timeout)


def _fusion(r: httpx.Response) -> dict[str, Any]:
    if r.headers["content-type"].startswith("text/event-stream"):
        data = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
        chunk: dict[str, Any] = json.loads(data[-2])
        return dict(chunk["fusion"])
    return dict(r.json()["fusion"])


def test_failing_model_leaves_rotation_in_every_ingress_replica(router: str, emu: EmulatorServer) -> None:
    set_fault(emu, PRIMARY, kind="http_error", status=500)
    for _ in range(3):  # failure_threshold outcomes, spread over the replicas as the proxy likes
        assert _ask(router).status_code == 200
    time.sleep(1.0)  # the health goal: out of rotation everywhere within 1 s
    for _ in range(12):
        fusion = _fusion(_ask(router))
        assert PRIMARY in fusion["skipped"], fusion  # not attempted by either replica
        assert fusion["model"] == FALLBACK and fusion["fallbacks"] == []


def _replica_pid(deployment: str) -> int:
    """The process of a live replica, from the GCS actor table (no dashboard in the tests)."""
    from ray._private.state import actors

    pids = [
        int(a["Pid"])
        for a in actors().values()
        if a["ActorClassName"] == f"ServeReplica:fusion:{deployment}" and a["State"] == "ALIVE"
    ]
    assert pids, f"no live replica of {deployment}"
    return pids[0]


def _wait_healthy(deployment: str, timeout_s: float = 60) -> None:
    from ray import serve

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = serve.status().applications["fusion"].deployments[deployment].status
        if str(status).endswith("HEALTHY") and "UN" not in str(status):
            return
        time.sleep(0.5)
    raise AssertionError(f"{deployment} did not come back")


def test_provider_replica_killed_mid_request_is_retried_elsewhere(router: str, emu: EmulatorServer) -> None:
    httpx.put(f"{emu.url}/admin/latency_scale", json={"scale": 1.0})
    httpx.put(f"{emu.url}/admin/profiles/{PRIMARY}", json={"ttft_ms": 4000, "tokens_per_s": 1000})
    httpx.put(f"{emu.url}/admin/profiles/{FALLBACK}", json={"ttft_ms": 5, "tokens_per_s": 5000})
    result: dict[str, httpx.Response] = {}
    thread = threading.Thread(target=lambda: result.setdefault("r", _ask(router)))
    thread.start()
    time.sleep(1.5)  # the request is waiting on the primary's replica
    os.kill(_replica_pid("Provider_anthropic"), signal.SIGKILL)
    thread.join(timeout=30)
    r = result["r"]
    assert r.status_code == 200, r.text
    fusion = _fusion(r)
    assert fusion["model"] == FALLBACK
    assert fusion["fallbacks"][0]["model"] == PRIMARY
    # the dead replica surfaces as a Ray actor error, or as the attempt timeout when Ray notices later
    assert fusion["fallbacks"][0]["error"] in ("connection_error", "timeout")
    _wait_healthy("Provider_anthropic")


def test_redeploy_drains_in_flight_requests(router: str, emu: EmulatorServer, tmp_path: Any) -> None:
    import yaml
    from ray import serve

    from serve_app.app import AppArgs, build_app

    model = "gpt-4o-mini"  # asked for directly: no fallback could hide a cut request
    httpx.put(f"{emu.url}/admin/latency_scale", json={"scale": 1.0})
    # a stream of 40 tokens at 5 tokens/s: in flight for about 8 s, across the redeploy
    httpx.put(f"{emu.url}/admin/profiles/{model}", json={"ttft_ms": 200, "tokens_per_s": 5})
    body = {"model": model, "stream": True, "messages": [{"role": "user", "content": "hello"}]}
    result: dict[str, httpx.Response] = {}

    def ask() -> None:
        result["r"] = httpx.post(f"{router}/v1/chat/completions", json=body, timeout=60)

    thread = threading.Thread(target=ask)
    thread.start()
    time.sleep(1.0)
    data = yaml.safe_load(open(os.environ["FUSION_TEST_CONFIG"]).read())
    data["server"]["request_timeout_s"] = 61  # a changed config: every replica is replaced
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(data))
    serve.run(
        build_app(AppArgs(config_path=str(changed), emulator_url=emu.url)), name="fusion", route_prefix="/"
    )
    thread.join(timeout=60)
    r = result["r"]
    assert r.status_code == 200 and r.text.rstrip().endswith("data: [DONE]"), r.text[-300:]
    fusion = _fusion(r)
    assert fusion["model"] == model and fusion["fallbacks"] == []
    chunks = [line for line in r.text.splitlines() if line.startswith("data: {")]
    assert len(chunks) >= 40  # every token arrived: the replaced replicas drained the stream


def test_stream_cut_after_tokens_is_one_complete_stream(router: str, emu: EmulatorServer) -> None:
    set_fault(emu, PRIMARY, kind="cut", after_tokens=3)
    r = _ask(router, stream=True)
    data = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    text = "".join(
        json.loads(d)["choices"][0]["delta"].get("content", "") for d in data[:-1] if json.loads(d)["choices"]
    )
    assert text.startswith(f"[{PRIMARY}]") and f"[{FALLBACK}]" in text
    fusion = _fusion(r)
    assert fusion["continuations"][0]["from_model"] == PRIMARY
    assert fusion["continuations"][0]["to_model"] == FALLBACK
