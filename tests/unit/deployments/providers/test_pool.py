"""Load balancing across endpoints of one provider, on real adapters against the emulator."""

from __future__ import annotations

import asyncio

from deployments.providers.base import ChatMessage, Endpoint, ProviderRequest
from deployments.providers.openai_adapter import OpenAIAdapter
from deployments.providers.pool import EndpointPool
from serve_app.config import load_config
from serve_app.emulator import EmulatorServer
from serve_app.emulator.server import free_port
from serve_app.errors import ProviderConnectionError
from serve_app.health import BreakerConfig

REQ = ProviderRequest(model="gpt-4.1", messages=[ChatMessage("user", "hi")], max_tokens=3)


def _adapter(url: str) -> OpenAIAdapter:
    return OpenAIAdapter("openai", Endpoint(base_url=url + "/openai/v1", api_key="k", emulated=True))


async def test_least_outstanding_spreads_concurrent_calls(emu: EmulatorServer) -> None:
    await emu_slow(emu)
    pool = EndpointPool("openai", [("a", _adapter(emu.url)), ("b", _adapter(emu.url))])
    await asyncio.gather(*(pool.complete(REQ) for _ in range(8)))
    assert sorted(m.calls for m in pool.members) == [4, 4]
    await pool.aclose()


async def emu_slow(emu: EmulatorServer) -> None:
    import httpx

    async with httpx.AsyncClient() as c:
        await c.put(f"{emu.url}/admin/profiles/gpt-4.1", json={"ttft_ms": 50, "tokens_per_s": 1000})
        await c.put(f"{emu.url}/admin/latency_scale", json={"scale": 1.0})


async def test_latency_breaks_ties_and_dead_endpoint_leaves_rotation(emu: EmulatorServer) -> None:
    import httpx

    async with httpx.AsyncClient() as c:
        await c.put(f"{emu.url}/admin/latency_scale", json={"scale": 0.0})
    dead = f"http://127.0.0.1:{free_port()}"
    pool = EndpointPool(
        "openai",
        [("dead", _adapter(dead)), ("live", _adapter(emu.url))],
        BreakerConfig(failure_threshold=1, open_s=30),
    )
    failures = 0
    for _ in range(6):
        try:
            await pool.complete(REQ)
        except ProviderConnectionError:
            failures += 1
    assert failures == 1  # the dead endpoint failed once, then left rotation
    dead_member, live_member = pool.members
    assert dead_member.calls == 1 and live_member.calls == 5
    await pool.aclose()


def test_config_lists_extra_endpoints() -> None:
    config = load_config()
    raw = config.providers["openai"].model_dump()
    raw["extra_endpoints"] = [{"name": "eu", "api_key_env": "OPENAI_EU_KEY", "base_url": "http://eu"}]
    spec = type(config.providers["openai"]).model_validate(raw)
    names = [(n, e.base_url, e.api_key) for n, e in spec.endpoints("http://emu", {"OPENAI_EU_KEY": "k2"})]
    assert names == [("default", "http://emu/openai/v1", "emulator"), ("eu", "http://eu", "k2")]
