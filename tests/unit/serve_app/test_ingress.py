"""The ingress's in-process provider path (deployments.api_providers_in_ingress, and
api_providers_when_idle with api_providers_local_calls), without Ray."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from deployments.providers.base import ChatMessage, Completion, ProviderRequest, StreamDelta, Usage
from serve_app.config import FusionConfig
from serve_app.emulator import EmulatorServer
from serve_app.errors import ProviderError
from serve_app.in_flight import InFlightCount
from serve_app.ingress import Ingress
from serve_app.loop_lag import Lateness, LoopLag
from tests.conftest import requests_seen, set_fault
from tests.unit.serve_app.inprocess import emulated_config


class _Ingress:
    """The ingress's provider-calling methods, on a bare object (no Serve, no Ray)."""

    def __init__(self, config: FusionConfig) -> None:
        from deployments.provider import ProviderCore

        d = config.deployments
        self._cores = {name: ProviderCore(name, config) for name in d.ingress_adapters(config)}
        self._always_here = set(d.in_ingress(config))
        self._agreed: set[str] = set()
        self._local_calls = 0
        self._local_limit = d.api_providers_local_calls
        self._verdicts: dict[str, Any] = {}
        self._config = config
        self._requests = InFlightCount()
        self._providers: dict[str, Any] = {}
        self._streams: dict[str, Any] = {}
        self._arrivals = None
        self._lateness = Lateness(LoopLag())

    _plain: Any = Ingress
    _core = _plain.func_or_class._core
    _complete = _plain.func_or_class._complete
    _stream = _plain.func_or_class._stream
    _count = _plain.func_or_class._count
    _check_endpoints_once = _plain.func_or_class._check_endpoints_once


def _ingress(
    config: FusionConfig, emu: EmulatorServer, option: str = "api_providers_in_ingress", local_calls: int = 1
) -> Any:
    cfg = emulated_config(config, emu.url)
    deployments = cfg.deployments.model_copy(update={option: True, "api_providers_local_calls": local_calls})
    return _Ingress(cfg.model_copy(update={"deployments": deployments}))


REQUEST = ProviderRequest(model="gpt-4.1", messages=[ChatMessage("user", "hello")], max_tokens=5)


async def test_calls_go_straight_to_the_adapter(config: FusionConfig, emu: EmulatorServer) -> None:
    ingress = _ingress(config, emu)
    assert sorted(ingress._cores) == ["anthropic", "google", "meta", "openai"]  # meta: emulated here
    done = await ingress._complete("openai", REQUEST)
    assert done.usage.output_tokens == 5
    text = "".join([d.text async for d in ingress._stream("openai", REQUEST)])
    assert text.startswith("[gpt-4.1]")
    assert requests_seen(emu)["gpt-4.1"] == 2


async def test_provider_errors_are_raised_as_ours(config: FusionConfig, emu: EmulatorServer) -> None:
    ingress = _ingress(config, emu)
    set_fault(emu, "gpt-4.1", kind="http_error", status=503)
    with pytest.raises(ProviderError) as complete_error:
        await ingress._complete("openai", REQUEST)
    with pytest.raises(ProviderError) as stream_error:
        _ = [d async for d in ingress._stream("openai", REQUEST)]
    assert complete_error.value.status_code == stream_error.value.status_code == 503


class _Method:
    def __init__(self, remote: Any) -> None:
        self.remote = remote


class _Deployment:
    """A provider deployment's handle that records the calls it is given and says where its own
    calls go (``answer``: its endpoint summary, or an exception to raise)."""

    def __init__(self, answer: Any) -> None:
        self.calls = 0
        self.answer = answer
        self.complete = _Method(self._complete)
        self.endpoints = _Method(self._endpoints)

    async def _complete(self, request: ProviderRequest) -> str:
        self.calls += 1
        return "through the deployment"

    async def _endpoints(self) -> Any:
        if isinstance(self.answer, Exception):
            raise self.answer
        return [list(e) for e in self.answer]  # as a serializer without tuples would return it


