"""What every load benchmark starts: the emulator in its own process and the full graph on a
local Ray (num_cpus=2), with no provider keys, all on 127.0.0.1."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

from serve_app.config import DEFAULT_CONFIG_PATH, load_config
from serve_app.emulator.server import free_port, wait_healthy


def parse_plan(text: str) -> dict[int, int]:
    """``"1:150,16:600"`` -> {concurrency: requests}."""
    return {int(c): int(n) for c, n in (item.split(":") for item in text.split(","))}


def config_with(change: dict[str, Any], path: Path) -> str:
    """The default configuration with ``change`` merged into its ``deployments`` section, one level
    deep (``{"classifier": {...}}`` updates the classifier's options), written to ``path`` and
    checked on load: an unknown or invalid field fails here, before any clock starts."""
    data = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    section = data["deployments"]
    for key, value in change.items():
        if isinstance(value, dict) and isinstance(section.get(key), dict):
            section[key] = {**section[key], **value}
        else:
            section[key] = value
    path.write_text(yaml.safe_dump(data))
    load_config(str(path))
    return str(path)


@contextmanager
def emulator(latency_scale: float) -> Iterator[str]:
    """The provider emulator in its own process; yields its base URL."""
    for var in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "GEMINI_API_KEY", "FUSION_LLAMA_API_KEY"):
        os.environ.pop(var, None)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "serve_app.cli", "emulator", "--port", str(port)]
    command += ["--latency-scale", str(latency_scale)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    try:
        wait_healthy(url, 30)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


@contextmanager
def graph(emulator_url: str, config_path: str | None = None) -> Iterator[str]:
    """The full application on a fresh local Ray, its providers on ``emulator_url``; yields its URL."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from ray import serve

    from serve_app.app import AppArgs, build_app

    try:
        ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        app = build_app(AppArgs(config_path=config_path, emulator_url=emulator_url))
        serve.run(app, name="fusion", route_prefix="/")
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


async def interleaved(
    router: str, keys: dict[str, str], body: dict[str, Any], rounds: int, warmup: int = 20
) -> dict[str, list[float]]:
    """Sequential chat requests, one per key in turn, ``rounds`` each after ``warmup`` rounds: the
    latency (ms) of each answered one, per key name. What a key's accounting costs a request."""
    out: dict[str, list[float]] = {name: [] for name in keys}
    async with httpx.AsyncClient(timeout=30) as client:
        for i in range(rounds + warmup):
            for name, key in keys.items():
                t0 = time.perf_counter()
                r = await client.post(
                    f"{router}/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}
                )
                if r.status_code == 200 and i >= warmup:
                    out[name].append((time.perf_counter() - t0) * 1000)
    return out


@contextmanager
def local_router(latency_scale: float, config_path: str | None = None) -> Iterator[tuple[str, str]]:
    """Yields (router base URL, emulator base URL); stops both at the end."""
    with emulator(latency_scale) as emulator_url, graph(emulator_url, config_path) as router:
        yield router, emulator_url
