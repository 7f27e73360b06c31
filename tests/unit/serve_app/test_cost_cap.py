"""A request's cost limit holds across all its calls (``serve_app/cost_cap.py``): a fallback, a hedge
or a continued stream starts only if what the request may already owe leaves room for its worst
case. Against the emulator, without Ray."""

from __future__ import annotations

from typing import Any

import pytest

from serve_app.config import FusionConfig
from serve_app.cost_cap import CostCap
from serve_app.emulator import EmulatorServer
from serve_app.errors import NoProviderAvailableError, ProviderError
from serve_app.gateway import Gateway
from serve_app.pricing import request_worst_case_usd
from serve_app.route_info import RouteInfo
from serve_app.schemas import ChatCompletionRequest, parse_request
from tests.conftest import requests_seen, set_fault
from tests.unit.serve_app.inprocess import emulated_config, inprocess_gateway

CODING = "Write a Python function that merges two sorted lists; handle edge cases and explain the complexity."
PRIMARY, FALLBACK = "claude-sonnet-4-5", "gpt-4.1"
MAX_TOKENS = 100


def test_the_cap_counts_charges_and_holds() -> None:
    cap = CostCap(1.0)
    assert cap.fits(None, 1.0) and cap.fits(0.25, 0.75) and not cap.fits(0.25, 0.76)
    cap.hold(0.6)
    assert cap.fits(0.1, 0.3) and not cap.fits(0.1, 0.31)
    cap.release(0.6)
    assert cap.held_usd == 0.0 and cap.fits(0.1, 0.9)
    cap.release(5.0)  # never below nothing
    assert cap.held_usd == 0.0
    assert cap.reason(0.1) is None  # the limit left nothing out: it explains nothing
    cap.leave_out("m")
    cap.leave_out("m")
    reason = cap.reason(0.1)
    assert cap.left_out == ["m"] and reason is not None and "m left out" in reason and "$0.100000" in reason


def _gateway(config: FusionConfig, emu: EmulatorServer, **retry: Any) -> Gateway:
    cfg = emulated_config(config, emu.url)
    timeouts = {"attempt_timeout_s": 0.5, "first_token_timeout_s": 1.0, "inter_token_timeout_s": 0.5}
    return inprocess_gateway(
        cfg.model_copy(update={"retry": cfg.retry.model_copy(update={**timeouts, **retry})})
    )


def _chat(stream: bool = False) -> ChatCompletionRequest:
    return parse_request(
        {
            "model": "auto:quality",
            "stream": stream,
            "max_tokens": MAX_TOKENS,
            "messages": [{"role": "user", "content": CODING}],
        }
    )


async def _plan(gw: Gateway, chat: ChatCompletionRequest, cap: float | None) -> RouteInfo:
    info = await gw.plan(chat, "r")
    assert [c.model for c in info.candidates][:2] == [PRIMARY, FALLBACK]
    info.candidates = info.candidates[:2]  # the rest include unpriced models, which always fit
    if cap is not None:
        gw.cap_cost(chat, info, cap)
    return info


def _worst(gw: Gateway, chat: ChatCompletionRequest, info: RouteInfo) -> dict[str, float]:
    return {c.model: request_worst_case_usd(gw.config, chat, c.model) for c in info.candidates}


async def test_a_refused_attempt_is_not_billed_and_leaves_room_for_the_fallback(
    config: FusionConfig, emu: EmulatorServer
) -> None:
    gw, chat = _gateway(config, emu), _chat()
    worst = _worst(gw, chat, await _plan(gw, chat, None))
    cap = max(worst[PRIMARY], worst[FALLBACK]) * 1.001
    assert cap < worst[PRIMARY] + worst[FALLBACK]  # room for one call, not two
    set_fault(emu, PRIMARY, kind="http_error", status=500)
    info = await _plan(gw, chat, cap)
    await gw.complete(chat, info)
    assert info.served_by is not None and info.served_by.model == FALLBACK
    assert info.cap is not None and info.cap.held_usd == 0 and not info.cap.left_out
    assert info.cost_usd is not None and 0 < info.cost_usd <= cap


