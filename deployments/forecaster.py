"""The DemandForecaster actor: one per application, named, fed by the ingress replicas' arrival
reports and read by the predictive autoscaling policy (``deployments/autoscaling.py``).

It is a plain named Ray actor rather than a Serve deployment so that the policy, which runs inside
Serve's controller, can read it without a Serve handle. An ingress replica creates it (or finds it)
and owns it, so it goes away with the application. Each step (``forecast.step_s``) it refits and
publishes; for deployments on GPU nodes it then asks the cluster autoscaler for the nodes the P90
forecast needs (``ray.autoscaler.sdk.request_resources``), and withdraws the request when demand
falls.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from deployments.autoscaling import NAMESPACE, actor_name, replicas_for
from serve_app.demand import DemandHub, Report

logger = logging.getLogger("ray.serve")


class DemandForecasterActor:
    def __init__(
        self,
        step_s: float,
        horizons_s: dict[str, float],
        season_s: float,
        alpha: float,
        quantile: float,
        node_shapes: dict[str, tuple[dict[str, float], float, int]],
        cycle_s: float = 0.0,
    ) -> None:
        """``node_shapes``: per GPU deployment, (one replica's resources, its target ongoing
        requests, its max replicas), for the cluster autoscaler request."""
        self.hub = DemandHub(step_s, horizons_s, season_s, alpha, quantile, cycle_s=cycle_s)
        self.node_shapes = node_shapes
        self._requested: list[dict[str, float]] = []
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        interval = min(1.0, self.hub.step_s / 4)
        while True:
            await asyncio.sleep(interval)
            try:
                if self.hub.tick() and self.node_shapes:
                    self._request_nodes()
            except Exception:  # a bad step must not stop forecasting
                logger.exception("demand forecaster step failed")

    def bundles(self) -> list[dict[str, float]]:
        """One resource bundle per replica the P90 forecast needs, over all GPU deployments."""
        out: list[dict[str, float]] = []
        for deployment, (shape, per_replica, max_replicas) in self.node_shapes.items():
            f = self.hub.published.get(deployment)
            if f is None or f["service_time_s"] <= 0:
                continue
            n = min(max_replicas, replicas_for(f["rate_p90_per_s"] * f["service_time_s"], per_replica))
            out.extend([dict(shape)] * n)
        return out

    def _request_nodes(self) -> None:
        wanted = self.bundles()
        if wanted == self._requested:
            return
        from ray.autoscaler.sdk import request_resources

        request_resources(bundles=wanted)  # an empty list withdraws the earlier request
        self._requested = wanted
        logger.info("demand forecaster: asked the cluster autoscaler for %d replica bundles", len(wanted))

    async def record(self, report: Report, at: float | None = None) -> None:
        self.hub.record(report, at)

    async def latest(self) -> dict[str, dict[str, float]]:
        return self.hub.published

    async def stats(self) -> dict[str, Any]:
        times = sorted(self.hub.refit_s)
        return {
            "steps_published": len(times),
            "refit_max_s": times[-1] if times else None,
            "requested_bundles": self._requested,
            "published": self.hub.published,
        }


def get_or_create(app_name: str, **kwargs: Any) -> Any:
    """The application's forecaster actor (created with ``kwargs`` if it does not exist yet)."""
    import ray

    cls = ray.remote(DemandForecasterActor)
    return cls.options(num_cpus=0, name=actor_name(app_name), namespace=NAMESPACE, get_if_exists=True).remote(
        **kwargs
    )
