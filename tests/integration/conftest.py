"""A real local Ray (num_cpus=2) with the application deployed, driven over HTTP on 127.0.0.1."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from serve_app.config import DEFAULT_CONFIG_PATH
from serve_app.emulator import EmulatorServer
from serve_app.emulator.server import free_port


@pytest.fixture(scope="session")
def router(emulator: EmulatorServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    import ray
    from ray import serve

    from serve_app.app import AppArgs, build_app

    # Short timeouts so that timeout and stall faults fall back quickly.
    data = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    for provider in data["providers"].values():
        provider["read_timeout_s"] = 1.0
    data["retry"]["first_token_timeout_s"] = 1.0
    data["retry"]["inter_token_timeout_s"] = 1.0
    data["retry"]["attempt_timeout_s"] = 2.0
    # no hedging here, so that each fault shows up as the fallback it causes (hedging has unit tests)
    data["retry"]["hedge_after_s"] = None
    data["retry"]["stall_hedge_after_s"] = None
    data["health"]["open_s"] = 10.0  # no half-open probe in the middle of a test (resets close circuits)
    # The Meta models come from the emulator here (OpenAI-compatible, like vLLM's server), so that
    # fault injection reaches them; the self-hosted engine has its own test in test_llama_provider.
    data["providers"]["meta"] = {
        "kind": "openai_compatible",
        "api_key_env": "FUSION_LLAMA_API_KEY",
        "read_timeout_s": 1.0,
    }
    # Gemini scales by forecast (deployments/autoscaling.py), on a compressed clock: tests of the
    # forecaster actor and the policy.
    data["deployments"]["provider_overrides"] = {
        "google": {
            "num_cpus": 0.1,
            "max_ongoing_requests": 512,
            "autoscaling": {
                "min_replicas": 1,
                "max_replicas": 2,
                "target_ongoing_requests": 4,
                "policy": "predictive",
                "cold_start_s": 1.0,
            },
        }
    }
    data["forecast"] = {
        "step_s": 0.5,
        "report_interval_s": 0.2,
        "decision_lag_s": 0.5,
        "poll_interval_s": 0.2,
    }
    # The ledger in a temporary file, with a global budget large enough never to refuse, so that
    # every request reserves and settles through the BudgetLedger deployment.
    ledger_path = tmp_path_factory.mktemp("ledger") / "ledger.db"
    data["ledger"] = {"path": str(ledger_path)}
    data["budgets"] = {"global": {"limit_usd": 1000.0, "period": "day"}}
    os.environ["FUSION_TEST_LEDGER"] = str(ledger_path)
    # Every provider call goes through the provider deployments: the kill -9, drain and scaling
    # tests act on their replicas. The shipped default also lets an ingress replica with room call an
    # API SDK itself (api_providers_when_idle, api_providers_local_calls):
    # tests/unit/serve_app/test_ingress.py, and the last test of test_serving_graph.py redeploys with it on.
    data["deployments"]["api_providers_when_idle"] = False
    # Two ingress replicas, so that health sharing between replicas is exercised.
    data["deployments"]["ingress"] = {"num_replicas": 2, "num_cpus": 0.25, "max_ongoing_requests": 256}
    path: Path = tmp_path_factory.mktemp("cfg") / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    os.environ["FUSION_TEST_CONFIG"] = str(path)

    metrics_port = free_port()
    os.environ["FUSION_TEST_METRICS_PORT"] = str(metrics_port)
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        logging_level=logging.WARNING,
        log_to_driver=False,
        _metrics_export_port=metrics_port,
        _system_config={"metrics_report_interval_ms": 1000},
    )
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(
        build_app(AppArgs(config_path=str(path), emulator_url=emulator.url)), name="fusion", route_prefix="/"
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(autouse=True)
def _closed_circuits(request: pytest.FixtureRequest) -> None:
    """Each test starts with every circuit closed (breakers remember earlier tests' faults)."""
    if "router" in request.fixturenames:
        url = request.getfixturevalue("router")
        httpx.post(f"{url}/v1/router/circuits/reset", timeout=10).raise_for_status()
        time.sleep(0.6)  # every ingress replica picks the reset up at its next health sync
