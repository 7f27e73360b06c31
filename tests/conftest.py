"""Shared fixtures: a provider emulator on 127.0.0.1, the default config, and a clean environment."""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import pytest

# Nothing in the tests may reach a real provider or a model hub.
for _var in (
    "ANTHROPIC_API_KEY",
    "OPENAI_API_KEY",
    "GEMINI_API_KEY",
    "GOOGLE_API_KEY",
    "FUSION_LLAMA_API_KEY",
    "FUSION_CONFIG",
    "FUSION_EMULATOR_URL",
):
    os.environ.pop(_var, None)
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"

from serve_app.config import FusionConfig, load_config  # noqa: E402
from serve_app.emulator import EmulatorServer  # noqa: E402


@pytest.fixture(scope="session")
def emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(latency_scale=0.0) as server:
        yield server


@pytest.fixture
def emu(emulator: EmulatorServer) -> Iterator[EmulatorServer]:
    """The session emulator, with faults, counters and latency profiles reset and no delays, before
    and after the test."""
    httpx.delete(f"{emulator.url}/admin/faults")
    httpx.delete(f"{emulator.url}/admin/stats")
    httpx.delete(f"{emulator.url}/admin/profiles")
    httpx.put(f"{emulator.url}/admin/latency_scale", json={"scale": 0.0})
    yield emulator
    httpx.delete(f"{emulator.url}/admin/faults")
    httpx.put(f"{emulator.url}/admin/latency_scale", json={"scale": 0.0})


@pytest.fixture(scope="session")
def config() -> FusionConfig:
    return load_config()


def set_fault(emulator: EmulatorServer, model: str, **spec: object) -> None:
    response = httpx.put(f"{emulator.url}/admin/faults/{model}", json=spec)
    response.raise_for_status()


def requests_seen(emulator: EmulatorServer) -> dict[str, int]:
    counts: dict[str, int] = httpx.get(f"{emulator.url}/admin/stats").json()["requests"]
    return counts


def sampling_seen(emulator: EmulatorServer, model: str) -> dict[str, float | str]:
    """The sampling parameters (temperature, top_p, penalties, reasoning effort or thinking budget)
    of the last request the emulator took for ``model``."""
    seen: dict[str, float | str] = httpx.get(f"{emulator.url}/admin/stats").json()["sampling"][model]
    return seen


class Clock:
    """A clock the test moves by hand: pass it where code takes a ``clock`` callable."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
