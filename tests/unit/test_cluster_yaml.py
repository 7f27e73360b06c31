"""cluster.yaml against the JSON schema the installed Ray ships; the GPU Serve config against Serve's."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray
import yaml
from ray.serve.schema import ServeDeploySchema

from serve_app.app import AppArgs, build_app
from serve_app.config import DEFAULT_CONFIG_PATH, load_config

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())


def _cluster() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    return data


def test_cluster_yaml_is_valid_for_the_cluster_launcher() -> None:
    cluster = _cluster()
    jsonschema.validate(cluster, SCHEMA)
    types = cluster["available_node_types"]
    assert cluster["provider"]["type"] == "aws"
    assert {"head", "cpu_worker", "gpu_worker"} <= set(types)
    assert types["gpu_worker"]["min_workers"] == 0 and types["gpu_worker"]["max_workers"] >= 1
    assert any("[gpu]" in cmd for cmd in types["gpu_worker"]["worker_setup_commands"])
    assert cluster["max_workers"] >= sum(t.get("max_workers", 0) for n, t in types.items() if n != "head") - 2


def test_schema_rejects_a_broken_cluster_yaml() -> None:
    broken = copy.deepcopy(_cluster())
    broken["available_node_types"]["gpu_worker"]["min_workers"] = "zero"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, SCHEMA)
    broken = copy.deepcopy(_cluster())
    broken["unknown_top_level_key"] = 1
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, SCHEMA)


@pytest.mark.parametrize("name", ["serve_config.yaml", "serve_config_gpu.yaml"])
def test_serve_configs_are_valid(name: str) -> None:
    data = yaml.safe_load((ROOT / "serve_app" / name).read_text())
    ServeDeploySchema.model_validate(data)
    app = data["applications"][0]
    assert app["import_path"] == "serve_app.app:build_app"
    AppArgs.model_validate(app["args"])


def test_gpu_config_puts_llama_on_gpus_with_autoscaling() -> None:
    config = load_config("gpu_config.yaml")
    for name in ("meta_8b", "meta_70b"):
        local = config.providers[name].local
        assert local is not None and local.engine == "vllm"
        options = config.deployments.for_provider(name).serve_options()
        assert options["ray_actor_options"]["num_gpus"] >= 1
        assert options["autoscaling_config"]["max_replicas"] >= 1
    assert config.providers["meta_70b"].local.tensor_parallel_size == 4  # type: ignore[union-attr]
    build_app(AppArgs(config_path="gpu_config.yaml"))  # binds without importing vllm
    import sys

    assert "vllm" not in sys.modules


def test_bound_graph_carries_the_llama_gpu_options() -> None:
    """build_app must hand each deployment its configured options (GPUs, autoscaling, drain)."""
    app = build_app(AppArgs(config_path="gpu_config.yaml"))
    ingress: Any = app._bound_deployment
    providers = ingress.init_args[2]
    meta: Any = providers["meta_8b"]._bound_deployment
    assert meta.ray_actor_options["num_gpus"] == 1.0 and meta.ray_actor_options["num_cpus"] == 4.0
    assert meta._deployment_config.autoscaling_config.max_replicas == 4
    assert meta._deployment_config.graceful_shutdown_timeout_s == 60.0
    assert providers["meta_70b"]._bound_deployment.ray_actor_options["num_gpus"] == 4.0
    assert providers["openai"]._bound_deployment._deployment_config.max_ongoing_requests == 1024
    assert ingress._deployment_config.autoscaling_config.min_replicas == 2


def test_classifier_can_run_inside_the_ingress(tmp_path: Path) -> None:
    """placement: ingress binds no classifier deployment; the ingress gets None and loads its own."""
    data = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    data["deployments"]["classifier"]["placement"] = "ingress"
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    ingress: Any = build_app(AppArgs(config_path=str(path)))._bound_deployment
    assert ingress.init_args[1] is None
    default: Any = build_app(AppArgs())._bound_deployment
    assert default.init_args[1]._bound_deployment.name == "ClassifierDeployment"


def test_api_providers_can_run_inside_the_ingress(tmp_path: Path) -> None:
    """api_providers_in_ingress: only the self-hosted Llama keeps a provider deployment."""
    data = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    data["deployments"]["api_providers_in_ingress"] = True
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    config = load_config(str(path))
    assert config.deployments.in_ingress(config) == ["anthropic", "google", "openai"]
    ingress: Any = build_app(AppArgs(config_path=str(path)))._bound_deployment
    assert sorted(ingress.init_args[2]) == ["meta"]


def test_cluster_starts_ray_with_serves_fast_ingress() -> None:
    from serve_app.serve_modes import serve_environment

    data = _cluster()
    wanted = " ".join(f"{k}={v}" for k, v in serve_environment(True, True).items())
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = [c for c in data[key] if "ray start" in c]
        assert start and all(c.startswith(wanted) for c in start), key
