"""HealthBoard deployment: one replica that merges the outcomes every ingress replica reports and
answers with the circuits that are open, so that a provider failing in one replica leaves rotation
in all of them within ``health.sync_interval_s`` (plus one round trip)."""

from __future__ import annotations

from ray import serve

from serve_app.health import BreakerConfig, HealthRegistry, Key, Outcome, merge


@serve.deployment(
    num_replicas=1,
    max_ongoing_requests=1000,
    ray_actor_options={"num_cpus": 0},
    logging_config={"enable_access_log": False},  # it is called several times a second
)
class HealthBoard:
    def __init__(self, config: BreakerConfig) -> None:
        self.registry = HealthRegistry(config)
        self.epoch = 0  # bumped by reset, so that every replica drops its local state too

    def sync(self, outcomes: list[Outcome], epoch: int) -> tuple[dict[Key, float], int]:
        """Merge a replica's outcomes (unless they predate the last reset); answer the open circuits."""
        if epoch != self.epoch:
            outcomes = []
        return merge(self.registry, outcomes), self.epoch

    def states(self) -> dict[str, str]:
        return self.registry.states()

    def reset(self) -> None:
        self.registry.reset()
        self.epoch += 1
