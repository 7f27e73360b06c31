"""The routing policy: a pure function from (classification, requested model, config) to candidates.

No I/O, no Ray: unit-tested directly. Policies:

- ``auto`` (the default): the task type's row of the routing table. A prompt whose complexity is
  below the task type's threshold starts at ``cost_sensitive``; otherwise at ``primary``. Under
  budget pressure (a budget of the caller past ``budgets.pressure``) every prompt starts at
  ``cost_sensitive``.
- ``auto`` with ``routing.quality_target``: the row's models ordered by the quality heads
  (``predictors/quality.py``, each model through its ``quality_proxy``): first the cheapest whose
  predicted quality meets the task type's required quality (its target, self-tuned from feedback:
  ``serve_app/tuning.py``), then the others that meet it by cost, then the rest by predicted
  quality. When none meets it, the likeliest to is first.
- ``auto:<q>`` (``auto:0.85``): the same with the target ``q`` for this request: the one knob from
  ``auto:cost`` (like q = 0) to ``auto:quality`` (like q = 1).
- ``auto:quality``: primary, fallback, cost_sensitive.
- ``auto:cost``: cost_sensitive, fallback, primary.
- a concrete model name (``gpt-4.1``, or ``openai/gpt-4.1``): that model only, no classification.

Live latency (``serve_app/stats.py``): a model whose rolling p95 is above the latency limit moves
behind the others (``demote_slow``), whatever the policy.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from predictors.classification import Classification
from serve_app.config import POLICIES, FusionConfig, TaskType
from serve_app.errors import ModelNotFoundError

AUTO_TARGET = re.compile(r"^auto:(0(\.\d+)?|1(\.0+)?)$")


@dataclass(frozen=True)
class Candidate:
    model: str  # public model name (a key of config.models)
    provider: str
    provider_model: str
    slot: str  # primary / fallback / cost_sensitive / requested


@dataclass(frozen=True)
class RoutePlan:
    policy: str  # auto, auto:cost, auto:quality or "direct"
    candidates: tuple[Candidate, ...]
    task_type: str | None
    complexity: float | None
    budget_pressure: bool = False  # auto started at cost_sensitive because a budget is nearly spent
    quality_target: float | None = None  # the required predicted quality it was ordered by
    predicted_quality: dict[str, float] = field(default_factory=dict)  # model -> P(good answer)


def is_routed(model: str) -> bool:
    return model in POLICIES or AUTO_TARGET.match(model) is not None


def numeric_target(policy: str) -> float | None:
    return float(policy[5:]) if AUTO_TARGET.match(policy) else None


def reads_quality(policy: str, config: FusionConfig) -> bool:
    """Whether ``plan_route`` may order this policy's candidates by the quality heads' predictions
    (a numeric target, or ``auto`` under ``routing.quality_target``); only then does the classifier
    make the MiniLM pass they need."""
    return numeric_target(policy) is not None or (
        policy == "auto" and config.routing.quality_target is not None
    )


def resolve_model(model: str, config: FusionConfig) -> str:
    """A public model name for ``model`` or ``provider/model``; raises ModelNotFoundError."""
    if model in config.models:
        return model
    provider, sep, name = model.partition("/")
    if sep and name in config.models and config.models[name].provider == provider:
        return name
    known = ", ".join([*POLICIES, *config.models])
    raise ModelNotFoundError(f"The model '{model}' does not exist. Available: {known}.", param="model")


def _candidate(config: FusionConfig, name: str, slot: str) -> Candidate:
    return Candidate(name, config.models[name].provider, config.provider_model(name), slot)


def direct_plan(model: str, config: FusionConfig) -> RoutePlan:
    name = resolve_model(model, config)
    return RoutePlan("direct", (_candidate(config, name, "requested"),), None, None)


def _predicted(classification: Classification, config: FusionConfig, names: list[str]) -> dict[str, float]:
    """model -> predicted quality, when the quality heads cover every one of ``names``."""
    out = {}
    for name in names:
        proxy = config.models[name].quality_proxy
        if proxy is None or proxy not in classification.quality:
            return {}
        out[name] = classification.quality[proxy]
    return out


def plan_route(
    classification: Classification,
    policy: str,
    config: FusionConfig,
    budget_pressure: bool = False,
    required_quality: Mapping[str, float] | None = None,
    costs: Mapping[str, float] | None = None,
) -> RoutePlan:
    """Order the routing table's row for this request; duplicates are dropped, order kept.
    ``required_quality``: task type -> the self-tuned required quality; ``costs``: model -> the
    request's expected cost on it (both only for quality-target routing)."""
    if not is_routed(policy):
        raise ModelNotFoundError(f"Unknown routing policy '{policy}'.", param="model")
    task = TaskType(classification.task_type)
    row = config.routing.table[task]
    names = list(dict.fromkeys(getattr(row, slot) for slot in ("primary", "fallback", "cost_sensitive")))
    target = numeric_target(policy)
    tuned = config.routing.quality_target
    if target is None and tuned is not None and reads_quality(policy, config):  # auto, per task type
        target = (required_quality or {}).get(task.value, tuned[task])
    predicted = (
        _predicted(classification, config, names) if target is not None and not budget_pressure else {}
    )
    if predicted and target is not None:
        slot_of = {getattr(row, slot): slot for slot in ("cost_sensitive", "fallback", "primary")}
        cost = costs or {}
        meeting = sorted(
            (n for n in names if predicted[n] >= target), key=lambda n: (cost.get(n, 0.0), -predicted[n])
        )
        rest = sorted((n for n in names if predicted[n] < target), key=lambda n: -predicted[n])
        ordered = tuple(_candidate(config, n, slot_of[n]) for n in meeting + rest)
        return RoutePlan(policy, ordered, task.value, classification.complexity, False, target, predicted)
    if policy == "auto:quality":
        slots = ("primary", "fallback", "cost_sensitive")
    elif policy == "auto:cost":
        slots = ("cost_sensitive", "fallback", "primary")
    elif policy.startswith("auto:"):  # a numeric target without quality heads: nearer which end
        high = (target or 0.0) >= 0.5
        slots = (
            ("primary", "fallback", "cost_sensitive") if high else ("cost_sensitive", "fallback", "primary")
        )
    elif budget_pressure or classification.complexity < config.routing.complexity_threshold[task]:
        slots = ("cost_sensitive", "primary", "fallback")
    else:
        slots = ("primary", "fallback", "cost_sensitive")
    seen: set[str] = set()
    candidates: list[Candidate] = []
    for slot in slots:
        name = getattr(row, slot)
        if name not in seen:
            seen.add(name)
            candidates.append(_candidate(config, name, slot))
    pressured = budget_pressure and policy == "auto"
    return RoutePlan(policy, tuple(candidates), task.value, classification.complexity, pressured)


