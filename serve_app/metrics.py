"""The router's metrics, recorded once per request by the ingress.

Exported through ``ray.util.metrics``, so Ray's Prometheus endpoint (every node's
``metrics_export_port``) and the Ray dashboard show them, with Ray's ``ray_`` prefix; the Grafana
dashboard ``serve_app/grafana/fusion_router.json`` plots them. Tags never carry a key or a
prompt: a request is described by its model, provider, task type, policy, slot and team.

The recording backend is injectable: ``RayBackend`` in the ingress replicas, ``MemoryBackend`` in
unit tests that run without Ray.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Protocol

from serve_app.route_info import RouteInfo

LATENCY_BOUNDARIES_S = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]

# name -> (kind, description, tag keys)
METRICS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "fusion_requests_total": (
        "counter",
        "Chat requests answered, by served model and outcome (ok, or the error code)",
        ("model", "provider", "task_type", "policy", "status"),
    ),
    "fusion_errors_total": (
        "counter",
        "Errors by kind: failed provider calls (provider_*) and refused requests (request_*)",
        ("kind", "provider", "model"),
    ),
    "fusion_fallbacks_total": (
        "counter",
        "Requests served by another model than their first candidate, by the model that failed",
        ("model", "provider", "task_type"),
    ),
    "fusion_request_latency_seconds": (
        "histogram",
        "Time from the request's arrival to its last byte",
        ("model", "provider", "stream"),
    ),
    "fusion_time_to_first_token_seconds": (
        "histogram",
        "Streams: time from the request's arrival to its first token",
        ("model", "provider"),
    ),
    "fusion_input_tokens_total": ("counter", "Prompt tokens billed, cached included", ("model", "provider")),
    "fusion_cached_tokens_total": (
        "counter",
        "Prompt tokens read from a prompt cache",
        ("model", "provider"),
    ),
    "fusion_output_tokens_total": (
        "counter",
        "Output tokens billed, reasoning included",
        ("model", "provider"),
    ),
    "fusion_reasoning_tokens_total": ("counter", "Hidden reasoning tokens", ("model", "provider")),
    "fusion_cost_usd_total": ("counter", "Spend in USD", ("model", "provider", "team")),
    "fusion_rate_limited_total": (
        "counter",
        "Requests refused by a rate limit, by team and the limit (requests, tokens, team_requests, "
        "team_tokens)",
        ("team", "limit"),
    ),
    "fusion_cache_lookups_total": (
        "counter",
        "Response cache lookups by result: hit, miss, bypass (the request's Cache-Control) or error",
        ("result",),
    ),
    "fusion_cache_saved_usd_total": (
        "counter",
        "What the answers given again from the response cache cost when they were first given",
        ("model", "team"),
    ),
    "fusion_routing_decisions_total": (
        "counter",
        "Routing decisions: the task type, the first candidate chosen, its slot and the policy",
        ("task_type", "model", "slot", "policy"),
    ),
}


class Backend(Protocol):
    def inc(self, name: str, value: float, tags: dict[str, str]) -> None: ...
    def observe(self, name: str, value: float, tags: dict[str, str]) -> None: ...


class MemoryBackend:
    """Sums and observations in memory (tests)."""

    def __init__(self) -> None:
        self.counters: dict[tuple[str, tuple[tuple[str, str], ...]], float] = defaultdict(float)
        self.observations: dict[str, list[tuple[float, dict[str, str]]]] = defaultdict(list)

    def inc(self, name: str, value: float, tags: dict[str, str]) -> None:
        self.counters[(name, tuple(sorted(tags.items())))] += value

    def observe(self, name: str, value: float, tags: dict[str, str]) -> None:
        self.observations[name].append((value, tags))

    def total(self, name: str, **match: str) -> float:
        return sum(
            v for (n, tags), v in self.counters.items() if n == name and match.items() <= dict(tags).items()
        )


class RayBackend:
    """``ray.util.metrics`` objects, made once per process."""

    def __init__(self) -> None:
        from ray.util.metrics import Counter, Histogram

        self._objects: dict[str, Any] = {}
        for name, (kind, description, tag_keys) in METRICS.items():
            if kind == "counter":
                self._objects[name] = Counter(name, description, tag_keys=tag_keys)
            else:
                self._objects[name] = Histogram(
                    name, description, boundaries=LATENCY_BOUNDARIES_S, tag_keys=tag_keys
                )

    def inc(self, name: str, value: float, tags: dict[str, str]) -> None:
        self._objects[name].inc(value, tags=tags)

    def observe(self, name: str, value: float, tags: dict[str, str]) -> None:
        self._objects[name].observe(value, tags=tags)


class Metrics:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def record_request(
        self, info: RouteInfo, status: str, stream: bool, seconds: float, team: str | None
    ) -> None:
        """One request, answered (``status`` ok) or failed after routing (its error code)."""
        served = info.served_by
        model = served.model if served else "none"
        provider = served.provider if served else "none"
        b = self.backend
        b.inc(
            "fusion_requests_total",
            1,
            {
                "model": model,
                "provider": provider,
                "task_type": info.plan.task_type or "direct",
                "policy": info.plan.policy,
                "status": status,
            },
        )
        if info.candidates:
            first = info.candidates[0]
            b.inc(
                "fusion_routing_decisions_total",
                1,
                {
                    "task_type": info.plan.task_type or "direct",
                    "model": first.model,
                    "slot": first.slot,
                    "policy": info.plan.policy,
                },
            )
        for attempt in info.attempts:
            if attempt.error is not None:
                b.inc(
                    "fusion_errors_total",
                    1,
                    {
                        "kind": f"provider_{attempt.error}",
                        "provider": attempt.provider,
                        "model": attempt.model,
                    },
                )
                b.inc(
                    "fusion_fallbacks_total",
                    1,
                    {
                        "model": attempt.model,
                        "provider": attempt.provider,
                        "task_type": info.plan.task_type or "direct",
                    },
                )
        pm = {"model": model, "provider": provider}
        b.observe("fusion_request_latency_seconds", seconds, pm | {"stream": str(stream).lower()})
        if info.first_token_s is not None:
            b.observe("fusion_time_to_first_token_seconds", info.first_token_s, pm)
        u = info.usage
        for name, value in (
            ("fusion_input_tokens_total", u.input_tokens),
            ("fusion_cached_tokens_total", u.cached_tokens),
            ("fusion_output_tokens_total", u.output_tokens),
            ("fusion_reasoning_tokens_total", u.reasoning_tokens),
        ):
            if value:
                b.inc(name, value, pm)
        if info.cost_usd:
            b.inc("fusion_cost_usd_total", info.cost_usd, pm | {"team": team or "none"})

    def cache_lookup(self, result: str) -> None:
        self.backend.inc("fusion_cache_lookups_total", 1, {"result": result})

    def cache_saved(self, usd: float | None, model: str, team: str | None) -> None:
        """A hit: what its answer cost the first time, not spent again."""
        if usd:
            self.backend.inc("fusion_cache_saved_usd_total", usd, {"model": model, "team": team or "none"})

    def refused(self, code: str, team: str | None = None, limit: str | None = None) -> None:
        """A request refused before routing (bad key, rate limit, budget, invalid body); ``limit``:
        the key's rate limit that refused it (requests or tokens), counted by team as well."""
        self.backend.inc(
            "fusion_errors_total", 1, {"kind": f"request_{code}", "provider": "none", "model": "none"}
        )
        if limit is not None:
            self.backend.inc("fusion_rate_limited_total", 1, {"team": team or "none", "limit": limit})
