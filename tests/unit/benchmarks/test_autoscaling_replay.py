"""The replay simulator that scores the autoscaling policies: its queue and its accounting."""

from __future__ import annotations

import numpy as np

from benchmarks.autoscaling_replay import Deployment, Metrics, SimClock, serve_policy_decider, simulate

DEP = Deployment(service_s=1.0, per_replica=2, cold_start_s=10, max_replicas=20)


def test_enough_replicas_means_no_queue_and_exact_replica_seconds() -> None:
    arrivals = np.full(100, 4.0)  # 4/s x 1 s = 4 ongoing = 2 replicas
    r = simulate(arrivals, DEP, lambda t, observed, ready, have: 2, None, initial=2)
    assert r["slo_violations"] == 0 and r["replica_seconds"] == 200 and r["requests"] == 400


def test_too_few_replicas_build_a_queue_that_violates_the_slo() -> None:
    arrivals = np.full(100, 4.0)
    r = simulate(arrivals, DEP, lambda t, observed, ready, have: 1, None, initial=1)
    assert r["slo_violations"] > 300 and r["p99_queue_s"] > 10


def test_new_replicas_serve_only_after_their_cold_start() -> None:
    arrivals = np.concatenate([np.full(20, 2.0), np.full(40, 6.0)])  # needs 1, then 3
    late = simulate(arrivals, DEP, lambda t, o, r, h: 1 if t < 20 else 3, None, initial=1)
    early = simulate(arrivals, DEP, lambda t, o, r, h: 1 if t < 10 else 3, None, initial=1)
    assert late["slo_violations"] > 0 and early["slo_violations"] == 0
    assert early["ready_before_load_ratio"] >= late["ready_before_load_ratio"]


def test_serves_default_policy_scales_on_what_it_observes() -> None:
    import ray.serve.autoscaling_policy as serve_policy
    from ray.serve.autoscaling_policy import replica_queue_length_autoscaling_policy
    from ray.serve.config import AutoscalingConfig

    clock = SimClock()
    original = serve_policy.time
    serve_policy.time = clock  # type: ignore[assignment]
    try:
        config = AutoscalingConfig(
            min_replicas=1, max_replicas=20, target_ongoing_requests=2, upscale_delay_s=0
        )
        decide = serve_policy_decider(config, replica_queue_length_autoscaling_policy, DEP, clock)
        r = simulate(np.full(200, 8.0), DEP, decide, Metrics(1, 5), initial=1)  # needs 4
    finally:
        serve_policy.time = original
    assert r["_replicas"][-1] >= 4
