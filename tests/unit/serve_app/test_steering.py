"""What a request may ask of the router besides its model: a cost limit (``fusion.max_cost_usd``,
header ``x-fusion-max-cost-usd``) and a quality target (``fusion.quality_target``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from serve_app.api import create_api
from serve_app.config import FusionConfig
from serve_app.emulator import EmulatorServer
from serve_app.pricing import worst_case_usd
from serve_app.schemas import parse_request
from tests.unit.serve_app.inprocess import emulated_config, inprocess_gateway

ASK = [{"role": "user", "content": "Explain how a hash map handles collisions, with an example."}]


@pytest.fixture
def cfg(emu: EmulatorServer, config: FusionConfig) -> FusionConfig:
    return emulated_config(config, emu.url)


@pytest.fixture
async def client(cfg: FusionConfig) -> AsyncIterator[httpx.AsyncClient]:
    app = create_api(cfg, inprocess_gateway(cfg), {})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://router") as c:
        yield c


async def _chat(
    client: httpx.AsyncClient, headers: dict[str, str] | None = None, **body: Any
) -> httpx.Response:
    return await client.post(
        "/v1/chat/completions", json={"model": "auto:quality", "messages": ASK, **body}, headers=headers
    )


def _worst(cfg: FusionConfig, model: str, max_tokens: int) -> float:
    prompt = parse_request({"model": "auto", "messages": ASK}).prompt_tokens_upper()
    return worst_case_usd(cfg, model, prompt, max_tokens)


async def test_candidates_dearer_than_the_limit_are_never_called(
    client: httpx.AsyncClient, cfg: FusionConfig
) -> None:
    free = (await _chat(client, max_tokens=200)).json()["fusion"]
    assert "max_cost_usd" not in free
    worst = {m: _worst(cfg, m, 200) for m in free["candidates"]}
    ordered = sorted(set(worst.values()))
    assert len(ordered) >= 3, worst
    cap = (ordered[1] + ordered[2]) / 2  # between the second and third cheapest
    capped = (await _chat(client, max_tokens=200, fusion={"max_cost_usd": cap})).json()["fusion"]
    assert capped["max_cost_usd"] == cap and capped["model"] in capped["candidates"]
    assert set(capped["candidates"]) == {m for m, usd in worst.items() if usd <= cap}
    assert capped["cost_usd"] <= cap
    assert [m for m in free["candidates"] if m in capped["candidates"]] == capped["candidates"]  # same order


async def test_no_model_within_the_limit_is_a_400_naming_the_cheapest(
    client: httpx.AsyncClient, cfg: FusionConfig
) -> None:
    direct = await _chat(client, model="gpt-4.1", max_tokens=100, fusion={"max_cost_usd": 1e-7})
    assert direct.status_code == 400, direct.text
    error = direct.json()["error"]
    assert (error["code"], error["param"]) == ("max_cost_exceeded", "fusion.max_cost_usd")
    assert "gpt-4.1" in error["message"] and f"{_worst(cfg, 'gpt-4.1', 100):.6f}" in error["message"]
    # a model without a known price counts as free, as in budgets (here: the emulated Llama)
    unpriced = (await _chat(client, max_tokens=100, fusion={"max_cost_usd": 1e-9})).json()["fusion"]
    assert unpriced["candidates"] and all(_worst(cfg, m, 100) == 0 for m in unpriced["candidates"])
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    routed = await _chat(client, max_tokens=100, fusion={"max_cost_usd": 1e-9}, tools=tools)
    assert routed.status_code == 400 and routed.json()["error"]["code"] == "max_cost_exceeded"
    fits = _worst(cfg, "gpt-4.1", 100)
    assert (
        await _chat(client, model="gpt-4.1", max_tokens=100, fusion={"max_cost_usd": fits})
    ).status_code == 200


async def test_without_max_tokens_the_default_output_limit_is_priced_and_sent(
    client: httpx.AsyncClient, cfg: FusionConfig, emu: EmulatorServer
) -> None:
    limit = cfg.budgets.max_output_tokens
    async with httpx.AsyncClient() as direct:  # gpt-4o-mini would go on for longer than the limit
        profile = {"ttft_ms": 0, "tokens_per_s": 1e9, "reply_tokens": limit + 500}
        (await direct.put(f"{emu.url}/admin/profiles/gpt-4o-mini", json=profile)).raise_for_status()
    cap = _worst(cfg, "gpt-4o-mini", limit) * 1.001
    answer = await _chat(client, model="gpt-4o-mini", fusion={"max_cost_usd": cap})
    assert answer.status_code == 200, answer.text
    assert answer.json()["usage"]["completion_tokens"] == limit  # cut where the price was counted
    assert answer.json()["choices"][0]["finish_reason"] == "length"
    more = await _chat(client, model="gpt-4o-mini", max_tokens=limit * 2, fusion={"max_cost_usd": cap})
    assert more.status_code == 400 and more.json()["error"]["code"] == "max_cost_exceeded"


async def test_the_header_says_the_same_and_the_lower_limit_wins(
    client: httpx.AsyncClient, cfg: FusionConfig
) -> None:
    fits = _worst(cfg, "gpt-4.1", 100)
    ok = await _chat(client, {"x-fusion-max-cost-usd": str(fits * 2)}, model="gpt-4.1", max_tokens=100)
    assert ok.status_code == 200 and ok.json()["fusion"]["max_cost_usd"] == pytest.approx(fits * 2)
    lower = await _chat(
        client,
        {"x-fusion-max-cost-usd": str(fits / 2)},
        model="gpt-4.1",
        max_tokens=100,
        fusion={"max_cost_usd": fits * 2},
    )
    assert lower.status_code == 400 and lower.json()["error"]["code"] == "max_cost_exceeded"
    for bad in ("cheap", "0", "-1", "inf", "nan", "1e9"):
        r = await _chat(client, {"x-fusion-max-cost-usd": bad}, max_tokens=100)
        assert r.status_code == 400 and r.json()["error"]["param"] == "x-fusion-max-cost-usd", (bad, r.text)
    for bad_body in (0, -0.5, "0.1", True):
        r = await _chat(client, max_tokens=100, fusion={"max_cost_usd": bad_body})
        assert r.status_code == 400 and "max_cost_usd" in r.json()["error"]["message"], (bad_body, r.text)


async def test_a_quality_target_in_the_body_is_the_policy_auto_target(client: httpx.AsyncClient) -> None:
    by_name = (await _chat(client, model="auto:0.85", max_tokens=50)).json()["fusion"]
    by_body = (await _chat(client, model="auto", max_tokens=50, fusion={"quality_target": 0.85})).json()
    assert by_body["fusion"]["policy"] == "auto:0.85" and by_body["fusion"]["quality_target"] == 0.85
    assert by_body["fusion"]["candidates"] == by_name["candidates"]
    assert (await _chat(client, model="auto", fusion={"quality_target": 0})).json()["fusion"][
        "policy"
    ] == "auto:0"
    for model in ("auto:cost", "gpt-4.1"):
        r = await _chat(client, model=model, fusion={"quality_target": 0.9})
        assert r.status_code == 400 and r.json()["error"]["param"] == "fusion.quality_target", r.text
    r = await _chat(client, model="auto", fusion={"quality_target": 1.5})
    assert r.status_code == 400 and "quality_target" in r.json()["error"]["message"]
