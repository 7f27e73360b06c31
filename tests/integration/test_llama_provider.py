"""The self-hosted Llama's provider deployment on the real local Ray, with a tiny random Llama."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from deployments.providers.base import ChatMessage, Completion, ProviderRequest, StreamDelta
from serve_app.config import FusionConfig, LocalLlamaConfig, ProviderConfig
from tests.tiny_llama import build_tiny_llama

pytestmark = pytest.mark.integration


def test_llama_deployment_streams_and_completes(
    router: str, config: FusionConfig, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from ray import serve

    from deployments.provider import ProviderDeployment

    model_dir: Path = build_tiny_llama(tmp_path_factory.mktemp("llama"))
    local = LocalLlamaConfig(model=str(model_dir), throughput_tokens_per_s=10)
    cfg = config.model_copy(
        update={"providers": {**config.providers, "meta": ProviderConfig(kind="local_llama", local=local)}}
    )
    app = ProviderDeployment.options(  # type: ignore[attr-defined]
        name="Provider_meta_test", ray_actor_options={"num_cpus": 0.1}
    ).bind("meta", cfg)
    handle = serve.run(app, name="llama-test", route_prefix=None)
    try:
        request = ProviderRequest(
            model="meta-llama/Llama-3.1-8B-Instruct",
            messages=[ChatMessage("user", "hello there")],
            max_tokens=6,
        )
        done = handle.complete.remote(request).result()
        assert isinstance(done, Completion)
        assert done.usage.output_tokens <= 6 and done.usage.input_tokens > 0

        async def collect() -> list[StreamDelta]:
            stream: Any = handle.options(stream=True).stream.remote(request)
            return [item async for item in stream]

        deltas = asyncio.run(collect())
        assert "".join(d.text for d in deltas) == done.text
        assert deltas[-1].usage == done.usage
    finally:
        serve.delete("llama-test")
