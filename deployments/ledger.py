"""BudgetLedger deployment: the one replica that owns the ledger's SQLite file
(``serve_app/ledger.py``): reservations, settlements, API keys, feedback.

Its methods are ``async`` so that Serve runs them one at a time on the replica's event loop: a
reservation's check and its write cannot interleave with another's. It is pinned to the head
node by default (``ledger.pin_to_head_node``), where its file survives the replica; when the
replica is killed, Serve starts another that reopens the file with every committed hold and
spend, while the ingress replicas wait (``budgets.reserve_timeout_s``) and resend their
unconfirmed settlements.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from ray import serve
from ray.util.metrics import Gauge

from serve_app.config import FusionConfig
from serve_app.keys import KeyRecord, Period
from serve_app.ledger import Admission, Charge, Ledger

logger = logging.getLogger("ray.serve")


@serve.deployment(
    num_replicas=1,
    max_ongoing_requests=10_000,
    ray_actor_options={"num_cpus": 0},
    logging_config={"enable_access_log": False},  # called for every request
)
class BudgetLedger:
    def __init__(self, config: FusionConfig) -> None:
        self.ledger = Ledger(config.ledger.path, config.budgets.budgets(), config.ledger.synchronous)
        self._remaining = Gauge(
            "fusion_budget_remaining_usd",
            "What is left of each budget in its current period (limit - spent - reserved)",
            tag_keys=("scope", "period"),
        )
        self._spent = Gauge(
            "fusion_budget_spent_usd", "Spent in the budget's current period", tag_keys=("scope", "period")
        )
        self._export_task = asyncio.get_running_loop().create_task(self._export())
        logger.info("budget ledger: %s (%d holds reopened)", self.ledger.path, self.ledger.holds)

    async def _export(self) -> None:
        while True:
            try:
                for row in self.ledger.status():
                    tags = {"scope": row["scope"], "period": row["period"]}
                    self._remaining.set(row["remaining_usd"], tags=tags)
                    self._spent.set(row["spent_usd"], tags=tags)
            except Exception:  # a metrics hiccup must not stop the ledger
                logger.exception("budget gauges failed")
            await asyncio.sleep(2.0)

    async def reserve(
        self, request_id: str, amount_usd: float, key_id: str | None, team: str | None, ttl_s: float
    ) -> Admission:
        return self.ledger.reserve(request_id, amount_usd, key_id, team, ttl_s)

    async def settle(self, charges: list[Charge]) -> int:
        return self.ledger.settle(charges)

    async def directory(self) -> tuple[dict[str, KeyRecord], dict[str, float]]:
        """The key table (by hash) and every budget's pressure, for the ingress replicas' copies."""
        return self.ledger.keys.snapshot(), self.ledger.pressure_by_scope()

    async def create_key(
        self, team: str, name: str, budget_usd: float | None, period: Period | None
    ) -> tuple[str, KeyRecord]:
        return self.ledger.keys.create(team, name, budget_usd, period)

    async def list_keys(self) -> list[KeyRecord]:
        return self.ledger.keys.list()

    async def revoke_key(self, key_id: str) -> KeyRecord | None:
        return self.ledger.keys.revoke(key_id)

    async def status(self) -> list[dict[str, Any]]:
        return self.ledger.status()

    async def feedback(self, request_id: str, score: float, key_id: str | None) -> str | None:
        return self.ledger.feedback(request_id, score, key_id)

    async def economics(self, window_s: float) -> dict[str, dict[str, Any]]:
        return self.ledger.economics(window_s)

    async def pid(self) -> int:
        """The replica's process (the budget benchmark kills it)."""
        return os.getpid()
