"""Each SDK adapter against the emulator: answers, streams, usage, and every fault mapped to our tree."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from deployments.providers.base import (
    ChatMessage,
    Endpoint,
    ProviderAdapter,
    ProviderRequest,
    ResponseFormat,
    StreamDelta,
    Tool,
    ToolCall,
)
from deployments.providers.registry import make_adapter
from serve_app.emulator import EmulatorServer
from serve_app.emulator.engine import DEFAULT_PROFILES, FALLBACK_PROFILE
from serve_app.emulator.server import free_port
from serve_app.errors import (
    ProviderAuthError,
    ProviderBadRequestError,
    ProviderConnectionError,
    ProviderError,
    ProviderOverloadedError,
    ProviderRateLimitError,
    ProviderServerError,
    ProviderStreamError,
    ProviderTimeoutError,
)
from tests.conftest import requests_seen, sampling_seen, set_fault


@dataclass(frozen=True)
class Case:
    kind: str
    path: str
    model: str


CASES = [
    Case("openai", "/openai/v1", "gpt-4.1"),
    Case("anthropic", "/anthropic", "claude-haiku-4-5"),
    Case("google", "/google", "gemini-2.5-pro"),
    Case("openai_compatible", "/openai/v1", "meta-llama/Llama-3.1-8B-Instruct"),
]


def _adapter(emu_url: str, case: Case, read_timeout_s: float = 5.0) -> ProviderAdapter:
    endpoint = Endpoint(
        base_url=emu_url + case.path, api_key="test", emulated=True, read_timeout_s=read_timeout_s
    )
    return make_adapter(case.kind, case.kind, endpoint)


def _request(case: Case, **kw: object) -> ProviderRequest:
    messages = [ChatMessage("system", "be brief"), ChatMessage("user", "say something about routers")]
    return ProviderRequest(model=case.model, messages=messages, **kw)  # type: ignore[arg-type]


async def _drain(stream: AsyncIterator[StreamDelta]) -> list[StreamDelta]:
    return [d async for d in stream]


@pytest.fixture(params=CASES, ids=[c.kind for c in CASES])
def case(request: pytest.FixtureRequest) -> Case:
    c: Case = request.param
    return c


async def test_complete_reports_text_and_usage(emu: EmulatorServer, case: Case) -> None:
    adapter = _adapter(emu.url, case)
    result = await adapter.complete(_request(case, max_tokens=7))
    assert result.text.startswith(f"[{case.model}]")
    assert result.finish_reason == "length"
    assert result.usage.output_tokens == 7
    assert result.usage.input_tokens == 6  # "be brief" + "say something about routers"
    await adapter.aclose()


async def test_stream_yields_tokens_and_final_usage(emu: EmulatorServer, case: Case) -> None:
    adapter = _adapter(emu.url, case)
    deltas = await _drain(adapter.stream(_request(case, max_tokens=5)))
    assert "".join(d.text for d in deltas) == (await adapter.complete(_request(case, max_tokens=5))).text
    assert [d.finish_reason for d in deltas if d.finish_reason] == ["length"]
    usage = [d.usage for d in deltas if d.usage]
    assert usage and usage[-1].output_tokens == 5 and usage[-1].input_tokens == 6
    await adapter.aclose()


async def test_reasoning_tokens_are_counted_as_output(emu: EmulatorServer, case: Case) -> None:
    """A thinking model's hidden tokens are billed as output; OpenAI and Gemini also say how many."""
    profile = DEFAULT_PROFILES.get(case.model, FALLBACK_PROFILE)
    async with httpx.AsyncClient() as admin:
        await admin.put(
            f"{emu.url}/admin/profiles/{case.model}", json={**profile.model_dump(), "reasoning_tokens": 50}
        )
    adapter = _adapter(emu.url, case)
    try:
        result = await adapter.complete(_request(case, max_tokens=7))
        deltas = await _drain(adapter.stream(_request(case, max_tokens=7)))
    finally:
        async with httpx.AsyncClient() as admin:
            await admin.put(f"{emu.url}/admin/profiles/{case.model}", json=profile.model_dump())
        await adapter.aclose()
    final = [d.usage for d in deltas if d.usage][-1]
    for usage in (result.usage, final):
        assert usage.output_tokens == 57
        # Anthropic bills thinking inside output_tokens without a separate count
        assert usage.reasoning_tokens == (0 if case.kind == "anthropic" else 50)


async def test_cached_prompt_tokens_are_reported(emu: EmulatorServer, case: Case) -> None:
    """The second call with the same long history reads it from the provider's prompt cache."""
    if case.kind == "anthropic":
        pytest.skip("Anthropic caches only blocks marked cache_control (test_wire covers the wire)")
    history = " ".join(f"fact{i} is true." for i in range(400))  # 1,600 emulator tokens
    messages = [
        ChatMessage("system", history + case.kind),
        ChatMessage("user", "first question"),
    ]
    adapter = _adapter(emu.url, case)
    first = await adapter.complete(ProviderRequest(model=case.model, messages=messages))
    messages[-1] = ChatMessage("user", "second question")
    second = await adapter.complete(ProviderRequest(model=case.model, messages=messages))
    await adapter.aclose()
    assert first.usage.cached_tokens == 0
    assert second.usage.cached_tokens == 1601  # the system prompt
    assert second.usage.input_tokens == 1601 + 2  # cached tokens are part of the prompt's count


