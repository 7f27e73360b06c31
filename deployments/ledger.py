"""The BudgetLedger actor: the one process that owns the ledger's SQLite file
(``serve_app/ledger.py``): reservations, settlements, API keys, feedback.

It is a named, detached Ray actor per application (``budget-ledger:<app>`` in the ``fusion-router``
namespace) rather than a Serve deployment, for two measured reasons (2-CPU machine): a call costs
1.2 ms instead of 1.8 ms through a Serve handle, and after a kill -9 Ray restarts it in 0.4 s where
Serve replaced a replica in 9 s. ``max_task_retries=-1`` makes a call that was in flight at the
crash run again on the restarted actor: reservations and settlements are idempotent by request
id, and the restarted actor reopens every committed hold and spend from the file.

Its methods are ``async`` and never await, so each runs whole on the actor's event loop: a
reservation's check and its write cannot interleave with another's. Two exceptions: a usage
report (``usage``) reads on a worker thread over its own read-only connection, and retention
(``prune``, every minute when ``ledger.retention_days`` is set) drops old spend and feedback rows in chunks
that each run whole, yielding between them.
Ingress replicas create it (or find it) at start and call ``configure`` with their
configuration, so a redeploy with new budgets reaches the running actor. It is pinned to the
head node by default (``ledger.pin_to_head_node``), where its file outlives it; being detached,
it also outlives the application (``ray.kill`` it to remove it).
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from ray.util.metrics import Gauge

from deployments.actors import in_chunks, stateful_actor_options
from serve_app.accounting import LocalLedgerClient
from serve_app.config import FusionConfig
from serve_app.ledger import Budget, Ledger, LedgerConfig

logger = logging.getLogger("ray.serve")

PRUNE_EVERY_S = 60.0
# spend rows dropped per step: each step runs whole between two calls, so it is the longest a
# reservation waits for retention (1.8 ms p50, 17 ms p99, 46 ms at most over 1,151 steps on a
# 3,000,000-row file: python -m benchmarks.ledger_scale)
PRUNE_CHUNK = 2000


def ledger_name(app_name: str) -> str:
    return f"budget-ledger:{app_name or 'default'}"


class BudgetLedgerActor(LocalLedgerClient):
    """The ledger's methods (``LocalLedgerClient``, awaited by the ingress through the actor
    handle), plus its settings, its gauges and its process id."""

    def __init__(
        self, settings: LedgerConfig, budgets: list[Budget], quality_targets: dict[str, float]
    ) -> None:
        self.settings = settings
        self.ledger = Ledger(settings.path, budgets, settings.synchronous, quality_targets=quality_targets)
        self._remaining = Gauge(
            "fusion_budget_remaining_usd",
            "What is left of each budget in its current period (limit - spent - reserved)",
            tag_keys=("scope", "period"),
        )
        self._spent = Gauge(
            "fusion_budget_spent_usd", "Spent in the budget's current period", tag_keys=("scope", "period")
        )
        loop = asyncio.get_running_loop()
        self._export_task = loop.create_task(self._export())
        self._prune_task = loop.create_task(self._prune_forever())
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

    async def prune(self) -> int:
        """Drop the spend and feedback rows past ``ledger.retention_days`` (none without it), a chunk at a
        time with other calls served between chunks; returns how many were dropped."""
        days = self.settings.retention_days
        if days is None:
            return 0
        return await in_chunks(lambda n: self.ledger.prune(days * 86_400, n), PRUNE_CHUNK)

    async def _prune_forever(self) -> None:
        while True:
            try:
                dropped = await self.prune()
                if dropped:
                    logger.info("ledger retention: dropped %d spend rows", dropped)
            except Exception:  # a full disk or a locked file must not stop the ledger
                logger.exception("ledger retention failed")
            await asyncio.sleep(PRUNE_EVERY_S)

    async def configure(
        self, settings: LedgerConfig, budgets: list[Budget], quality_targets: dict[str, float]
    ) -> None:
        """Adopt a (re)deployed application's settings: budgets, tuning targets, its file if it moved."""
        if settings.path != self.settings.path or settings.synchronous != self.settings.synchronous:
            self.ledger.close()
            self.ledger = Ledger(
                settings.path, budgets, settings.synchronous, quality_targets=quality_targets
            )
        else:
            self.ledger.configure(budgets, quality_targets)
        self.settings = settings

    async def pid(self) -> int:
        """The actor's process (the budget benchmark kills it)."""
        return os.getpid()


def get_or_create(app_name: str, config: FusionConfig) -> Any:
    """The application's ledger actor, created if it does not exist yet."""
    import ray

    # calls in flight at a crash run again: reservations and settlements are idempotent
    options = stateful_actor_options(ledger_name(app_name), config.ledger.pin_to_head_node, -1)
    cls = ray.remote(BudgetLedgerActor)
    return cls.options(**options).remote(config.ledger, config.budgets.budgets(), config.tuned_targets())
