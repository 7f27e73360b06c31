"""The emulator speaks each provider's wire protocol; checked on raw HTTP, without the SDKs."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from serve_app.emulator import EmulatorServer
from serve_app.emulator.engine import LatencyProfile, compose_answer, count_tokens
from tests.conftest import requests_seen, set_fault


def _sse_data(text: str) -> list[str]:
    return [line[len("data: ") :] for line in text.splitlines() if line.startswith("data: ")]


def test_openai_stream_frames_and_usage(emu: EmulatorServer) -> None:
    body = {
        "model": "gpt-4.1",
        "messages": [{"role": "user", "content": "hello world"}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 6,
    }
    r = httpx.post(f"{emu.url}/openai/v1/chat/completions", json=body)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    data = _sse_data(r.text)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    usage = chunks[-1]["usage"]
    assert usage["completion_tokens"] == 6 and usage["prompt_tokens"] == count_tokens("hello world")
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert text.startswith("[gpt-4.1]")


def test_anthropic_event_sequence(emu: EmulatorServer) -> None:
    body = {
        "model": "claude-haiku-4-5",
        "max_tokens": 4,
        "stream": True,
        "system": "sys",
        "messages": [{"role": "user", "content": "hi"}],
    }
    r = httpx.post(f"{emu.url}/anthropic/v1/messages", json=body)
    events = [line[len("event: ") :] for line in r.text.splitlines() if line.startswith("event: ")]
    assert events[:3] == ["message_start", "content_block_start", "ping"]
    assert events.count("content_block_delta") == 4
    assert events[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    delta = json.loads(_sse_data(r.text)[-2])
    assert delta["delta"]["stop_reason"] == "max_tokens" and delta["usage"]["output_tokens"] == 4


@pytest.mark.parametrize(
    "path",
    [
        "/openai/v1/chat/completions",
        "/anthropic/v1/messages",
        "/google/v1beta/models/gemini-2.5-pro:generateContent",
    ],
)
@pytest.mark.parametrize(
    "content",
    [
        b'{"model": "gpt-4.1", "messages": [{"role": "user", "content": "half a pair \\ud83d"}]}',
        b'{"model": "gpt-4.1", "messages": [{"role": "user", "content": "x"}], "temperature": NaN}',
        b"[" * 100_000 + b"]" * 100_000,
    ],
    ids=["lone-surrogate", "nan", "deep"],
)
def test_strict_json_as_the_apis_are(emu: EmulatorServer, path: str, content: bytes) -> None:
    """Bodies the real APIs refuse are 400s in each protocol's error shape, never a 500."""
    r = httpx.post(emu.url + path, content=content, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert "error" in r.json()


def test_anthropic_requires_max_tokens(emu: EmulatorServer) -> None:
    r = httpx.post(
        f"{emu.url}/anthropic/v1/messages",
        json={"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "x"}]},
    )
    assert r.status_code == 400
    assert r.json()["type"] == "error" and r.json()["error"]["type"] == "invalid_request_error"


def test_gemini_generate_and_stream(emu: EmulatorServer) -> None:
    body = {
        "contents": [{"role": "user", "parts": [{"text": "one two"}]}],
        "generationConfig": {"maxOutputTokens": 3},
    }
    r = httpx.post(f"{emu.url}/google/v1beta/models/gemini-2.5-pro:generateContent", json=body)
    out = r.json()
    assert out["candidates"][0]["finishReason"] == "MAX_TOKENS"
    assert out["usageMetadata"] == {"promptTokenCount": 2, "candidatesTokenCount": 3, "totalTokenCount": 5}
    s = httpx.post(f"{emu.url}/google/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse", json=body)
    chunks = [json.loads(d) for d in _sse_data(s.text)]
    assert chunks[-1]["candidates"][0]["finishReason"] == "MAX_TOKENS"
    assert len(chunks) == 4  # three tokens and the closing chunk


@pytest.mark.parametrize(
    ("path", "model", "fmt"),
    [
        ("/openai/v1/chat/completions", "gpt-4.1", lambda j: j["error"]["type"]),
        ("/anthropic/v1/messages", "claude-haiku-4-5", lambda j: j["error"]["type"]),
        (
            "/google/v1beta/models/gemini-2.5-pro:generateContent",
            "gemini-2.5-pro",
            lambda j: j["error"]["status"],
        ),
    ],
)
def test_http_error_fault_in_provider_format(emu: EmulatorServer, path: str, model: str, fmt: object) -> None:
    set_fault(emu, model, kind="http_error", status=429, retry_after=2, times=1)
    body = {
        "model": model,
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "x"}],
        "contents": [{"parts": [{"text": "x"}]}],
    }
    r = httpx.post(f"{emu.url}{path}", json=body)
    assert r.status_code == 429 and r.headers["retry-after"] == "2"
    assert fmt(r.json()) in ("rate_limit_exceeded", "rate_limit_error", "RESOURCE_EXHAUSTED")  # type: ignore[operator]
    # times=1: the next request is served
    assert httpx.post(f"{emu.url}{path}", json=body).status_code == 200


