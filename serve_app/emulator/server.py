"""Run the emulator: in a background thread (tests) or in the foreground (CLI)."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import httpx
import uvicorn

from serve_app.emulator.app import create_app


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class EmulatorServer:
    """A uvicorn server for the emulator on 127.0.0.1, started in a daemon thread."""

    def __init__(self, host: str = "127.0.0.1", port: int | None = None, latency_scale: float = 1.0) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.app: Any = create_app(latency_scale=latency_scale)
        config = uvicorn.Config(
            self.app,
            host=self.host,
            port=self.port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_keep_alive=30,
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout_s: float = 10.0) -> EmulatorServer:
        self._thread = threading.Thread(target=self._server.run, name="fusion-emulator", daemon=True)
        self._thread.start()
        wait_healthy(self.url, timeout_s)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_healthy(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"emulator at {url} did not become healthy in {timeout_s}s")
        time.sleep(0.05)


def serve_forever(host: str, port: int, latency_scale: float) -> None:
    uvicorn.run(
        create_app(latency_scale=latency_scale),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_keep_alive=30,
    )
