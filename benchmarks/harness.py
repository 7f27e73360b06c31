"""What every load benchmark starts: the emulator in its own process and the full graph on a
local Ray (num_cpus=2), with no provider keys, all on 127.0.0.1."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from serve_app.emulator.server import free_port, wait_healthy


@contextmanager
def local_router(latency_scale: float, config_path: str | None = None) -> Iterator[tuple[str, str]]:
    """Yields (router base URL, emulator base URL); stops both at the end."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    for var in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "GEMINI_API_KEY", "FUSION_LLAMA_API_KEY"):
        os.environ.pop(var, None)
    emu_port = free_port()
    emulator_url = f"http://127.0.0.1:{emu_port}"
    emulator = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "serve_app.cli",
            "emulator",
            "--port",
            str(emu_port),
            "--latency-scale",
            str(latency_scale),
        ],
        stdout=subprocess.DEVNULL,
    )
    import ray
    from ray import serve

    from serve_app.app import AppArgs, build_app

    try:
        wait_healthy(emulator_url, 30)
        ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        app = build_app(AppArgs(config_path=config_path, emulator_url=emulator_url))
        serve.run(app, name="fusion", route_prefix="/")
        yield f"http://127.0.0.1:{port}", emulator_url
    finally:
        try:
            serve.shutdown()
            ray.shutdown()
        finally:
            emulator.terminate()
            emulator.wait(timeout=10)