async def test_a_timed_out_attempt_may_still_be_billed_so_the_fallback_is_left_out(
    config: FusionConfig, emu: EmulatorServer
) -> None:
    gw, chat = _gateway(config, emu, hedge_after_s=None), _chat()
    worst = _worst(gw, chat, await _plan(gw, chat, None))
    set_fault(emu, PRIMARY, kind="timeout", delay_s=20)
    tight = await _plan(gw, chat, max(worst[PRIMARY], worst[FALLBACK]) * 1.001)
    with pytest.raises(NoProviderAvailableError) as refused:
        await gw.complete(chat, tight)
    assert refused.value.http_status == 504  # only timeouts were seen
    message = refused.value.message  # ... max_cost_usd $...: gpt-4.1, claude-sonnet-4-5 left out, ...
    assert "max_cost_usd" in message and FALLBACK in message.split("left out")[0]
    assert FALLBACK not in requests_seen(emu)
    assert tight.cap is not None and tight.cap.left_out[0] == FALLBACK
    assert tight.body()["over_max_cost"] == tight.cap.left_out
    # with room for both, the same failure falls back
    roomy = await _plan(gw, chat, worst[PRIMARY] + worst[FALLBACK] + 1e-9)
    await gw.complete(chat, roomy)
    assert roomy.served_by is not None and roomy.served_by.model == FALLBACK
    assert "over_max_cost" not in roomy.body()


@pytest.mark.parametrize("roomy", [False, True], ids=["tight", "roomy"])
async def test_a_hedge_starts_only_when_both_worst_cases_fit(
    config: FusionConfig, emu: EmulatorServer, roomy: bool
) -> None:
    gw, chat = _gateway(config, emu, attempt_timeout_s=5.0, hedge_after_s=0.1), _chat()
    worst = _worst(gw, chat, await _plan(gw, chat, None))
    set_fault(emu, PRIMARY, kind="timeout", delay_s=0.6)  # slow, then answers
    both = worst[PRIMARY] + worst[FALLBACK]
    info = await _plan(gw, chat, both * 1.001 if roomy else max(worst.values()) * 1.001)
    await gw.complete(chat, info)
    assert info.served_by is not None and info.cost_usd is not None and info.cap is not None
    spent_hedges = len(gw._hedges._hedges)  # the hedge budget's record of hedges started
    if roomy:
        assert info.hedged == [PRIMARY] and info.served_by.model == FALLBACK and spent_hedges == 1
    else:  # the primary waited out: no second call the limit could not pay for
        assert info.hedged == [] and info.served_by.model == PRIMARY
        assert FALLBACK not in requests_seen(emu) and not info.cap.left_out
        assert spent_hedges == 0  # a hedge the limit refused takes nothing from the hedge budget
    assert info.cost_usd <= info.cap.limit_usd


async def _stream(gw: Gateway, chat: ChatCompletionRequest, info: RouteInfo) -> tuple[str, Exception | None]:
    session = await gw.open_stream(chat, info)
    text: list[str] = []
    try:
        async for delta in session.deltas():
            text.append(delta.text)
    except ProviderError as exc:
        return "".join(text), exc
    return "".join(text), None


async def test_a_broken_stream_is_continued_only_within_the_limit(
    config: FusionConfig, emu: EmulatorServer
) -> None:
    gw, chat = _gateway(config, emu), _chat(stream=True)
    worst = _worst(gw, chat, await _plan(gw, chat, None))
    cap = max(worst.values()) * 1.001
    set_fault(emu, PRIMARY, kind="cut", after_tokens=5)  # early: the continuation fits
    info = await _plan(gw, chat, cap)
    text, error = await _stream(gw, chat, info)
    assert error is None and f"[{FALLBACK}]" in text and info.continuations
    assert info.cap is not None and info.cap.held_usd == 0
    assert info.cost_usd is not None and info.cost_usd <= cap

    set_fault(emu, PRIMARY, kind="cut", after_tokens=MAX_TOKENS - 5)  # late: its answer used the room
    seen = requests_seen(emu).get(FALLBACK, 0)
    info = await _plan(gw, chat, cap)
    text, error = await _stream(gw, chat, info)
    assert error is not None and text.startswith(f"[{PRIMARY}]") and not info.continuations
    assert requests_seen(emu).get(FALLBACK, 0) == seen  # never called
    assert info.cap is not None and FALLBACK in info.cap.left_out and info.cap.held_usd == 0
    assert info.cost_usd is not None and info.cost_usd <= cap