def demote_slow(
    candidates: list[Candidate], p95_ms: Mapping[str, float | None], limit_ms: float | None
) -> list[Candidate]:
    """Candidates whose rolling p95 latency is over ``limit_ms`` go last, in their order."""
    if limit_ms is None:
        return candidates
    slow = {c.model for c in candidates if (p95_ms.get(c.model) or 0.0) > limit_ms}
    return [c for c in candidates if c.model not in slow] + [c for c in candidates if c.model in slow]


def missing_capabilities(
    config: FusionConfig, model: str, needs: set[str], parameters: set[str], output_tokens: int | None
) -> set[str]:
    """What ``model`` lacks to serve a request that needs ``needs``, sets ``parameters`` and asks
    for ``output_tokens``; empty when it can serve it."""
    spec = config.models[model]
    caps = spec.capabilities
    missing = {need for need in needs if not getattr(caps, need)}
    missing |= parameters - config.providers[spec.provider].honours()
    if (
        output_tokens is not None
        and caps.max_output_tokens is not None
        and output_tokens > caps.max_output_tokens
    ):
        missing.add("max_output_tokens")
    return missing


def extra_candidates(plan: RoutePlan, config: FusionConfig, estimated_tokens: int) -> list[Candidate]:
    """Every other configured model whose context window fits the request, after the table's row,
    so that an outage of two providers still serves (the gateway skips unhealthy ones)."""
    taken = {c.model for c in plan.candidates}
    return [
        _candidate(config, name, "extended")
        for name, spec in config.models.items()
        if name not in taken and spec.context_window >= estimated_tokens
    ]
