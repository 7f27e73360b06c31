"""Bad input, generated: schemathesis reads the router's OpenAPI document and sends what it
describes and what it does not (wrong types, missing fields, other methods), on real HTTP to a
router on 127.0.0.1 with a ledger, keys and the admin API on. Every answer must carry a status the
document lists for its route, in the documented content type and body schema, and never a 500.
``benchmarks/bad_input.py`` runs the same checks with more examples against the full graph."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
import uvicorn

from benchmarks.bad_input import Tally, probe
from serve_app.accounting import Accountant, LocalLedgerClient
from serve_app.api import create_api
from serve_app.caching import Cache, LocalCacheClient
from serve_app.config import FusionConfig
from serve_app.emulator import EmulatorServer
from serve_app.emulator.server import free_port, wait_healthy
from serve_app.ledger import Ledger
from serve_app.response_cache import CacheConfig, ResponseCache
from tests.unit.serve_app.inprocess import emulated_config, inprocess_gateway

ADMIN = "admin-key-for-the-fuzz-test"
_ADMIN = {"authorization": f"Bearer {ADMIN}"}
_CLIENT: dict[str, str] = {}  # the client key the router fixture creates


class _Router:
    """The router's FastAPI app under uvicorn in a thread (one event loop, as in a replica)."""

    def __init__(self, config: FusionConfig, db: Path) -> None:
        self.ledger = Ledger(db, config.budgets.budgets())
        self.accountant = Accountant(
            config, LocalLedgerClient(self.ledger), environ={"FUSION_ADMIN_KEY": ADMIN}
        )
        self.cache = ResponseCache(config.cache)
        front = Cache(config.cache, LocalCacheClient(self.cache))
        app = create_api(config, inprocess_gateway(config), {}, accountant=self.accountant, cache=front)
        self.port = free_port()
        server_config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        self.server = uvicorn.Server(server_config)
        self.thread = threading.Thread(target=asyncio.run, args=(self._serve(),), daemon=True)

    async def _serve(self) -> None:
        await self.accountant.refresh()
        await self.server.serve()

    def __enter__(self) -> str:
        self.thread.start()
        url = f"http://127.0.0.1:{self.port}"
        wait_healthy(url, 30)
        return url

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.ledger.close()
        self.cache.close()


@pytest.fixture(scope="module")
def router(
    emulator: EmulatorServer, config: FusionConfig, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("fuzz")
    cache = CacheConfig(enabled=True, path=str(folder / "cache.db"))
    cfg = emulated_config(config, emulator.url).model_copy(update={"cache": cache})
    with _Router(cfg, folder / "ledger.db") as url:
        # a client key: with keys in the ledger every client route needs one, and a request without
        # it would be refused (401) before its body is read
        created = httpx.post(f"{url}/v1/admin/keys", json={"team": "fuzz", "name": "client"}, headers=_ADMIN)
        assert created.status_code == 201, created.text
        _CLIENT["authorization"] = f"Bearer {created.json()['key']}"
        yield url


def test_generated_requests_get_documented_answers(router: str, config: FusionConfig) -> None:
    """Per route, 15 requests its schema allows (positive) and 15 it breaks (negative: wrong types,
    missing fields, bodies that are not JSON), every method a path does not take, and bodies over
    the limit; each answer checked by schemathesis's default checks (``benchmarks.bad_input.probe``,
    which the benchmark runs with more examples against the full graph)."""
    tally = Tally()
    limit = config.server.max_body_bytes
    routes, fuzzed = probe(router, _ADMIN, _CLIENT, examples=15, limit=limit, tally=tally)
    failures = [f"{key}\n  {tally.examples[key]}" for key in tally.failures]
    assert not failures, "\n".join(failures)
    assert not [s for s in tally.statuses if s.startswith("5")], tally.statuses
    assert routes == 18 and {
        "positive POST /v1/chat/completions",
        "negative POST /v1/chat/completions",
        "negative POST /v1/admin/keys",
        "negative PATCH /v1/admin/keys/{key_id}",
        "negative POST /v1/router/feedback",
        "negative GET /v1/admin/usage",
        "negative GET /v1/router/usage",
        "negative DELETE /v1/admin/cache",
    } <= set(fuzzed)
    assert tally.by_route["positive POST /v1/chat/completions"]["200"] > 0  # some reach a provider
    assert tally.by_route["positive GET /v1/admin/usage"]["200"] > 0
    assert tally.by_route["positive GET /v1/router/usage"]["200"] > 0
    assert tally.statuses["405"] == 72  # every method a path does not take
    # both bodies over the limit (a forbidden key body past 64 KiB may add a 413 of its own)
    assert [tally.by_route[f"oversized body ({how} length)"] for how in ("declared", "chunked")] == [
        {"413": 1},
        {"413": 1},
    ]


@pytest.mark.parametrize("stream", [False, True])
def test_a_plain_answer_matches_the_document(router: str, stream: bool) -> None:
    """The common case, not left to chance: a streamed answer is server-sent events as documented."""
    operation = schemathesis.openapi.from_url(f"{router}/openapi.json")["/v1/chat/completions"]["POST"]
    body: Any = {"model": "auto", "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
    case = operation.Case(body=body, media_type="application/json")
    response = case.call_and_validate(headers=_CLIENT)
    assert response.status_code == 200
    assert response.headers["content-type"][0].startswith(
        "text/event-stream" if stream else "application/json"
    )
