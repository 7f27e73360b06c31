"""Failover mechanisms of the gateway against the emulator (no Ray): each test fails without its
mechanism."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from serve_app.config import FusionConfig
from serve_app.emulator import EmulatorServer
from serve_app.errors import InvalidRequestError, NoProviderAvailableError, ProviderError
from serve_app.gateway import Gateway
from serve_app.schemas import ChatCompletionRequest, parse_request
from tests.conftest import requests_seen, set_fault
from tests.unit.serve_app.inprocess import emulated_config, inprocess_gateway

CODING = "Write a Python function that merges two sorted lists; handle edge cases and explain the complexity."
PRIMARY, FALLBACK = "claude-sonnet-4-5", "gpt-4.1"


def _gateway(config: FusionConfig, emu: EmulatorServer, open_s: float = 10.0, **retry: Any) -> Gateway:
    cfg = emulated_config(config, emu.url)
    cfg = cfg.model_copy(
        update={
            "retry": cfg.retry.model_copy(
                update={
                    "attempt_timeout_s": 1.0,
                    "first_token_timeout_s": 1.0,
                    "inter_token_timeout_s": 0.5,
                    **retry,
                }
            ),
            "health": cfg.health.model_copy(update={"open_s": open_s}),
        }
    )
    return inprocess_gateway(cfg)


def _chat(
    model: str = "auto:quality", stream: bool = False, text: str = CODING, **extra: Any
) -> ChatCompletionRequest:
    return parse_request(
        {"model": model, "stream": stream, "messages": [{"role": "user", "content": text}], **extra}
    )


async def _complete(gw: Gateway, chat: ChatCompletionRequest) -> Any:
    info = await gw.plan(chat, "r")
    await gw.complete(chat, info)
    return info


async def _stream_text(gw: Gateway, chat: ChatCompletionRequest) -> tuple[str, Any]:
    info = await gw.plan(chat, "r")
    session = await gw.open_stream(chat, info)
    text = "".join([d.text async for d in session.deltas()])
    return text, info


async def test_open_circuit_is_skipped_without_a_call(config: FusionConfig, emu: EmulatorServer) -> None:
    gw = _gateway(config, emu)
    set_fault(emu, PRIMARY, kind="http_error", status=500)
    for _ in range(3):  # failure_threshold
        await _complete(gw, _chat())
    assert requests_seen(emu)[PRIMARY] == 3
    info = await _complete(gw, _chat())
    assert requests_seen(emu)[PRIMARY] == 3  # not called again: its circuit is open
    assert PRIMARY in info.skipped and info.served_by.model == FALLBACK and info.fallbacks == 0


async def test_half_open_probe_brings_a_recovered_model_back(
    config: FusionConfig, emu: EmulatorServer
) -> None:
    gw = _gateway(config, emu, open_s=0.3)
    set_fault(emu, PRIMARY, kind="http_error", status=503, times=3)
    for _ in range(3):
        await _complete(gw, _chat())
    await asyncio.sleep(0.35)  # open_s
    info = await _complete(gw, _chat())
    assert info.served_by.model == PRIMARY and gw.health.breaker(("anthropic", PRIMARY)).state == "closed"


async def test_429_moves_on_at_once_and_cools_the_model_down(
    config: FusionConfig, emu: EmulatorServer
) -> None:
    gw = _gateway(config, emu)
    set_fault(emu, PRIMARY, kind="http_error", status=429, retry_after=5, times=1)
    started = time.monotonic()
    info = await _complete(gw, _chat())
    assert time.monotonic() - started < 1.0  # no waiting for the Retry-After
    assert info.served_by.model == FALLBACK and info.attempts[0].error == "rate_limited"
    again = await _complete(gw, _chat())  # the fault is gone, but Retry-After still benches it
    assert PRIMARY in again.skipped and requests_seen(emu)[PRIMARY] == 1


async def test_second_round_retries_after_backoff(config: FusionConfig, emu: EmulatorServer) -> None:
    gw = _gateway(config, emu, max_rounds=2, backoff_base_s=0.05)
    set_fault(emu, "gpt-4o-mini", kind="http_error", status=503, times=1)
    info = await _complete(gw, _chat(model="gpt-4o-mini"))  # a concrete model: one candidate
    assert info.served_by.model == "gpt-4o-mini" and info.fallbacks == 1
    assert requests_seen(emu)["gpt-4o-mini"] == 2
    gw1 = _gateway(config, emu, max_rounds=1)
    set_fault(emu, "gpt-4o-mini", kind="http_error", status=503, times=1)
    with pytest.raises(NoProviderAvailableError):
        await _complete(gw1, _chat(model="gpt-4o-mini"))


@pytest.mark.parametrize(
    "fault",
    [
        {"kind": "cut", "after_tokens": 3},
        {"kind": "malformed", "after_tokens": 3},
        {"kind": "stall", "after_tokens": 3, "delay_s": 20},
    ],
    ids=lambda f: f["kind"],
)
async def test_stream_broken_after_tokens_is_continued(
    config: FusionConfig, emu: EmulatorServer, fault: dict[str, Any]
) -> None:
    gw = _gateway(config, emu)
    set_fault(emu, PRIMARY, **fault)
    text, info = await _stream_text(gw, _chat(stream=True))
    assert text.startswith(f"[{PRIMARY}]")  # the three tokens already sent
    assert f"[{FALLBACK}]" in text  # and the rest from the fallback, in one stream
    assert [c.from_model for c in info.continuations] == [PRIMARY]
    assert info.continuations[0].to_model == FALLBACK and info.served_by.model == FALLBACK
    assert info.usage.output_tokens > 0 and info.usage_estimated  # the broken segment is estimated


async def test_continuation_can_be_refused_by_the_request(config: FusionConfig, emu: EmulatorServer) -> None:
    gw = _gateway(config, emu)
    set_fault(emu, PRIMARY, kind="cut", after_tokens=3)
    chat = _chat(stream=True, fusion={"allow_continuation": False})
    info = await gw.plan(chat, "r")
    session = await gw.open_stream(chat, info)
    got: list[str] = []
    with pytest.raises(ProviderError):
        async for d in session.deltas():
            got.append(d.text)
    # the three tokens sent before the cut (coalesced into fewer deltas when they arrive together)
    assert len("".join(got).split()) == 3 and not info.continuations


async def test_two_providers_down_still_serves(config: FusionConfig, emu: EmulatorServer) -> None:
    gw = _gateway(config, emu)
    for model in ("claude-sonnet-4-5", "claude-opus-4-5", "claude-haiku-4-5", "gpt-4.1", "gpt-4o-mini"):
        set_fault(emu, model, kind="http_error", status=503)
    info = await _complete(gw, _chat())  # coding: the whole row is Anthropic and OpenAI
    assert info.served_by.provider in ("google", "meta") and info.served_by.slot == "extended"


async def test_long_prompt_skips_short_context_models(config: FusionConfig, emu: EmulatorServer) -> None:
    gw = _gateway(config, emu)
    info = await gw.plan(_chat(text="word " * 40_000), "r")  # ~50k tokens
    names = [c.model for c in info.candidates]
    assert "llama-3.1-8b-instruct" not in names and "llama-3.3-70b-instruct" not in names
    assert "gemini-2.5-pro" in names


async def test_prompt_longer_than_every_window_is_a_400(config: FusionConfig, emu: EmulatorServer) -> None:
    gw = _gateway(config, emu)
    with pytest.raises(InvalidRequestError) as info:
        await gw.plan(_chat(text="word " * 6_000_000), "r")
    assert info.value.error_code == "context_length_exceeded"


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
async def test_slow_attempt_is_hedged_on_the_next_candidate(
    config: FusionConfig, emu: EmulatorServer, stream: bool
) -> None:
    gw = _gateway(config, emu, attempt_timeout_s=5.0, first_token_timeout_s=5.0, hedge_after_s=0.2)
    kind = (
        {"kind": "stall", "after_tokens": 0, "delay_s": 20} if stream else {"kind": "timeout", "delay_s": 20}
    )
    set_fault(emu, PRIMARY, **kind)
    chat = _chat(stream=stream)
    if stream:
        text, info = await _stream_text(gw, chat)
        assert text.startswith(f"[{FALLBACK}]")
    else:
        info = await _complete(gw, chat)
    assert info.served_by.model == FALLBACK
    assert info.hedged == [PRIMARY]
    assert info.fallbacks == 0  # the hanging attempt was cancelled, never waited out
    # the cancelled attempt's prompt reached its provider: it is charged (estimated) with the answer
    assert info.usage_estimated and info.cost_usd is not None
    assert info.usage.input_tokens > sum(1 for _ in chat.messages)


async def test_without_hedging_a_hanging_model_costs_its_timeout(
    config: FusionConfig, emu: EmulatorServer
) -> None:
    gw = _gateway(config, emu, attempt_timeout_s=0.5, hedge_after_s=None)
    set_fault(emu, PRIMARY, kind="timeout", delay_s=20)
    info = await _complete(gw, _chat())
    assert info.hedged == [] and info.attempts[0].error == "timeout" and info.served_by.model == FALLBACK


async def test_overtaken_attempts_count_against_their_model(
    config: FusionConfig, emu: EmulatorServer
) -> None:
    gw = _gateway(config, emu, attempt_timeout_s=5.0, hedge_after_s=0.1, hedge_budget=1.0)
    set_fault(emu, PRIMARY, kind="timeout", delay_s=20)
    for _ in range(3):  # failure_threshold: each time the hedge wins, the primary is charged a failure
        info = await _complete(gw, _chat())
        assert info.hedged == [PRIMARY]
    info = await _complete(gw, _chat())
    assert PRIMARY in info.skipped and info.hedged == []  # its circuit opened: not even tried


async def test_silent_stream_is_continued_before_its_inter_token_timeout(
    config: FusionConfig, emu: EmulatorServer
) -> None:
    gw = _gateway(config, emu, inter_token_timeout_s=5.0, stall_hedge_after_s=0.2)
    set_fault(emu, PRIMARY, kind="stall", after_tokens=3, delay_s=20)
    started = time.monotonic()
    text, info = await _stream_text(gw, _chat(stream=True))
    assert time.monotonic() - started < 2.5  # the 5 s inter-token timeout was not waited out
    assert text.startswith(f"[{PRIMARY}]") and f"[{FALLBACK}]" in text
    assert [(c.from_model, c.to_model, c.error) for c in info.continuations] == [
        (PRIMARY, FALLBACK, "timeout")
    ]
    assert info.served_by.model == FALLBACK
    assert [a.model for a in info.attempts if a.error] == [PRIMARY]  # the silent stream counts as failed


async def test_a_stream_that_speaks_again_keeps_its_answer_and_drops_the_spare(
    config: FusionConfig, emu: EmulatorServer
) -> None:
    gw = _gateway(config, emu, inter_token_timeout_s=5.0, stall_hedge_after_s=0.1)
    set_fault(emu, PRIMARY, kind="stall", after_tokens=3, delay_s=0.5)
    set_fault(emu, FALLBACK, kind="stall", after_tokens=0, delay_s=20)  # the spare is slower still
    text, info = await _stream_text(gw, _chat(stream=True))
    assert requests_seen(emu).get(FALLBACK) == 1  # the spare continuation was started ...
    assert f"[{FALLBACK}]" not in text and not info.continuations  # ... and dropped when the primary spoke
    assert info.served_by.model == PRIMARY and not [a for a in info.attempts if a.error]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
async def test_no_hedge_while_the_replica_itself_is_congested(
    config: FusionConfig, emu: EmulatorServer, stream: bool
) -> None:
    """A slow attempt on a replica whose own loop runs late (or whose provider's replica does, for a
    call through its deployment) is slow because of us: a hedge would add load and answer from
    another model, so the gateway waits it out instead. The lag asked for is the attempt's provider's."""
    gw = _gateway(config, emu, attempt_timeout_s=5.0, first_token_timeout_s=5.0, hedge_after_s=0.1)
    primary, fallback = config.models[PRIMARY].provider, config.models[FALLBACK].provider
    lag: dict[str, float] = {}
    gw.loop_lag = lambda provider: lag.get(provider, 0.0)
    set_fault(emu, PRIMARY, kind="timeout", delay_s=0.6)  # it answers, late
    chat = _chat(stream=stream)
    info = (await _stream_text(gw, chat))[1] if stream else await _complete(gw, chat)
    assert info.hedged == [PRIMARY] and info.served_by.model == FALLBACK  # a replica keeping up hedges
    lag[fallback] = 0.5  # late, but not on the slow attempt's way
    info = (await _stream_text(gw, chat))[1] if stream else await _complete(gw, chat)
    assert info.hedged == [PRIMARY] and info.served_by.model == FALLBACK
    lag[primary] = 0.5  # seconds late in the last second: more than a tenth of the hedge's delay
    info = (await _stream_text(gw, chat))[1] if stream else await _complete(gw, chat)
    assert info.hedged == [] and info.served_by.model == PRIMARY


async def test_no_spare_for_a_silent_stream_while_the_replica_is_congested(
    config: FusionConfig, emu: EmulatorServer
) -> None:
    gw = _gateway(config, emu, inter_token_timeout_s=5.0, stall_hedge_after_s=0.1)
    gw.loop_lag = lambda provider: 0.5
    set_fault(emu, PRIMARY, kind="stall", after_tokens=3, delay_s=0.6)  # silent, then it speaks again
    text, info = await _stream_text(gw, _chat(stream=True))
    assert requests_seen(emu).get(FALLBACK) is None  # no spare continuation was started
    assert f"[{FALLBACK}]" not in text and info.served_by.model == PRIMARY
