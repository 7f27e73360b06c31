"""A Gateway wired to in-process adapters (no Ray), for unit tests of the request path."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from pathlib import Path

import yaml

from deployments.provider import ProviderCore
from deployments.providers.base import Completion, ProviderRequest, StreamDelta
from predictors.classification import Classification
from predictors.task_classifier import EmbeddingClassifier
from serve_app.config import DEFAULT_CONFIG_PATH, EmulatorConfig, FusionConfig, ProviderConfig
from serve_app.errors import ProviderError
from serve_app.gateway import Gateway


def emulated_config(config: FusionConfig, emulator_url: str, **server: float) -> FusionConfig:
    """Every provider on the emulator (the self-hosted one over the OpenAI-compatible protocol)."""
    providers = {
        name: ProviderConfig(kind="openai_compatible", api_key_env="FUSION_LLAMA_API_KEY") if p.local else p
        for name, p in config.providers.items()
    }
    updates: dict[str, object] = {
        "emulator": EmulatorConfig(url=emulator_url),
        "providers": providers,
        # no hedging unless a test asks for it: a hedge racing a timeout would make tests flaky
        "retry": config.retry.model_copy(update={"hedge_after_s": None, "stall_hedge_after_s": None}),
    }
    if server:
        updates["server"] = config.server.model_copy(update=server)
    return config.model_copy(update=updates)


@functools.cache
def config_file(tmp_path: Path, ledger: Path) -> Path:
    """The shipped configuration as a file whose ledger is ``ledger`` (for CLI tests)."""
    shipped = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({**shipped, "ledger": {"path": str(ledger)}}))
    return path


def _classifier() -> EmbeddingClassifier:
    return EmbeddingClassifier()


def inprocess_gateway(config: FusionConfig) -> Gateway:
    cores = {name: ProviderCore(name, config) for name in config.providers}
    classifier = _classifier()

    async def classify(text: str, quality: bool) -> Classification:
        return classifier.classify(text, quality)

    async def call(provider: str, request: ProviderRequest) -> Completion:
        result = await cores[provider].complete(request)
        if isinstance(result, ProviderError):
            raise result
        return result

    async def stream(provider: str, request: ProviderRequest) -> AsyncIterator[StreamDelta]:
        async for item in cores[provider].stream(request):
            if isinstance(item, ProviderError):
                raise item
            yield item

    return Gateway(config, classify, call, stream)
