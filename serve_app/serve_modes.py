"""Ray Serve's own speed switches, which live in the environment of the Ray processes and so must
be set before Ray starts (``fusion-router run`` sets them from its flags; on a cluster,
``cluster.yaml`` exports them before ``ray start``).

- ``haproxy``: HAProxy as Serve's HTTP ingress, forwarding straight to the ingress replicas'
  own HTTP servers (Serve's "direct ingress") instead of through the Python proxy actor. Replica
  HTTP ports (30000-31000) then listen on every interface, so that HAProxy on another node can
  reach them: keep them behind the cluster's firewall.
- ``throughput_optimized``: Serve's throughput-optimized mode (user code on the replica's main
  loop, gRPC between proxy and replicas, buffered request logs, GC frozen after start-up).

Measured (``python -m benchmarks.vs_litellm``; README "Benchmarks"): both together cut the
router's overhead at concurrency 1 and roughly double its maximum rate on a 2-CPU machine.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping


def serve_environment(haproxy: bool, throughput_optimized: bool) -> dict[str, str]:
    env: dict[str, str] = {}
    if haproxy:
        env["RAY_SERVE_ENABLE_HA_PROXY"] = "1"
    if throughput_optimized:
        env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] = "1"
    return env


def apply(
    haproxy: bool, throughput_optimized: bool, environ: MutableMapping[str, str] | None = None
) -> dict[str, str]:
    """Set the switches in this process's environment (Ray started from it inherits them)."""
    env = serve_environment(haproxy, throughput_optimized)
    target = os.environ if environ is None else environ
    target.update(env)
    return env
