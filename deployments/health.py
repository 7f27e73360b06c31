"""HealthBoard deployment: one replica that merges the outcomes every ingress replica reports and
answers with the circuits that are open, so that a provider failing in one replica leaves rotation
in all of them within ``health.sync_interval_s`` (plus one round trip)."""

from __future__ import annotations

from typing import Any

from ray import serve

from serve_app.health import BreakerConfig, HealthRegistry, Key, Outcome, merge
from serve_app.stats import RollingStats, StatsConfig


@serve.deployment(
    num_replicas=1,
    max_ongoing_requests=1000,
    ray_actor_options={"num_cpus": 0},
    logging_config={"enable_access_log": False},  # it is called several times a second
)
class HealthBoard:
    def __init__(self, config: BreakerConfig, stats: StatsConfig | None = None) -> None:
        self.registry = HealthRegistry(config)
        self.rolling = RollingStats(stats)
        self.epoch = 0  # bumped by reset, so that every replica drops its local state too

    def sync(self, outcomes: list[Outcome], epoch: int) -> tuple[dict[Key, float], int]:
        """Merge a replica's outcomes (unless they predate the last reset); answer the open circuits."""
        if epoch != self.epoch:
            outcomes = []
        for o in outcomes:
            self.rolling.add(o.key, o.ok, o.latency_s, o.first_token_s, o.error)
        opened = merge(self.registry, outcomes)
        self.rolling.note_circuits(opened)
        return opened, self.epoch

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per model, over the rolling window (serve_app/stats.py)."""
        return self.rolling.snapshot()

    def states(self) -> dict[str, str]:
        return self.registry.states()

    def reset(self) -> None:
        self.registry.reset()
        self.epoch += 1
