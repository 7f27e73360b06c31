"""Tools, structured output, images and capability routing through the router (in process), each
provider forced in turn: the official SDKs against the emulator's three wire protocols."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from serve_app.api import create_api
from serve_app.config import FusionConfig
from serve_app.emulator import EmulatorServer
from tests.conftest import sampling_seen
from tests.unit.serve_app.inprocess import emulated_config, inprocess_gateway

MODELS = ["gpt-4.1", "claude-sonnet-4-5", "gemini-2.5-pro"]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"type": "string"}, "offset": {"type": "integer"}},
        },
    },
}
ASK = [{"role": "user", "content": "What is the weather and the time in Paris?"}]
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 32).decode()


@pytest.fixture
async def client(emu: EmulatorServer, config: FusionConfig) -> AsyncIterator[httpx.AsyncClient]:
    cfg = emulated_config(config, emu.url)
    app = create_api(cfg, inprocess_gateway(cfg), {})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://router") as c:
        yield c


async def _chat(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    """One request; a stream is folded back into a completion body the way OpenAI's SDK does."""
    r = await client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    if not body.get("stream"):
        result: dict[str, Any] = r.json()
        return result
    text, finish = "", None
    calls: dict[int, dict[str, Any]] = {}  # index -> call
    for line in r.text.splitlines():
        if not line.startswith("data: {"):
            continue
        chunk = json.loads(line[6:])
        for choice in chunk.get("choices", []):
            delta = choice["delta"]
            text += delta.get("content") or ""
            for piece in delta.get("tool_calls") or []:
                call = calls.setdefault(
                    piece["index"],
                    {"id": None, "type": "function", "function": {"name": None, "arguments": ""}},
                )
                call["id"] = piece.get("id") or call["id"]
                call["function"]["name"] = piece["function"].get("name") or call["function"]["name"]
                call["function"]["arguments"] += piece["function"].get("arguments", "")
            finish = choice.get("finish_reason") or finish
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        message["tool_calls"] = [calls[i] for i in sorted(calls)]
    return {"choices": [{"message": message, "finish_reason": finish}]}


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("model", MODELS)
async def test_tool_conversation_over_several_turns(
    client: httpx.AsyncClient, model: str, stream: bool
) -> None:
    first = await _chat(client, model=model, messages=ASK, tools=[WEATHER, TIME], stream=stream)
    choice = first["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    calls = choice["message"]["tool_calls"]
    # the same calls, in OpenAI's shape, whichever provider made them (two at once: parallel)
    assert [c["function"]["name"] for c in calls] == ["get_weather", "get_time"]
    assert json.loads(calls[0]["function"]["arguments"]) == {"city": "example", "unit": "celsius"}
    assert json.loads(calls[1]["function"]["arguments"]) == {"zone": "example", "offset": 1}
    assert all(c["id"] and c["type"] == "function" for c in calls)
    results = [
        {"role": "tool", "tool_call_id": calls[0]["id"], "content": json.dumps({"temp_c": 21})},
        {"role": "tool", "tool_call_id": calls[1]["id"], "content": "14:05"},
    ]
    history = [*ASK, {"role": "assistant", "content": None, "tool_calls": calls}, *results]
    second = await _chat(client, model=model, messages=history, tools=[WEATHER, TIME], stream=stream)
    final = second["choices"][0]
    assert final["finish_reason"] == "stop" and "tool_calls" not in final["message"]
    assert final["message"]["content"].startswith(f"[{model}]")
    # a third turn: the user asks again, with the whole history
    third_history = [*history, final["message"], {"role": "user", "content": "And in Rome?"}]
    third = await _chat(client, model=model, messages=third_history, tools=[WEATHER], stream=stream)
    assert third["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "get_weather"


@pytest.mark.parametrize("model", MODELS)
async def test_tool_choice_and_parallel_calls(client: httpx.AsyncClient, model: str) -> None:
    named = await _chat(
        client,
        model=model,
        messages=ASK,
        tools=[WEATHER, TIME],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )
    assert [c["function"]["name"] for c in named["choices"][0]["message"]["tool_calls"]] == ["get_time"]
    none = await _chat(client, model=model, messages=ASK, tools=[WEATHER, TIME], tool_choice="none")
    assert none["choices"][0]["finish_reason"] == "stop" and none["choices"][0]["message"]["content"]
    if model != "gemini-2.5-pro":  # Gemini cannot be told to make one call at a time
        single = await _chat(
            client, model=model, messages=ASK, tools=[WEATHER, TIME], parallel_tool_calls=False
        )
        assert len(single["choices"][0]["message"]["tool_calls"]) == 1
    required = await _chat(client, model=model, messages=ASK, tools=[TIME], tool_choice="required")
    assert required["choices"][0]["finish_reason"] == "tool_calls"


SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "year": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["name", "year", "tags"],
    "additionalProperties": False,
}


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("model", MODELS)
async def test_structured_output(client: httpx.AsyncClient, model: str, stream: bool) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "film", "schema": SCHEMA, "strict": True}}
    messages = [{"role": "user", "content": "Name a film."}]
    done = await _chat(client, model=model, messages=messages, response_format=fmt, stream=stream)
    assert done["choices"][0]["finish_reason"] == "stop"
    assert json.loads(done["choices"][0]["message"]["content"]) == {
        "name": "example",
        "year": 1,
        "tags": ["example"],
    }
    plain = await _chat(
        client, model=model, messages=messages, response_format={"type": "json_object"}, stream=stream
    )
    assert isinstance(json.loads(plain["choices"][0]["message"]["content"]), dict)