async def test_when_idle_calls_go_here_only_while_the_replica_has_room(
    config: FusionConfig, emu: EmulatorServer
) -> None:
    ingress = _ingress(config, emu, "api_providers_when_idle")
    ingress._providers["openai"] = deployment = _Deployment(ingress._cores["openai"].endpoints)
    assert await ingress._check_endpoints_once() is False  # answered, and agrees
    done = await ingress._complete("openai", REQUEST)  # no other call here: the adapter, no hop
    assert done.usage.output_tokens == 5 and requests_seen(emu)["gpt-4.1"] == 1
    assert ingress._local_calls == 0
    # a stream made here holds the one local slot until it ends: a call meanwhile goes through the
    # provider's deployment; once the stream is done, calls are made here again
    stream = ingress._stream("openai", REQUEST)
    first = await stream.__anext__()
    assert first.text and ingress._local_calls == 1
    assert await ingress._complete("openai", REQUEST) == "through the deployment"
    _ = [d async for d in stream]
    assert ingress._local_calls == 0 and deployment.calls == 1
    set_fault(emu, "gpt-4.1", kind="http_error", status=503)  # a failed call frees its slot too
    with pytest.raises(ProviderError):
        await ingress._complete("openai", REQUEST)
    assert ingress._local_calls == 0 and deployment.calls == 1 and requests_seen(emu)["gpt-4.1"] == 3


async def test_local_calls_bounds_the_calls_made_here_at_once(
    config: FusionConfig, emu: EmulatorServer
) -> None:
    ingress = _ingress(config, emu, "api_providers_when_idle", local_calls=2)
    ingress._providers["openai"] = deployment = _Deployment(ingress._cores["openai"].endpoints)
    assert await ingress._check_endpoints_once() is False
    streams = [ingress._stream("openai", REQUEST) for _ in range(2)]
    for stream in streams:
        await stream.__anext__()  # both made here: two slots
    assert ingress._local_calls == 2 and requests_seen(emu)["gpt-4.1"] == 2
    assert await ingress._complete("openai", REQUEST) == "through the deployment"  # the third
    for stream in streams:
        _ = [d async for d in stream]
    done = await ingress._complete("openai", REQUEST)
    assert done.usage.output_tokens == 5 and deployment.calls == 1 and ingress._local_calls == 0


