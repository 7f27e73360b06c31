"""What the router did for one request: rendered as the ``fusion`` object and x-fusion-* headers."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from deployments.providers.base import Usage
from predictors.classification import Classification
from serve_app.config import FusionConfig
from serve_app.cost_cap import CostCap
from serve_app.errors import Attempt
from serve_app.pricing import call_cost_usd
from serve_app.routing import Candidate, RoutePlan


@dataclass
class Continuation:
    """A stream that broke after tokens were sent and was continued on another model."""

    from_model: str
    to_model: str
    after_chars: int
    error: str


@dataclass
class RouteInfo:
    request_id: str
    plan: RoutePlan
    classification: Classification | None
    attempts: list[Attempt] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # candidates passed over: circuit open or cooling down
    candidates: list[Candidate] = field(default_factory=list)  # the full ordered list that was considered
    continuations: list[Continuation] = field(default_factory=list)
    hedged: list[str] = field(default_factory=list)  # slow attempts beside which the next candidate started
    served_by: Candidate | None = None
    served_model: str | None = None  # the model the provider says answered, when it says so
    usage: Usage = field(default_factory=Usage)
    usage_estimated: bool = False
    cost_usd: float | None = None
    reserved_usd: float | None = None  # the budget hold taken before the call (None: no budget applies)
    first_token_s: float | None = None  # streams: from the request's arrival to its first token
    # where the time went, in ms: classify_ms (the classifier call), admit_ms (the budget hold),
    # provider_ms (the winning provider call), handler_ms (the ingress's whole handling)
    timings: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    cache: dict[str, Any] | None = None  # the response cache's part: status (hit, miss, ...), the hit's age
    cap: CostCap | None = None  # the request's own cost limit, when it set one

    @property
    def fallbacks(self) -> int:
        return sum(1 for a in self.attempts if a.error is not None)

    def charge(
        self, config: FusionConfig, candidate: Candidate, usage: Usage, estimated: bool = False
    ) -> float:
        """Add one call's tokens and cost (a continued stream is charged for every segment); the
        call's cost (0 without a known price)."""
        self.usage = self.usage + usage
        self.usage_estimated = self.usage_estimated or estimated
        cost = call_cost_usd(config, candidate.model, usage)
        if cost is not None:
            self.cost_usd = (self.cost_usd or 0.0) + cost
        return cost or 0.0

    def body(self) -> dict[str, Any]:
        served = self.served_by
        c = self.classification
        return {
            "request_id": self.request_id,
            "model": served.model if served else None,
            "provider": served.provider if served else None,
            "provider_model": self.served_model or (served.provider_model if served else None),
            "slot": served.slot if served else None,
            "policy": self.plan.policy,
            "budget_pressure": self.plan.budget_pressure,
            "quality_target": self.plan.quality_target,
            "predicted_quality": self.plan.predicted_quality or None,
            "task_type": self.plan.task_type,
            "complexity": self.plan.complexity,
            "task_probabilities": c.probabilities if c else None,
            "candidates": [x.model for x in (self.candidates or list(self.plan.candidates))],
            "fallbacks": [
                {"provider": a.provider, "model": a.model, "error": a.error, "status": a.status}
                for a in self.attempts
                if a.error is not None
            ],
            "skipped": self.skipped,
            "continuations": [vars(x) for x in self.continuations],
            "hedged": self.hedged,
            "cost_usd": self.cost_usd,
            "reserved_usd": self.reserved_usd,
            "usage": vars(self.usage),  # every call of the request: cache and reasoning tokens included
            "usage_estimated": self.usage_estimated,
            "latency_ms": round((time.monotonic() - self.started) * 1000, 2),
            "timings_ms": self.timings,
            **({"cache": self.cache} if self.cache is not None else {}),
            **(self._cap_body() if self.cap is not None else {}),
        }

    def _cap_body(self) -> dict[str, Any]:
        assert self.cap is not None
        out: dict[str, Any] = {"max_cost_usd": self.cap.limit_usd}
        if self.cap.left_out:
            out["over_max_cost"] = self.cap.left_out
        return out

    def headers(self) -> dict[str, str]:
        served = self.served_by
        out = {
            "x-fusion-request-id": self.request_id,
            "x-fusion-policy": self.plan.policy,
            "x-fusion-fallbacks": str(self.fallbacks),
        }
        if served is not None:
            out["x-fusion-model"] = served.model
            out["x-fusion-provider"] = served.provider
        if self.plan.task_type is not None:
            out["x-fusion-task-type"] = self.plan.task_type
        if self.plan.complexity is not None:
            out["x-fusion-complexity"] = f"{self.plan.complexity:.3f}"
        if self.fallbacks:
            out["x-fusion-attempts"] = ", ".join(a.describe() for a in self.attempts)
        if self.cost_usd is not None:
            out["x-fusion-cost-usd"] = f"{self.cost_usd:.8f}"
        if self.cache is not None:
            out["x-fusion-cache"] = self.cache["status"]
        return out
