"""The provider deployment's shell (deployments/provider.py), without Ray: answers carry the
replica's loop lag for the ingress's hedge guard."""

from __future__ import annotations

from typing import Any

from deployments.provider import ProviderDeployment
from deployments.providers.base import ChatMessage, ProviderRequest
from serve_app.config import FusionConfig
from serve_app.emulator import EmulatorServer
from tests.unit.serve_app.inprocess import emulated_config

REQUEST = ProviderRequest(model="gpt-4.1", messages=[ChatMessage("user", "hello")], max_tokens=5)


async def test_every_answer_carries_how_late_the_replica_ran(
    config: FusionConfig, emu: EmulatorServer
) -> None:
    cls: Any = ProviderDeployment.func_or_class  # type: ignore[attr-defined]
    replica = cls.__new__(cls)
    await replica.__init__("openai", emulated_config(config, emu.url))
    try:
        replica.lag.observe(0.25, replica.lag.clock())  # its loop ran a quarter second late just now
        done = await replica.complete(REQUEST)
        assert done.text and done.replica_lag_s == 0.25 and 0 < done.replica_s < 5
        deltas = [d async for d in replica.stream(REQUEST)]
        assert deltas and all(d.replica_lag_s == 0.25 for d in deltas)  # coalesced: often one
        assert all(0 < d.replica_s < 5 for d in deltas)
        assert replica.call_count() == 2
    finally:
        replica._lag_task.cancel()