def test_fault_admin_round_trip_and_wildcard(emu: EmulatorServer) -> None:
    set_fault(emu, "*", kind="http_error", status=500)
    assert httpx.get(f"{emu.url}/admin/faults").json()["*"]["status"] == 500
    body = {"model": "anything", "messages": [{"role": "user", "content": "x"}]}
    assert httpx.post(f"{emu.url}/openai/v1/chat/completions", json=body).status_code == 500
    httpx.delete(f"{emu.url}/admin/faults/*")
    assert httpx.post(f"{emu.url}/openai/v1/chat/completions", json=body).status_code == 200
    bad = httpx.put(f"{emu.url}/admin/faults/x", json={"kind": "explode"})
    assert bad.status_code == 400
    assert requests_seen(emu)["anything"] == 2


def test_refuse_resets_connection(emu: EmulatorServer) -> None:
    set_fault(emu, "gpt-4.1", kind="refuse")
    with pytest.raises(httpx.TransportError):
        httpx.post(
            f"{emu.url}/openai/v1/chat/completions",
            json={"model": "gpt-4.1", "messages": [{"role": "user", "content": "x"}]},
        )


def test_cut_after_tokens_truncates_stream(emu: EmulatorServer) -> None:
    set_fault(emu, "gpt-4.1", kind="cut", after_tokens=2)
    received: list[str] = []
    with (
        pytest.raises(httpx.TransportError),
        httpx.stream(
            "POST",
            f"{emu.url}/openai/v1/chat/completions",
            json={"model": "gpt-4.1", "stream": True, "messages": [{"role": "user", "content": "x"}]},
        ) as r,
    ):
        for line in r.iter_lines():
            received.append(line)
    content = [json.loads(d)["choices"][0]["delta"].get("content") for d in _sse_data("\n".join(received))]
    assert len([c for c in content if c]) == 2 and "[DONE]" not in "\n".join(received)


def test_malformed_chunk(emu: EmulatorServer) -> None:
    set_fault(emu, "gpt-4.1", kind="malformed", after_tokens=1)
    r = httpx.post(
        f"{emu.url}/openai/v1/chat/completions",
        json={"model": "gpt-4.1", "stream": True, "messages": [{"role": "user", "content": "x"}]},
    )
    data = _sse_data(r.text)
    with pytest.raises(json.JSONDecodeError):
        json.loads(data[-1])


def test_timeout_fault_holds_the_response(emu: EmulatorServer) -> None:
    set_fault(emu, "gpt-4.1", kind="timeout", delay_s=30)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{emu.url}/openai/v1/chat/completions",
            timeout=httpx.Timeout(0.3, connect=2),
            json={"model": "gpt-4.1", "messages": [{"role": "user", "content": "x"}]},
        )


def test_answers_honour_stop_and_are_deterministic() -> None:
    profile = LatencyProfile(reply_tokens=30)
    a = compose_answer("m", "prompt", profile=profile, max_tokens=None, stop=None)
    assert a == compose_answer("m", "prompt", profile=profile, max_tokens=None, stop=None)
    word = a.tokens[5].strip()
    stopped = compose_answer("m", "prompt", profile=profile, max_tokens=None, stop=[word])
    assert word not in stopped.text and stopped.stop_sequence == word and stopped.finish_reason == "stop"
    assert stopped.completion_tokens <= 6