@pytest.mark.parametrize("model", MODELS)
async def test_images_as_data(client: httpx.AsyncClient, model: str) -> None:
    content = [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
    ]
    done = await _chat(client, model=model, messages=[{"role": "user", "content": content}])
    assert done["choices"][0]["message"]["content"].startswith(f"[{model}]")
    text_only = await _chat(client, model=model, messages=[{"role": "user", "content": content[:1]}])
    # the image reached the provider as an image: it is billed as prompt tokens
    assert done["usage"]["prompt_tokens"] == text_only["usage"]["prompt_tokens"] + 85


async def test_image_urls_go_only_to_models_that_fetch_them(client: httpx.AsyncClient) -> None:
    content = [
        {"type": "text", "text": "Describe it"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
    ]
    r = await client.post(
        "/v1/chat/completions",
        json={"model": "gemini-2.5-pro", "messages": [{"role": "user", "content": content}]},
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "capability_missing"
    assert "image_urls" in r.json()["error"]["message"]
    routed = await client.post(
        "/v1/chat/completions", json={"model": "auto", "messages": [{"role": "user", "content": content}]}
    )
    fusion = routed.json()["fusion"]
    assert routed.status_code == 200 and fusion["model"] not in (
        "gemini-2.5-pro",
        "llama-3.1-8b-instruct",
        "llama-3.3-70b-instruct",
    )
    assert not {"gemini-2.5-pro", "llama-3.1-8b-instruct", "llama-3.3-70b-instruct"} & set(
        fusion["candidates"]
    )


async def test_capabilities_steer_routing_and_name_what_is_missing(client: httpx.AsyncClient) -> None:
    simple = [{"role": "user", "content": "What is the capital of France?"}]
    # the self-hosted Llama has no tools: a simple query with tools skips it
    r = await client.post(
        "/v1/chat/completions", json={"model": "auto", "messages": simple, "tools": [WEATHER]}
    )
    fusion = r.json()["fusion"]
    assert r.status_code == 200 and not any(c.startswith("llama") for c in fusion["candidates"])
    direct = await client.post(
        "/v1/chat/completions",
        json={"model": "llama-3.1-8b-instruct", "messages": simple, "tools": [WEATHER]},
    )
    assert direct.status_code == 400 and direct.json()["error"]["code"] == "capability_missing"
    assert "tools" in direct.json()["error"]["message"] and direct.json()["error"]["param"] == "model"
    # Anthropic has no seed: not a candidate unless the config drops it there
    seeded = await client.post(
        "/v1/chat/completions", json={"model": "claude-sonnet-4-5", "messages": simple, "seed": 7}
    )
    assert seeded.status_code == 400 and "seed" in seeded.json()["error"]["message"]
    # nor penalties (0, their default, is none); routed, a penalty leaves Anthropic out
    penalised = {"messages": simple, "frequency_penalty": 0.5}
    r = await client.post("/v1/chat/completions", json={"model": "claude-sonnet-4-5", **penalised})
    assert r.status_code == 400 and "frequency_penalty" in r.json()["error"]["message"]
    r = await client.post(
        "/v1/chat/completions", json={"model": "claude-sonnet-4-5", **penalised, "frequency_penalty": 0}
    )
    assert r.status_code == 200
    unpenalised = await client.post(
        "/v1/chat/completions", json={"model": "auto:quality", "messages": simple}
    )
    assert any(c.startswith("claude") for c in unpenalised.json()["fusion"]["candidates"])
    r = await client.post("/v1/chat/completions", json={"model": "auto:quality", **penalised})
    assert r.status_code == 200 and r.json()["fusion"]["provider"] != "anthropic"
    assert not any(c.startswith("claude") for c in r.json()["fusion"]["candidates"])
    too_long = await client.post(
        "/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": simple, "max_tokens": 50_000}
    )
    assert too_long.status_code == 400 and "max_output_tokens" in too_long.json()["error"]["message"]


async def test_a_request_no_model_can_serve_is_a_400(emu: EmulatorServer, config: FusionConfig) -> None:
    cfg = emulated_config(config, emu.url)
    models = {
        name: spec.model_copy(update={"capabilities": spec.capabilities.model_copy(update={"tools": False})})
        for name, spec in cfg.models.items()
    }
    cfg = cfg.model_copy(update={"models": models})
    app = create_api(cfg, inprocess_gateway(cfg), {})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://router") as c:
        r = await c.post("/v1/chat/completions", json={"model": "auto", "messages": ASK, "tools": [WEATHER]})
    assert r.status_code == 400 and r.json()["error"]["code"] == "capability_missing"
    assert "tools" in r.json()["error"]["message"]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"tool_choice": "auto"}, "no tools"),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "not among the tools",
        ),
        ({"tools": [WEATHER, WEATHER]}, "unique"),
        ({"messages": [*ASK, {"role": "tool", "content": "x"}]}, "tool_call_id"),
        ({"response_format": {"type": "json_schema"}}, "json_schema"),
        ({"functions": [WEATHER["function"]]}, "not supported"),
    ],
)
async def test_malformed_tool_requests_are_400(
    client: httpx.AsyncClient, body: dict[str, Any], fragment: str
) -> None:
    r = await client.post("/v1/chat/completions", json={"model": "gpt-4.1", "messages": ASK, **body})
    assert r.status_code == 400 and fragment in r.json()["error"]["message"], r.text


