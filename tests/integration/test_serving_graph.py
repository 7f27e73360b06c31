"""End to end on a real local Ray Serve: routing, streaming, fallback per fault kind, bad inputs."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import openai
import pytest

from serve_app.emulator import EmulatorServer
from tests.conftest import set_fault

pytestmark = pytest.mark.integration

PROMPTS = {
    "coding": (
        "Write a Python function that merges two sorted lists and add unit tests.",
        "claude-sonnet-4-5",
    ),
    "creative_writing": ("Write a short poem about the sea at night.", "claude-opus-4-5"),
    "analysis": ("Analyze the pros and cons of remote work for productivity, with evidence.", "gpt-4.1"),
    "simple_queries": ("What is the capital of France?", "claude-haiku-4-5"),
}


def _post(router: str, body: Any) -> httpx.Response:
    return httpx.post(f"{router}/v1/chat/completions", json=body, timeout=30)


def _burst(router: str, body: Any, n: int) -> list[httpx.Response]:
    """``n`` copies of one request, all in flight at once."""
    import asyncio

    async def send() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as client:
            url = f"{router}/v1/chat/completions"
            return list(await asyncio.gather(*(client.post(url, json=body) for _ in range(n))))

    return asyncio.run(send())


@pytest.mark.parametrize("task", list(PROMPTS))
def test_routes_by_task_type(router: str, emu: EmulatorServer, task: str) -> None:
    text, model = PROMPTS[task]
    r = _post(router, {"model": "auto:quality", "messages": [{"role": "user", "content": text}]})
    assert r.status_code == 200, r.text
    assert r.headers["x-fusion-task-type"] == task
    assert r.headers["x-fusion-model"] == model
    body = r.json()
    assert body["fusion"]["task_type"] == task and body["fusion"]["model"] == model
    assert body["choices"][0]["message"]["content"].startswith("[")
    assert body["fusion"]["cost_usd"] > 0


def test_official_openai_client_unchanged(router: str, emu: EmulatorServer) -> None:
    client = openai.OpenAI(base_url=f"{router}/v1", api_key="unused", max_retries=0)
    done = client.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "Write a haiku about routers"}], max_tokens=8
    )
    assert done.choices[0].finish_reason == "length" and done.usage is not None
    assert done.usage.completion_tokens == 8
    stream = client.chat.completions.create(
        model="auto",
        messages=[{"role": "user", "content": "Write a haiku about routers"}],
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == done.choices[0].message.content
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 8
    models = [m.id for m in client.models.list()]
    assert "auto" in models and "gpt-4.1" in models
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])


FAULTS_BEFORE_FIRST_TOKEN: list[dict[str, Any]] = [
    {"kind": "http_error", "status": 429, "retry_after": 30},
    {"kind": "http_error", "status": 500},
    {"kind": "http_error", "status": 503},
    {"kind": "http_error", "status": 529},
    {"kind": "refuse"},
    {"kind": "timeout", "delay_s": 30},
    {"kind": "stall", "after_tokens": 0, "delay_s": 30},
    {"kind": "cut", "after_tokens": 0},
    {"kind": "malformed", "after_tokens": 0},
]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize(
    "fault", FAULTS_BEFORE_FIRST_TOKEN, ids=lambda f: f"{f['kind']}{f.get('status', '')}"
)
def test_fallback_on_fault_before_first_token(
    router: str, emu: EmulatorServer, fault: dict[str, Any], stream: bool
) -> None:
    set_fault(emu, "claude-sonnet-4-5", **fault)
    text, _ = PROMPTS["coding"]
    r = _post(
        router, {"model": "auto:quality", "stream": stream, "messages": [{"role": "user", "content": text}]}
    )
    assert r.status_code == 200, r.text
    assert r.headers["x-fusion-model"] == "gpt-4.1"
    assert r.headers["x-fusion-fallbacks"] == "1"
    if stream:
        data = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
        assert data[-1] == "[DONE]"
        final = json.loads(data[-2])
        fusion = final["fusion"]
        content = "".join(json.loads(d)["choices"][0]["delta"].get("content", "") for d in data[:-1])
    else:
        fusion = r.json()["fusion"]
        content = r.json()["choices"][0]["message"]["content"]
    assert content.startswith("[gpt-4.1]")
    assert fusion["fallbacks"][0]["model"] == "claude-sonnet-4-5"


def test_every_provider_down_is_503(router: str, emu: EmulatorServer) -> None:
    set_fault(emu, "*", kind="http_error", status=529)
    r = _post(router, {"model": "auto", "messages": [{"role": "user", "content": "What is 2+2?"}]})
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "no_provider_available"


@pytest.mark.parametrize(
    ("content", "status", "fragment"),
    [
        (b"{oops", 400, "not valid JSON"),
        (b'{"messages": [{"role": "user", "content": "x"}]}', 400, "model: Field required"),
        (b'{"model": "auto", "messages": "hello"}', 400, "messages"),
        (b'{"model": "auto", "messages": []}', 400, "at least 1 item"),
        (
            b'{"model": "auto", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}',
            400,
            "temperature",
        ),
        (
            b'{"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]}',
            404,
            "does not exist",
        ),
        (
            b'{"model": "auto", "messages": [{"role": "user", "content": "' + b"a" * 1_100_000 + b'"}]}',
            413,
            "limit",
        ),
    ],
)
def test_bad_inputs(router: str, content: bytes, status: int, fragment: str) -> None:
    r = httpx.post(
        f"{router}/v1/chat/completions",
        content=content,
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert fragment in err["message"] and set(err) == {"message", "type", "param", "code"}


def test_health_and_models(router: str) -> None:
    health = httpx.get(f"{router}/healthz").json()
    assert health["status"] == "ok"
    assert set(health["providers"]) == {"anthropic", "openai", "google", "meta"}
    assert set(health["providers"].values()) == {"emulated"}
    assert httpx.get(f"{router}/nope").status_code == 404
    client = openai.OpenAI(base_url=f"{router}/v1", api_key="unused", max_retries=0)
    assert client.models.retrieve("auto:quality").id == "auto:quality"
    assert "auto" in {m.id for m in client.models.list()}
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-5")


def test_classifier_deployment_batches_concurrent_calls(router: str) -> None:
    import asyncio

    from ray import serve

    handle = serve.get_deployment_handle("ClassifierDeployment", app_name="fusion")
    prompts = [f"Write a Python function number {i} that sorts a list" for i in range(24)]

    async def burst() -> list[object]:  # every third prompt's request routes on predicted quality
        return list(
            await asyncio.gather(*(handle.classify.remote((p, i % 3 == 0)) for i, p in enumerate(prompts)))
        )

    results = asyncio.run(burst())
    assert all(r.task_type == "coding" for r in results)  # type: ignore[attr-defined]
    assert [bool(r.quality) for r in results] == [i % 3 == 0 for i in range(24)]  # type: ignore[attr-defined]
    sizes = handle.batch_stats.remote().result()
    assert max(sizes) > 1, sizes


def test_adaptive_placement_classifies_in_the_ingress_unless_a_busy_one_needs_minilm(router: str) -> None:
    """placement: adaptive (the default): the table's classification runs in the ingress, alone or
    not (no batch at the deployment); a request that routes on predicted quality needs the MiniLM
    pass, which runs in an idle ingress too, but goes to the batched deployment when the ingress
    serves others. Every request is classified the same way either way."""

    from ray import serve

    handle = serve.get_deployment_handle("ClassifierDeployment", app_name="fusion")

    def batched() -> int:
        return sum(handle.batch_stats.remote().result().values())

    text, model = PROMPTS["coding"]
    plain = {"model": "auto:quality", "messages": [{"role": "user", "content": text}]}
    targeted = {"model": "auto:0.8", "messages": [{"role": "user", "content": text}]}
    before = batched()
    for body in (plain, targeted, plain, targeted):
        r = _post(router, body)
        assert r.status_code == 200 and r.headers["x-fusion-task-type"] == "coding"
    answers = _burst(router, plain, 12)
    assert all(a.status_code == 200 and a.headers["x-fusion-model"] == model for a in answers)
    assert batched() == before

    answers = _burst(router, targeted, 12)
    assert all(a.status_code == 200 and a.headers["x-fusion-task-type"] == "coding" for a in answers)
    assert all(a.json()["fusion"]["predicted_quality"] for a in answers)
    assert batched() > before


def test_official_openai_client_tools_and_structured_output(router: str, emu: EmulatorServer) -> None:
    """The openai SDK's tool calling, its stream helper and its pydantic parse helper, unchanged."""
    from pydantic import BaseModel

    class Film(BaseModel):
        title: str
        year: int

    client = openai.OpenAI(base_url=f"{router}/v1", api_key="unused", max_retries=0)
    tools: Any = [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
            },
        }
    ]
    for model in ("gpt-4.1", "claude-sonnet-4-5", "gemini-2.5-pro"):
        asked: Any = [{"role": "user", "content": "Find the film."}]
        done = client.chat.completions.create(model=model, messages=asked, tools=tools)
        call = done.choices[0].message.tool_calls[0]  # type: ignore[index]
        assert done.choices[0].finish_reason == "tool_calls" and call.function.name == "lookup"  # type: ignore[union-attr]
        with client.chat.completions.stream(model=model, messages=asked, tools=tools) as stream:
            final = stream.get_final_completion()
        assert final.choices[0].message.tool_calls[0].function.name == "lookup"  # type: ignore[index]
        followup: Any = [
            *asked,
            done.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "Metropolis, 1927"},
        ]
        answer = client.chat.completions.create(model=model, messages=followup, tools=tools)
        assert answer.choices[0].finish_reason == "stop" and answer.choices[0].message.content
        parsed = client.chat.completions.parse(model=model, messages=asked, response_format=Film)
        assert parsed.choices[0].message.parsed == Film(title="example", year=1)