async def test_when_idle_waits_for_the_deployment_to_reach_the_same_endpoints(
    config: FusionConfig,
    emu: EmulatorServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An ingress on a node without OPENAI_API_KEY would answer from the emulator while the
    provider's deployment calls the live API: lone requests then go through the deployment too."""
    from deployments.provider import ProviderCore

    ingress = _ingress(config, emu, "api_providers_when_idle")
    ours = ingress._cores["openai"].endpoints
    assert ours[0][2] == "emulated"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-on-the-provider-node")
    live = ProviderCore("openai", emulated_config(config, emu.url)).endpoints
    assert live[0][2] == "live" and "sk-on-the-provider-node" not in str(live)  # a digest, not the key
    ingress._providers["openai"] = deployment = _Deployment(RuntimeError("not up yet"))

    # before any answer: through the deployment; a deployment that fails to answer keeps it pending
    assert await ingress._complete("openai", REQUEST) == "through the deployment"
    from ray.exceptions import RayError

    deployment.answer = RayError("replica starting")
    assert await ingress._check_endpoints_once() is True
    assert await ingress._complete("openai", REQUEST) == "through the deployment"

    deployment.answer = live  # it calls the live API, this replica would call the emulator
    with caplog.at_level(logging.WARNING, logger="ray.serve"):
        assert await ingress._check_endpoints_once() is False
    assert "every call goes through the deployment" in caplog.text and "OPENAI_API_KEY" in caplog.text
    assert await ingress._complete("openai", REQUEST) == "through the deployment"

    deployment.answer = ours  # the same endpoints with the same key: the shortcut opens
    assert await ingress._check_endpoints_once() is False
    done = await ingress._complete("openai", REQUEST)
    assert done.usage.output_tokens == 5 and requests_seen(emu)["gpt-4.1"] == 1

    deployment.answer = RayError("replica restarting")  # no answer: the last verdict stands
    assert await ingress._check_endpoints_once() is False
    assert "openai" in ingress._agreed

    deployment.answer = live  # the deployment changed (redeployed with a key): closed again
    assert await ingress._check_endpoints_once() is False
    assert await ingress._complete("openai", REQUEST) == "through the deployment"
    assert deployment.calls == 4 and requests_seen(emu)["gpt-4.1"] == 1

    # both live, with different keys (another account): not the same endpoints either
    from deployments.provider import describe

    monkeypatch.setenv("OPENAI_API_KEY", "sk-on-the-ingress-node")
    ingress._cores["openai"] = ProviderCore("openai", emulated_config(config, emu.url))
    assert describe(ingress._cores["openai"].endpoints) == describe(live)
    caplog.clear()
    ingress._verdicts.clear()
    with caplog.at_level(logging.WARNING, logger="ray.serve"):
        assert await ingress._check_endpoints_once() is False
    assert "openai" not in ingress._agreed and "with another key" in caplog.text


async def test_in_ingress_calls_go_here_whatever_the_load(config: FusionConfig, emu: EmulatorServer) -> None:
    ingress = _ingress(config, emu)
    ingress._local_calls = 5  # the bound of api_providers_when_idle does not apply
    done = await ingress._complete("openai", REQUEST)
    assert done.usage.output_tokens == 5 and requests_seen(emu)["gpt-4.1"] == 1


class _Answering:
    """A provider deployment's handles that give stamped answers: one completion, one stream."""

    def __init__(self, completion: Completion, deltas: list[StreamDelta], hop_s: float = 0.0) -> None:
        self.complete = _Method(self._complete)
        self.stream = _Method(self._stream)
        self.completion, self.deltas, self.hop_s = completion, deltas, hop_s

    async def _complete(self, request: ProviderRequest) -> Completion:
        await asyncio.sleep(self.hop_s)  # the way there and back, outside the provider replica's call
        return self.completion

    def _stream(self, request: ProviderRequest) -> Any:
        deltas = self.deltas

        class _Generator:
            def __aiter__(self) -> Any:
                return self._items()

            async def _items(self) -> Any:
                for delta in deltas:
                    yield delta

            def cancel(self) -> None:
                pass

        return _Generator()


async def test_answers_through_a_deployment_report_what_the_hop_added(
    config: FusionConfig, emu: EmulatorServer
) -> None:
    """The hedge guard learns, per provider, how much of a call through its deployment was spent on
    our side of the hop, from the stamps on the answers; a call made here carries none (this
    replica's own lag covers it)."""
    ingress = _ingress(config, emu, "api_providers_when_idle")  # no endpoint check: every call hops
    stamped = Completion("hi", "stop", Usage(), replica_lag_s=0.3)
    ingress._providers["openai"] = _Answering(stamped, [])
    deltas = [StreamDelta(text="a", replica_lag_s=0.2), StreamDelta(finish_reason="stop", replica_lag_s=0.7)]
    ingress._streams["anthropic"] = _Answering(stamped, deltas)
    assert ingress._lateness("openai") == ingress._lateness("anthropic") == 0.0
    assert await ingress._complete("openai", REQUEST) is stamped
    assert ingress._lateness("openai") == 0.3 and ingress._lateness("anthropic") == 0.0
    assert [d.text async for d in ingress._stream("anthropic", REQUEST)] == ["a", ""]
    assert ingress._lateness("anthropic") == 0.2  # the first item's: later ones wait on our client too
    slow_hop = Completion("hi", "stop", Usage(), replica_s=0.01)  # the replica's call took 10 ms ...
    ingress._providers["google"] = _Answering(slow_hop, [], hop_s=0.2)  # ... the whole call 200 more
    await ingress._complete("google", REQUEST)
    assert ingress._lateness("google") >= 0.19