def test_anthropic_explicit_prompt_cache_writes_then_reads(emu: EmulatorServer) -> None:
    """Blocks marked cache_control are written on first use and read afterwards, as Anthropic bills."""
    long_system = " ".join(f"rule{i} applies." for i in range(400))
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 5,
        "system": [{"type": "text", "text": long_system, "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": "hello there"}],
    }
    first = httpx.post(f"{emu.url}/anthropic/v1/messages", json=body).json()["usage"]
    second = httpx.post(f"{emu.url}/anthropic/v1/messages", json=body).json()["usage"]
    assert first["cache_creation_input_tokens"] == 1200 and first["cache_read_input_tokens"] == 0
    assert second["cache_read_input_tokens"] == 1200 and second["cache_creation_input_tokens"] == 0
    assert first["input_tokens"] == second["input_tokens"] == 2  # the uncached rest
    unmarked = {**body, "system": long_system}
    plain = httpx.post(f"{emu.url}/anthropic/v1/messages", json=unmarked).json()["usage"]
    assert plain["cache_read_input_tokens"] == 0 and plain["input_tokens"] == 1202


def test_tool_turns_are_checked_like_the_real_apis(emu: EmulatorServer) -> None:
    """A tool result must answer a call made earlier in the conversation; Anthropic's turns alternate."""
    orphan = [{"role": "user", "content": "hi"}, {"role": "tool", "tool_call_id": "call_x", "content": "42"}]
    r = httpx.post(f"{emu.url}/openai/v1/chat/completions", json={"model": "gpt-4.1", "messages": orphan})
    assert r.status_code == 400 and "tool_calls" in r.json()["error"]["message"]
    unknown = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 10,
        "messages": [
            {"role": "user", "content": "hi"},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}],
            },
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_2", "content": "x"}]},
        ],
    }
    r = httpx.post(f"{emu.url}/anthropic/v1/messages", json=unknown)
    assert r.status_code == 400 and "unknown tool_use id" in r.json()["error"]["message"]
    repeated = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "a"}] * 2,
    }
    r = httpx.post(f"{emu.url}/anthropic/v1/messages", json=repeated)
    assert r.status_code == 400 and "alternate" in r.json()["error"]["message"]


def test_gemini_function_calls_and_json_mode(emu: EmulatorServer) -> None:
    url = f"{emu.url}/google/v1beta/models/gemini-2.5-pro:generateContent"
    tools = [
        {
            "functionDeclarations": [
                {
                    "name": "f",
                    "parametersJsonSchema": {"type": "object", "properties": {"n": {"type": "integer"}}},
                }
            ]
        }
    ]
    body = {"contents": [{"role": "user", "parts": [{"text": "go"}]}], "tools": tools}
    parts = httpx.post(url, json=body).json()["candidates"][0]["content"]["parts"]
    assert parts[0]["functionCall"]["name"] == "f" and parts[0]["functionCall"]["args"] == {"n": 1}
    body = {
        "contents": [{"role": "user", "parts": [{"text": "go"}]}],
        "generationConfig": {
            "responseMimeType": "application/json",
            "responseSchema": {"type": "OBJECT", "properties": {"ok": {"type": "BOOLEAN"}}},
        },
    }
    text = httpx.post(url, json=body).json()["candidates"][0]["content"]["parts"][0]["text"]
    assert json.loads(text) == {"ok": True}


async def test_stats_count_the_most_answers_in_progress_at_once(emu: EmulatorServer) -> None:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
    async with httpx.AsyncClient(base_url=emu.url) as client:
        await client.put("/admin/latency_scale", json={"scale": 1.0})
        await client.put("/admin/profiles/gpt-4o-mini", json={"ttft_ms": 200, "tokens_per_s": 1e6})
        answers = await asyncio.gather(
            *(client.post("/openai/v1/chat/completions", json=body) for _ in range(3))
        )
        assert [r.status_code for r in answers] == [200, 200, 200]
        await client.post("/openai/v1/chat/completions", json=body)  # alone: the peak stays
        # only this model: an earlier test's request to another model (a client that gave up on a
        # delayed answer) may still be answered by the shared emulator while this one runs
        assert (await client.get("/admin/stats")).json()["peak_in_flight"]["gpt-4o-mini"] == 3
        await client.delete("/admin/stats")
        assert "gpt-4o-mini" not in (await client.get("/admin/stats")).json()["peak_in_flight"]
