"""Does any input make the router answer outside its documented statuses, or with a 500?

    python -m benchmarks.bad_input [--examples 100] [--out benchmarks/results/bad_input.json]

Starts the emulator and the full graph on a local Ray (num_cpus=2) with a ledger in a temporary
SQLite file, the response cache on, the admin API on and one client key, all on 127.0.0.1.
schemathesis reads the router's own OpenAPI document and, per route, sends ``--examples`` requests
the schema allows (positive) and ``--examples`` it forbids (negative: wrong types, missing fields,
bodies that are not JSON), each through the real Serve proxy, and runs its default checks on every
answer: a status the document lists for the route, the documented content type, headers and body
schema, no 5xx, and a 4xx for what the schema forbids. Schema-valid requests may still be refused
with a documented 4xx (rules across fields the schema does not state), so that one check is left
out. Then, per path, every method the path does not take (405 with ``Allow``), and bodies over the
size limit (413, with and without Content-Length).

Writes benchmarks/results/bad_input.json (requests, statuses, failures by check) and bad_input.png.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import schemathesis
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from jsonschema import Draft202012Validator
from schemathesis.checks import positive_data_acceptance
from schemathesis.config import SchemathesisConfig
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Ok
from schemathesis.generation import GenerationMode

from benchmarks.harness import local_router
from benchmarks.report import pyplot, write_result
from serve_app.config import DEFAULT_CONFIG_PATH, load_config

RESULTS = Path(__file__).resolve().parent / "results"
# Schema-valid requests the router may still refuse with a documented 4xx: rules across fields that
# the JSON schema does not state (tool_choice needs tools; a key budget needs a period).
EXCLUDED = [positive_data_acceptance]
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "TRACE")


def write_config(workdir: Path) -> Path:
    """The default configuration, its ledger and its response cache (on, so that its routes and the
    lookup are reached) in ``workdir``, every provider on the emulator."""
    data = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    data["providers"]["meta"] = {"kind": "openai_compatible", "api_key_env": "FUSION_LLAMA_API_KEY"}
    data["deployments"]["provider_overrides"] = {}
    data["ledger"] = {"path": str(workdir / "ledger.db")}
    data["cache"] = {"enabled": True, "path": str(workdir / "cache.db")}
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    load_config(path)
    return path


# A body the schema forbids is refused: with 400 (or 404 for an unknown id), or with 413 when it is
# also over the route's size limit (a list past its maxItems of long strings), which schemathesis's
# default list of rejections leaves out.
REJECTIONS = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429"]
CONFIG = SchemathesisConfig.from_dict(
    {"checks": {"negative_data_rejection": {"expected-statuses": REJECTIONS}}}
)


class Tally:
    def __init__(self) -> None:
        self.statuses: collections.Counter[str] = collections.Counter()
        self.by_route: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        self.failures: collections.Counter[str] = collections.Counter()
        self.examples: dict[str, str] = {}  # one failing request per failure kind
        # negative cases whose query, as sent, was valid (``valid_as_sent``): per route
        self.valid_as_sent: collections.Counter[str] = collections.Counter()

    def record(self, route: str, status: int, failures: list[str], example: str) -> None:
        self.statuses[str(status)] += 1
        self.by_route[route][str(status)] += 1
        for failure in failures:
            key = f"{route}: {failure}"
            self.failures[key] += 1
            self.examples.setdefault(key, example)


def _text_meets(text: str, schema: dict[str, Any]) -> bool:
    """A query value (text) against its schema: an integer is written in digits, anything else is
    the text itself."""
    if schema.get("type") == "integer":
        return re.fullmatch(r"-?[0-9]+", text) is not None and Draft202012Validator(schema).is_valid(
            int(text)
        )
    return Draft202012Validator(schema).is_valid(text)


def valid_as_sent(operation: Any, url: str) -> bool:
    """Whether the query a request carried, read as the text it is, meets the operation's query
    parameters. A negative case can lose what broke it when it is written into a URL: schemathesis
    sends ``false`` for a string as the text ``false``, and a lone string for an array as a
    one-item array would be sent (its issue #3056); the router rightly takes those."""
    sent: dict[str, list[str]] = {}
    for name, value in parse_qsl(urlsplit(url).query, keep_blank_values=True):
        sent.setdefault(name, []).append(value)
    declared = {
        p["name"]: p for p in operation.definition.raw.get("parameters", []) if p.get("in") == "query"
    }
    if set(sent) - set(declared) or any(p.get("required") and n not in sent for n, p in declared.items()):
        return False
    for name, values in sent.items():
        schema = declared[name]["schema"]
        if schema.get("type") == "array":
            items = schema.get("items", {})
            ok = len(values) <= schema.get("maxItems", len(values)) and all(
                _text_meets(v, items) for v in values
            )
        else:
            ok = len(values) == 1 and _text_meets(values[0], schema)
        if not ok:
            return False
    return True


def fuzz(operation: Any, mode: GenerationMode, examples: int, headers: dict[str, str], tally: Tally) -> bool:
    """Run ``examples`` generated requests; every answer is checked and tallied (a failure does not
    stop the run). False when the route has nothing to generate in this mode."""

    @given(case=operation.as_strategy(mode))
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        response = case.call(headers=headers)
        failures: list[str] = []
        try:
            case.validate_response(response, headers=headers, excluded_checks=EXCLUDED)
        except FailureGroup as group:
            failures = [f"{type(e).__name__} ({response.status_code})" for e in group.exceptions]
        if (
            failures == [f"AcceptedNegativeData ({response.status_code})"]
            and not operation.body  # only the query could have been broken
            and valid_as_sent(operation, response.request.url)
        ):
            tally.valid_as_sent[operation.label] += 1
            failures = []
        tally.record(
            f"{mode.value} {operation.label}", response.status_code, failures, case.as_curl_command()
        )

    try:
        run()
    except Unsatisfiable:  # negative: a route with no body, query or path part to break
        return False
    return True


def methods_and_sizes(
    router: str, schema: dict[str, Any], limit: int, headers: dict[str, str], tally: Tally
) -> None:
    for path, item in schema["paths"].items():
        documented = {m.upper() for m in item}
        url = router + path.replace("{key_id}", "k1")
        for method in sorted(set(METHODS) - documented):
            r = httpx.request(method, url, headers=headers)
            allowed = set(r.headers.get("allow", "").split(", ")) - {"HEAD", ""}
            failures = []
            if r.status_code != 405 or r.json().get("error", {}).get("code") != "method_not_allowed":
                failures.append(f"not a 405 envelope ({r.status_code})")
            elif allowed != documented:
                failures.append(f"Allow {sorted(allowed)} is not {sorted(documented)}")
            tally.record(f"method {method} {path}", r.status_code, failures, f"{method} {path}")
    big = b'{"model": "auto", "messages": [{"role": "user", "content": "' + b"x" * limit + b'"}]}'
    url = f"{router}/v1/chat/completions"
    for label, content in (
        ("declared", big),
        ("chunked", iter([big[i : i + 65536] for i in range(0, len(big), 65536)])),
    ):
        r = httpx.post(url, content=content, headers={**headers, "content-type": "application/json"})
        failures = [] if r.status_code == 413 else [f"not a 413 ({r.status_code})"]
        tally.record(f"oversized body ({label} length)", r.status_code, failures, f"POST {len(big)} bytes")


def probe(
    router: str, admin: dict[str, str], client: dict[str, str], examples: int, limit: int, tally: Tally
) -> tuple[int, list[str]]:
    """Everything above against ``router`` (admin routes and the circuit reset with ``admin``'s
    headers, the rest with ``client``'s); returns the number of routes and those fuzzed per mode.
    The fuzz test (tests/unit/serve_app/test_api_fuzz.py) runs it with fewer examples."""
    loaded = schemathesis.openapi.from_url(f"{router}/openapi.json", config=CONFIG)
    operations = []
    for result in loaded.get_all_operations():
        assert isinstance(result, Ok), result  # a route the document describes wrongly stops here
        operations.append(result.ok())
    fuzzed: list[str] = []
    for operation in operations:
        operator = operation.path.startswith("/v1/admin") or operation.path == "/v1/router/circuits/reset"
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            if fuzz(operation, mode, examples, admin if operator else client, tally):
                fuzzed.append(f"{mode.value} {operation.label}")
    methods_and_sizes(router, loaded.raw_schema, limit, client, tally)
    return len(operations), fuzzed


def measure(examples: int) -> dict[str, Any]:
    admin = secrets.token_urlsafe(16)
    os.environ["FUSION_ADMIN_KEY"] = admin  # read by the ingress replicas (Ray starts after this)
    tally = Tally()
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        config_path = write_config(Path(tmp))
        limit = load_config(config_path).server.max_body_bytes
        with local_router(latency_scale=0.0, config_path=str(config_path)) as (router, _):
            admin_headers = {"authorization": f"Bearer {admin}"}
            made = httpx.post(
                f"{router}/v1/admin/keys", json={"team": "fuzz", "name": "client"}, headers=admin_headers
            )
            made.raise_for_status()
            client_headers = {"authorization": f"Bearer {made.json()['key']}"}
            routes, fuzzed = probe(router, admin_headers, client_headers, examples, limit, tally)
    requests = sum(tally.statuses.values())
    server_errors = sum(n for s, n in tally.statuses.items() if s.startswith("5"))
    return {
        "examples_per_route_and_mode": examples,
        "routes": routes,
        "fuzzed": fuzzed,
        "requests": requests,
        "statuses": dict(sorted(tally.statuses.items())),
        "status_500": tally.statuses.get("500", 0),
        "status_5xx": server_errors,
        "failed_checks": sum(tally.failures.values()),
        "failures": dict(tally.failures.most_common()),
        "failure_examples": tally.examples,
        "negative_but_valid_as_sent": dict(tally.valid_as_sent),
        "by_route": {route: dict(sorted(c.items())) for route, c in sorted(tally.by_route.items())},
        "goal": {"no_500": tally.statuses.get("500", 0) == 0, "no_failed_check": not tally.failures},
        "elapsed_s": round(time.monotonic() - started, 1),
        "machine": "2 CPUs; full graph on a local Ray; emulator at 0 ms",
    }


def plot(result: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    routes = [r for r in result["by_route"] if not r.startswith("method ")]
    statuses = sorted({s for r in routes for s in result["by_route"][r]})
    fig, ax = plt.subplots(figsize=(10, 0.35 * len(routes) + 1.5))
    left = [0] * len(routes)
    for status in statuses:
        counts = [result["by_route"][r].get(status, 0) for r in routes]
        ax.barh(routes, counts, left=left, label=status)
        left = [a + b for a, b in zip(left, counts, strict=True)]
    ax.set_xlabel("requests")
    ax.set_title(
        f"Generated requests by answer status ({result['requests']} in all, "
        f"{result['status_500']} 500s, {result['failed_checks']} failed checks)"
    )
    ax.legend(title="status", loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--examples", type=int, default=100)
    parser.add_argument("--out", default=str(RESULTS / "bad_input.json"))
    args = parser.parse_args()
    write_result(Path(args.out), measure(args.examples), plot)


if __name__ == "__main__":
    main()
