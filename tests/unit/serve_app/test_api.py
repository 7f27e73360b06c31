"""The HTTP surface in-process (FastAPI over ASGI, no Ray): envelopes, statuses, SSE."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import httpx
import pytest

from serve_app.api import create_api
from serve_app.config import FusionConfig
from serve_app.emulator import EmulatorServer
from tests.conftest import set_fault
from tests.unit.serve_app.inprocess import emulated_config, inprocess_gateway

USER = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture
async def client(emu: EmulatorServer, config: FusionConfig) -> AsyncIterator[httpx.AsyncClient]:
    cfg = emulated_config(config, emu.url)
    app = create_api(cfg, inprocess_gateway(cfg), {"openai": "emulated"})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://router") as c:
        yield c


def _assert_envelope(r: httpx.Response, status: int) -> dict[str, object]:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"]
    err: dict[str, object] = body["error"]
    return err


@pytest.mark.parametrize(
    ("content", "status", "fragment"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b'{"model": "auto", "temperature": NaN}', 400, "NaN is not a JSON value"),
        (b'{"model": "auto", "max_tokens": Infinity}', 400, "Infinity is not a JSON value"),
        (b'{"model": "auto", "messages": [{"role": "user", "content": "a \\ud83d b"}]}', 400, "surrogate"),
        (b"[" * 200_000 + b"]" * 200_000, 400, "nested too deeply"),
        (b"[" * 900 + b'"\\ud83d"' + b"]" * 900, 400, "surrogate"),  # deep, and a lone surrogate
        (
            b'{"model": "auto", "messages": [{"role": "user", "content": "x"},'
            b' {"role": "tool", "content": "42", "tool_call_id": "c9"}]}',
            400,
            "no earlier assistant",
        ),
        (
            b'{"model": "auto", "messages": [{"role": "user", "content": "x", "tool_call_id": "c1"}]}',
            400,
            "only a 'tool' message carries tool_call_id",
        ),
        (  # an empty list too: found by benchmarks/bad_input.py (the schema forbids the field)
            b'{"model": "auto", "messages": [{"role": "user", "content": "x", "tool_calls": []}]}',
            400,
            "only an 'assistant' message can carry tool_calls",
        ),
        (b"", 400, "empty"),
        (b"[1, 2]", 400, "JSON object"),
        (b'{"model": "auto"}', 400, "messages: Field required"),
        (b'{"model": "auto", "messages": []}', 400, "at least 1 item"),
        (b'{"model": "auto", "messages": [{"role": "user", "content": 5}]}', 400, "messages.0.content"),
        (b'{"model": "gpt-17", "messages": [{"role": "user", "content": "x"}]}', 404, "does not exist"),
        (b"\xff\xfe", 400, "not valid JSON"),
    ],
)
async def test_bad_input_gets_4xx_envelope(
    client: httpx.AsyncClient, content: bytes, status: int, fragment: str
) -> None:
    r = await client.post(
        "/v1/chat/completions", content=content, headers={"content-type": "application/json"}
    )
    err = _assert_envelope(r, status)
    assert fragment in str(err["message"])


async def test_body_over_limit_is_413(client: httpx.AsyncClient, config: FusionConfig) -> None:
    big = json.dumps(
        {"model": "auto", "messages": [{"role": "user", "content": "x" * config.server.max_body_bytes}]}
    )
    err = _assert_envelope(await client.post("/v1/chat/completions", content=big), 413)
    assert err["code"] == "request_too_large"


async def test_unknown_path_and_method(client: httpx.AsyncClient) -> None:
    _assert_envelope(await client.get("/v2/nothing"), 404)
    _assert_envelope(await client.get("/v1/chat/completions"), 405)


async def test_models_and_health(client: httpx.AsyncClient, config: FusionConfig) -> None:
    ids = [m["id"] for m in (await client.get("/v1/models")).json()["data"]]
    assert ids[:3] == ["auto", "auto:cost", "auto:quality"] and set(config.models) <= set(ids)
    for model in ("auto:cost", next(iter(config.models))):  # OpenAI's retrieve
        card = (await client.get(f"/v1/models/{model}")).json()
        assert card["id"] == model and card["object"] == "model"
    err = _assert_envelope(await client.get("/v1/models/gpt-5"), 404)
    assert err["code"] == "model_not_found" and err["param"] == "model"
    _assert_envelope(await client.post("/v1/models/auto"), 405)
    health = (await client.get("/healthz")).json()
    assert health["status"] == "ok" and health["providers"] == {"openai": "emulated"}


async def test_completion_says_what_the_router_did(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/chat/completions", json={"model": "auto", "messages": USER})
    assert r.status_code == 200
    body = r.json()
    fusion = body["fusion"]
    assert body["object"] == "chat.completion" and body["model"] == fusion["model"]
    assert fusion["task_type"] == "simple_queries" and fusion["provider"] in ("anthropic", "meta")
    assert r.headers["x-fusion-model"] == fusion["model"]
    assert r.headers["x-fusion-provider"] == fusion["provider"]
    assert r.headers["x-fusion-task-type"] == "simple_queries"
    assert body["usage"]["completion_tokens"] > 0


async def test_stream_is_sse_ending_in_done(client: httpx.AsyncClient) -> None:
    body = {"model": "auto", "stream": True, "stream_options": {"include_usage": True}, "messages": USER}
    r = await client.post("/v1/chat/completions", json=body)
    assert r.headers["content-type"].startswith("text/event-stream")
    data = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    final = chunks[-2]
    assert (
        final["choices"][0]["finish_reason"] == "stop"
        and final["fusion"]["model"] == r.headers["x-fusion-model"]
    )
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0


async def test_break_after_first_token_ends_with_error_event(
    client: httpx.AsyncClient, emu: EmulatorServer
) -> None:
    set_fault(emu, "gpt-4.1", kind="cut", after_tokens=3)
    body = {"model": "gpt-4.1", "stream": True, "messages": USER}
    r = await client.post("/v1/chat/completions", json=body)
    data = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
    last = json.loads(data[-1])
    assert "[DONE]" not in data
    assert last["error"]["code"] == "stream_error" and "broke after it started" in last["error"]["message"]
    assert last["fusion"]["fallbacks"][0]["model"] == "gpt-4.1"


async def test_all_down_is_503_listing_attempts(client: httpx.AsyncClient, emu: EmulatorServer) -> None:
    set_fault(emu, "*", kind="http_error", status=503)
    r = await client.post("/v1/chat/completions", json={"model": "auto:quality", "messages": USER})
    err = _assert_envelope(r, 503)
    assert err["code"] == "no_provider_available"
    assert "claude-haiku-4-5" in str(err["message"]) and "gpt-4o-mini" in str(err["message"])


async def test_openapi_documents_request_and_errors(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    op = spec["paths"]["/v1/chat/completions"]["post"]
    assert {"400", "404", "413", "502", "503", "504"} <= set(op["responses"])
    assert "ChatCompletionRequest" in spec["components"]["schemas"]


async def test_a_client_gone_before_its_body_is_refused_quietly(
    emu: EmulatorServer, config: FusionConfig, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that disconnects while sending its body: refused as bad input (400
    client_disconnected, counted as refused), not logged as the router's own error."""
    cfg = emulated_config(config, emu.url)
    app = create_api(cfg, inprocess_gateway(cfg), {})
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json")],
        "http_version": "1.1",
        "scheme": "http",
        "server": ("router", 80),
        "client": ("127.0.0.1", 5000),
        "root_path": "",
    }
    sent: list[MutableMapping[str, Any]] = []
    parts: list[MutableMapping[str, Any]] = [
        {"type": "http.request", "body": b'{"model": "auto",', "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> MutableMapping[str, Any]:
        return parts.pop(0) if parts else {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert start["status"] == 400 and json.loads(body)["error"]["code"] == "client_disconnected"
    assert "unexpected error" not in caplog.text


async def test_an_alias_is_served_as_the_model_or_policy_it_names(
    emu: EmulatorServer, config: FusionConfig
) -> None:
    routing = config.routing.model_copy(update={"aliases": {"gpt-4": "gpt-4.1", "cheap": "auto:cost"}})
    cfg = emulated_config(config, emu.url).model_copy(update={"routing": routing})
    app = create_api(cfg, inprocess_gateway(cfg), {"openai": "emulated"})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://router") as client:
        direct = await client.post("/v1/chat/completions", json={"model": "gpt-4", "messages": USER})
        assert direct.status_code == 200, direct.text
        assert direct.json()["model"] == "gpt-4.1" and direct.json()["fusion"]["policy"] == "direct"
        routed = await client.post("/v1/chat/completions", json={"model": "cheap", "messages": USER})
        assert routed.status_code == 200 and routed.json()["fusion"]["policy"] == "auto:cost"
        listed = {m["id"]: m["owned_by"] for m in (await client.get("/v1/models")).json()["data"]}
        assert listed["gpt-4"] == "openai" and listed["cheap"] == "fusion-router"
        unknown = await client.post("/v1/chat/completions", json={"model": "gpt-3.5-turbo", "messages": USER})
        _assert_envelope(unknown, 404)