async def test_stop_sequence_ends_answer(emu: EmulatorServer, case: Case) -> None:
    adapter = _adapter(emu.url, case)
    full = await adapter.complete(_request(case))
    stop_word = full.text.split()[3]
    stopped = await adapter.complete(_request(case, stop=[stop_word]))
    assert stop_word not in stopped.text and stopped.finish_reason == "stop"
    await adapter.aclose()


async def test_sampling_parameters_reach_the_wire(emu: EmulatorServer, case: Case) -> None:
    """temperature and top_p arrive in the provider's own fields, complete and stream alike (the
    anthropic SDK 1.0+ has no keywords for them: the adapter puts them in the body); Anthropic's
    temperature is capped at its maximum, 1."""
    adapter = _adapter(emu.url, case)
    sent = {"temperature": 1.5, "top_p": 0.25}
    expected = {"temperature": 1.0 if case.kind == "anthropic" else 1.5, "top_p": 0.25}
    await adapter.complete(_request(case, **sent))
    assert sampling_seen(emu, case.model) == expected
    await _drain(adapter.stream(_request(case, temperature=0.0)))
    assert sampling_seen(emu, case.model) == {"temperature": 0.0}
    if case.kind != "anthropic":  # Anthropic has no penalties: the router never sends it one
        penalties = {"presence_penalty": -1.5, "frequency_penalty": 0.5}
        await adapter.complete(_request(case, **penalties))
        assert sampling_seen(emu, case.model) == penalties
        await _drain(adapter.stream(_request(case, **penalties)))
        assert sampling_seen(emu, case.model) == penalties
    await adapter.aclose()


# reasoning_effort "high" on each wire: OpenAI's own field; Gemini's thinking budget (at most half of
# max_tokens, which thinking counts against); Anthropic's extended thinking (max_tokens raised
# above the budget when the request sets none, else thinking takes at most half of it)
HIGH = {
    "openai": ({"reasoning_effort": "high"}, {"reasoning_effort": "high"}),
    "openai_compatible": ({"reasoning_effort": "high"}, {"reasoning_effort": "high"}),
    "google": ({"thinking_budget": 24576.0}, {"thinking_budget": 2000.0}),
    "anthropic": ({"thinking_budget": 16384.0}, {"thinking_budget": 2000.0}),
}


async def test_reasoning_effort_reaches_the_wire_and_its_thinking_is_billed(
    emu: EmulatorServer, case: Case
) -> None:
    adapter = _adapter(emu.url, case)
    plain = await adapter.complete(_request(case))
    assert plain.usage.reasoning_tokens == 0 and "thinking_budget" not in sampling_seen(emu, case.model)
    unbounded, bounded = HIGH[case.kind]
    done = await adapter.complete(_request(case, reasoning_effort="high"))
    assert sampling_seen(emu, case.model) == unbounded
    assert done.usage.output_tokens > plain.usage.output_tokens  # the emulated thinking, billed
    if case.kind != "anthropic":  # Anthropic folds thinking into output_tokens
        assert done.usage.reasoning_tokens > 0
    deltas = await _drain(adapter.stream(_request(case, reasoning_effort="high", max_tokens=4000)))
    assert sampling_seen(emu, case.model) == bounded
    assert "".join(d.text for d in deltas) and deltas[-1].usage is not None
    await adapter.aclose()


async def test_anthropic_thinks_only_where_its_api_allows(emu: EmulatorServer) -> None:
    """Anthropic refuses thinking beside a temperature other than 1, a forced tool, or max_tokens
    too small for its least budget: those requests go without thinking, not to a 400."""
    case = CASES[1]
    adapter = _adapter(emu.url, case)
    tool = Tool("f", "", {"type": "object", "properties": {}})
    for kw in (
        {"temperature": 0.5},
        {"top_p": 0.5},
        {"max_tokens": 1500},
        {"tools": (tool,), "tool_choice": "required"},
        {"response_format": ResponseFormat("json_object")},
    ):
        await adapter.complete(_request(case, reasoning_effort="low", **kw))
        assert "thinking_budget" not in sampling_seen(emu, case.model), kw
    # a conversation with tool turns: Claude's signed thinking blocks of the earlier turn are not kept
    call = ToolCall("call_1", "f", "{}")
    turns = [
        ChatMessage("user", "call f"),
        ChatMessage("assistant", "", tool_calls=(call,)),
        ChatMessage("tool", "42", tool_call_id="call_1", name="f"),
    ]
    request = ProviderRequest(model=case.model, messages=turns, tools=(tool,), reasoning_effort="low")
    await adapter.complete(request)
    assert "thinking_budget" not in sampling_seen(emu, case.model)
    await adapter.complete(_request(case, reasoning_effort="low", temperature=1.0, top_p=0.97))
    assert sampling_seen(emu, case.model)["thinking_budget"] == 2048.0
    await adapter.aclose()


