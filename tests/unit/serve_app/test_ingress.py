"""The ingress's in-process provider path (deployments.api_providers_in_ingress and
api_providers_when_idle), without Ray."""

from __future__ import annotations

from typing import Any

import pytest

from deployments.providers.base import ChatMessage, ProviderRequest
from serve_app.config import FusionConfig
from serve_app.emulator import EmulatorServer
from serve_app.errors import ProviderError
from serve_app.in_flight import InFlightCount
from serve_app.ingress import Ingress
from tests.conftest import requests_seen, set_fault
from tests.unit.serve_app.inprocess import emulated_config


class _Ingress:
    """The ingress's provider-calling methods, on a bare object (no Serve, no Ray)."""

    def __init__(self, config: FusionConfig) -> None:
        from deployments.provider import ProviderCore

        d = config.deployments
        self._cores = {name: ProviderCore(name, config) for name in d.ingress_adapters(config)}
        self._always_here = set(d.in_ingress(config))
        self._requests = InFlightCount()
        self._providers: dict[str, Any] = {}
        self._streams: dict[str, Any] = {}
        self._arrivals = None

    _plain: Any = Ingress
    _core = _plain.func_or_class._core
    _complete = _plain.func_or_class._complete
    _stream = _plain.func_or_class._stream
    _count = _plain.func_or_class._count


def _ingress(config: FusionConfig, emu: EmulatorServer, option: str = "api_providers_in_ingress") -> Any:
    cfg = emulated_config(config, emu.url)
    deployments = cfg.deployments.model_copy(update={option: True})
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


class _Deployment:
    """A provider deployment's handle that records the calls it is given."""

    def __init__(self) -> None:
        self.calls = 0
        self.complete = self

    async def remote(self, request: ProviderRequest) -> str:
        self.calls += 1
        return "through the deployment"


async def test_when_idle_calls_go_here_only_while_the_replica_is_alone(
    config: FusionConfig, emu: EmulatorServer
) -> None:
    ingress = _ingress(config, emu, "api_providers_when_idle")
    ingress._providers["openai"] = deployment = _Deployment()
    ingress._requests.count = 1  # this request alone: the adapter here, no hop
    done = await ingress._complete("openai", REQUEST)
    assert done.usage.output_tokens == 5 and requests_seen(emu)["gpt-4.1"] == 1
    ingress._requests.count = 3  # others in flight: the provider's deployment takes it
    assert await ingress._complete("openai", REQUEST) == "through the deployment"
    assert deployment.calls == 1 and requests_seen(emu)["gpt-4.1"] == 1


async def test_in_ingress_calls_go_here_whatever_the_load(config: FusionConfig, emu: EmulatorServer) -> None:
    ingress = _ingress(config, emu)
    ingress._requests.count = 5
    done = await ingress._complete("openai", REQUEST)
    assert done.usage.output_tokens == 5 and requests_seen(emu)["gpt-4.1"] == 1
