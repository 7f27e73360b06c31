"""Build the adapter for a provider kind. Each SDK is imported only inside its adapter module,
and only when a provider of that kind is configured."""

from __future__ import annotations

from deployments.providers.base import Endpoint, ProviderAdapter


def make_adapter(provider: str, kind: str, endpoint: Endpoint) -> ProviderAdapter:
    if kind == "anthropic":
        from deployments.providers.anthropic_adapter import AnthropicAdapter

        return AnthropicAdapter(provider, endpoint)
    if kind in ("openai", "openai_compatible"):
        from deployments.providers.openai_adapter import OpenAIAdapter

        return OpenAIAdapter(provider, endpoint, compatible=kind == "openai_compatible")
    if kind == "google":
        from deployments.providers.google_adapter import GoogleAdapter

        return GoogleAdapter(provider, endpoint)
    raise ValueError(f"unknown provider kind {kind!r}")