@pytest.mark.parametrize(
    ("status", "cls", "retryable"),
    [
        (429, ProviderRateLimitError, True),
        (500, ProviderServerError, True),
        (503, ProviderOverloadedError, True),
        (529, ProviderOverloadedError, True),
        (400, ProviderBadRequestError, False),
        (401, ProviderAuthError, False),
    ],
)
async def test_http_errors_map_to_tree(
    emu: EmulatorServer, case: Case, status: int, cls: type[ProviderError], retryable: bool
) -> None:
    adapter = _adapter(emu.url, case)
    set_fault(emu, case.model, kind="http_error", status=status, retry_after=3 if status == 429 else None)
    for call in ("complete", "stream"):
        with pytest.raises(cls) as info:
            if call == "complete":
                await adapter.complete(_request(case))
            else:
                await _drain(adapter.stream(_request(case)))
        err = info.value
        assert err.status_code == status and err.retryable is retryable
        assert err.provider == case.kind and err.model == case.model
        assert err.retry_after == (3.0 if status == 429 else None)
    # SDK retries are off: exactly one HTTP request per call
    assert requests_seen(emu)[case.model] == 2
    await adapter.aclose()


async def test_refused_connection(emu: EmulatorServer, case: Case) -> None:
    adapter = _adapter(emu.url, case)
    set_fault(emu, case.model, kind="refuse")
    with pytest.raises(ProviderConnectionError):
        await adapter.complete(_request(case))
    with pytest.raises((ProviderConnectionError, ProviderStreamError)):
        await _drain(adapter.stream(_request(case)))
    await adapter.aclose()


async def test_closed_port_is_a_connection_error(case: Case) -> None:
    adapter = _adapter(f"http://127.0.0.1:{free_port()}", case)
    with pytest.raises(ProviderConnectionError):
        await adapter.complete(_request(case))
    await adapter.aclose()


async def test_timeout_and_stall(emu: EmulatorServer, case: Case) -> None:
    adapter = _adapter(emu.url, case, read_timeout_s=0.3)
    set_fault(emu, case.model, kind="timeout", delay_s=20)
    with pytest.raises(ProviderTimeoutError):
        await adapter.complete(_request(case))
    set_fault(emu, case.model, kind="stall", after_tokens=2, delay_s=20)
    got: list[StreamDelta] = []
    with pytest.raises(ProviderTimeoutError):
        async for d in adapter.stream(_request(case)):
            got.append(d)
    assert len([d for d in got if d.text]) == 2
    await adapter.aclose()


@pytest.mark.parametrize("after", [0, 3])
async def test_cut_and_malformed_streams(emu: EmulatorServer, case: Case, after: int) -> None:
    adapter = _adapter(emu.url, case)
    for kind in ("cut", "malformed"):
        set_fault(emu, case.model, kind=kind, after_tokens=after)
        got: list[StreamDelta] = []
        with pytest.raises((ProviderStreamError, ProviderConnectionError)) as info:
            async for d in adapter.stream(_request(case)):
                got.append(d)
        assert len([d for d in got if d.text]) == after
        assert info.value.retryable
        if after:
            assert isinstance(info.value, ProviderStreamError)
    set_fault(emu, case.model, kind="malformed")
    with pytest.raises(ProviderStreamError):
        await adapter.complete(_request(case))
    await adapter.aclose()


async def test_anthropic_prompt_caching_marks_long_system_prompts(emu: EmulatorServer, config: Any) -> None:
    """With prompt_caching on, a long system prompt is written to Anthropic's cache once and read
    afterwards, which genai-prices bills at a tenth; off, nothing is cached."""
    from serve_app.pricing import call_cost_usd

    system = " ".join(f"policy{i} holds." for i in range(1200))  # > 4,096 characters
    request = ProviderRequest(
        model="claude-sonnet-4-5",
        messages=[ChatMessage("system", system), ChatMessage("user", "and so?")],
        max_tokens=5,
    )
    cached = make_adapter(
        "anthropic",
        "anthropic",
        Endpoint(base_url=emu.url + "/anthropic", api_key="t", emulated=True, prompt_caching=True),
    )
    first, second = await cached.complete(request), await cached.complete(request)
    await cached.aclose()
    assert first.usage.cache_write_tokens == 3600 and second.usage.cached_tokens == 3600
    assert second.usage.input_tokens == first.usage.input_tokens  # every prompt token is counted
    costs = [call_cost_usd(config, "claude-sonnet-4-5", u.usage) or 0.0 for u in (first, second)]
    assert costs[1] < costs[0] / 3
    plain = make_adapter(
        "anthropic", "anthropic", Endpoint(base_url=emu.url + "/anthropic", api_key="t", emulated=True)
    )
    again = await plain.complete(request)
    await plain.aclose()
    assert again.usage.cached_tokens == 0 and again.usage.cache_write_tokens == 0
