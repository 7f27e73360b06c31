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
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import positive_data_acceptance
from schemathesis.core.result import Ok
from schemathesis.generation import GenerationMode

from serve_app.accounting import Accountant, LocalLedgerClient
from serve_app.api import create_api
from serve_app.config import FusionConfig
from serve_app.emulator import EmulatorServer
from serve_app.emulator.server import free_port, wait_healthy
from serve_app.ledger import Ledger
from tests.unit.serve_app.inprocess import emulated_config, inprocess_gateway

ADMIN = "admin-key-for-the-fuzz-test"
_ADMIN = {"authorization": f"Bearer {ADMIN}"}
_CLIENT: dict[str, str] = {}  # the client key the router fixture creates

# Schema-valid requests the router may still refuse with a documented 4xx: rules across fields that
# the JSON schema does not state (a 'tool' message needs tool_call_id; a key budget needs a period).
EXCLUDED = [positive_data_acceptance]


class _Router:
    """The router's FastAPI app under uvicorn in a thread (one event loop, as in a replica)."""

    def __init__(self, config: FusionConfig, db: Path) -> None:
        self.ledger = Ledger(db, config.budgets.budgets())
        self.accountant = Accountant(
            config, LocalLedgerClient(self.ledger), environ={"FUSION_ADMIN_KEY": ADMIN}
        )
        app = create_api(config, inprocess_gateway(config), {}, accountant=self.accountant)
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


@pytest.fixture(scope="module")
def router(
    emulator: EmulatorServer, config: FusionConfig, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    cfg = emulated_config(config, emulator.url)
    with _Router(cfg, tmp_path_factory.mktemp("fuzz") / "ledger.db") as url:
        # a client key: with keys in the ledger every client route needs one, and a request without
        # it would be refused (401) before its body is read
        created = httpx.post(f"{url}/v1/admin/keys", json={"team": "fuzz", "name": "client"}, headers=_ADMIN)
        assert created.status_code == 201, created.text
        _CLIENT["authorization"] = f"Bearer {created.json()['key']}"
        yield url


def _operations(url: str) -> list[Any]:
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result  # a route the document describes wrongly fails here
        operations.append(result.ok())
    return operations


def _fuzz(operation: Any, mode: GenerationMode, examples: int) -> None:
    operator = operation.path.startswith("/v1/admin") or operation.path == "/v1/router/circuits/reset"
    headers = _ADMIN if operator else _CLIENT

    @given(case=operation.as_strategy(mode))
    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        case.call_and_validate(headers=headers, excluded_checks=EXCLUDED)

    run()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_every_answer_is_documented_and_never_a_500(router: str, mode: GenerationMode) -> None:
    """Per route: 15 requests its schema allows (positive) or breaks (negative: wrong types, missing
    fields, bad JSON values), each checked by schemathesis's default checks."""
    operations = _operations(router)
    failures, fuzzed = [], set()
    for operation in operations:
        try:
            _fuzz(operation, mode, examples=15)
            fuzzed.add(operation.label)
        except Unsatisfiable:  # negative: a route with no body, query or free path part to break
            continue
        except Exception as exc:  # every route's failures, not only the first route's
            failures.append(f"{operation.label}: {exc}")
    assert not failures, "\n\n".join(failures)
    assert fuzzed >= {"POST /v1/chat/completions", "POST /v1/admin/keys", "POST /v1/router/feedback"}


def test_other_methods_get_405_with_the_allowed_ones(router: str) -> None:
    """A method a path does not take: 405 in the error envelope, with ``Allow`` listing every
    method of the path (a path can have several routes: GET and POST /v1/admin/keys)."""
    schema = schemathesis.openapi.from_url(f"{router}/openapi.json").raw_schema
    for path, item in schema["paths"].items():
        documented = {m.upper() for m in item}
        concrete = path.replace("{key_id}", "k1")
        for method in sorted({"GET", "POST", "PUT", "PATCH", "DELETE", "TRACE"} - documented):
            r = httpx.request(method, f"{router}{concrete}")
            assert r.status_code == 405, (method, path, r.text)
            assert r.json()["error"]["code"] == "method_not_allowed"
            allowed = set(r.headers["allow"].split(", "))
            assert allowed - {"HEAD"} == documented, (method, path, r.headers["allow"])


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