def test_idle_ingress_calls_the_sdk_itself_when_the_shipped_default_is_on(
    router: str, emu: EmulatorServer, tmp_path: Any
) -> None:
    """api_providers_when_idle (on in the shipped config; off in these tests' graph): a request that
    finds room in its ingress replica (fewer than api_providers_local_calls calls made there, 2 here)
    is answered with no call to the provider deployment; overlapping ones beyond that go through it.
    Redeploys the graph with the option on, then puts the tests' config back."""
    import os

    import yaml
    from ray import serve

    from serve_app.app import AppArgs, build_app

    def deploy(path: str) -> None:
        serve.run(build_app(AppArgs(config_path=path, emulator_url=emu.url)), name="fusion", route_prefix="/")

    data = yaml.safe_load(open(os.environ["FUSION_TEST_CONFIG"]).read())
    data["deployments"]["api_providers_when_idle"] = True
    data["deployments"]["api_providers_local_calls"] = 2
    data["deployments"]["ingress"]["num_replicas"] = 1
    changed = tmp_path / "when_idle.yaml"
    changed.write_text(yaml.safe_dump(data))
    handle = serve.get_deployment_handle("Provider_openai", app_name="fusion")
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}
    try:
        deploy(str(changed))
        # the shortcut opens once the provider deployment has said it reaches the same endpoints
        for _ in range(60):
            shortcut = httpx.get(f"{router}/healthz").json()["idle_shortcut"]
            if "openai" in shortcut:
                break
            time.sleep(0.5)
        assert "openai" in shortcut
        before = handle.call_count.remote().result()
        for _ in range(3):
            r = _post(router, body)
            assert r.status_code == 200 and r.json()["fusion"]["model"] == "gpt-4o-mini", r.text
        assert handle.call_count.remote().result() == before  # made in the ingress, no hop

        httpx.put(f"{emu.url}/admin/profiles/gpt-4o-mini", json={"ttft_ms": 200, "tokens_per_s": 1000})
        httpx.put(f"{emu.url}/admin/latency_scale", json={"scale": 1.0})

        answers = _burst(router, body, 8)
        assert all(a.status_code == 200 and a.json()["fusion"]["fallbacks"] == [] for a in answers)
        # eight overlapping calls, two made in the ingress: the deployment took the others
        assert handle.call_count.remote().result() >= before + 4
    finally:
        deploy(os.environ["FUSION_TEST_CONFIG"])