async def test_reasoning_effort_goes_to_models_that_reason_and_is_dropped_for_the_rest(
    client: httpx.AsyncClient, emu: EmulatorServer
) -> None:
    """A hint, as OpenRouter treats it: models with capabilities.reasoning get a thinking budget
    (and bill it), the rest answer as they would without it; never a 400 for it."""
    for model, provider_model in (("gpt-4.1", "gpt-4.1"), ("llama-3.1-8b-instruct", None)):
        body = await _chat(client, model=model, messages=ASK, reasoning_effort="high")
        assert body["usage"]["completion_tokens_details"]["reasoning_tokens"] == 0
        if provider_model:
            assert "reasoning_effort" not in sampling_seen(emu, provider_model)
    gemini = await _chat(client, model="gemini-2.5-pro", messages=ASK, reasoning_effort="medium")
    assert sampling_seen(emu, "gemini-2.5-pro") == {"thinking_budget": 8192.0}
    assert gemini["usage"]["completion_tokens_details"]["reasoning_tokens"] > 0
    streamed = await _chat(
        client, model="claude-sonnet-4-5", messages=ASK, reasoning_effort="low", stream=True
    )
    assert streamed["choices"][0]["message"]["content"]
    assert sampling_seen(emu, "claude-sonnet-4-5") == {"thinking_budget": 2048.0}
    bad = await client.post(
        "/v1/chat/completions", json={"model": "auto", "messages": ASK, "reasoning_effort": "max"}
    )
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "reasoning_effort"
