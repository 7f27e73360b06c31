"""Self-tuning quality targets: per task type, the required predicted quality that ``auto``
routes by (``serve_app/routing.py``) moves from client feedback toward the configured target.

A ``ThresholdTuner`` (``predictors/threshold_tuning.py``, Robbins-Monro) per task type holds the
tolerated shortfall, ``1 - required quality``: a feedback score of an ``auto``-routed answer above
the task type's target raises it (cheaper models next time), one below lowers it (stronger models).
Expected quality falls as the tolerance rises, so it settles where observed quality meets the
target at the least cost. Bounded: the required quality stays within ``MAX_DRIFT`` of the
configured target, the step decays, and the first ``min_observations`` scores only count. The
state lives in the ledger's SQLite file, so it survives restarts; the ingress replicas read it with
the key table (``LedgerClient.directory``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping

from predictors.threshold_tuning import ThresholdTuner

MAX_DRIFT = 0.25  # the required quality stays within this of the configured target

SCHEMA = """
CREATE TABLE IF NOT EXISTS quality_tuning (
    task_type     TEXT PRIMARY KEY,
    threshold     REAL NOT NULL,
    step          REAL NOT NULL,
    observations  INTEGER NOT NULL
);
"""


def tuner_for(target: float) -> ThresholdTuner:
    low, high = max(0.0, 1.0 - target - MAX_DRIFT), min(1.0, 1.0 - target + MAX_DRIFT)
    return ThresholdTuner(target=target, threshold=1.0 - target, low=low, high=high)


class TuningStore:
    """The tuners of one ledger, over its SQLite connection."""

    def __init__(self, db: sqlite3.Connection, targets: Mapping[str, float]) -> None:
        self.db = db
        db.executescript(SCHEMA)
        self.tuners: dict[str, ThresholdTuner] = {}
        self.configure(targets)

    def configure(self, targets: Mapping[str, float]) -> None:
        """Targets from the (re)deployed config; a task type whose target changed starts afresh."""
        saved = {row[0]: row[1:] for row in self.db.execute("SELECT * FROM quality_tuning")}
        self.tuners = {}
        for task, target in targets.items():
            tuner = tuner_for(target)
            if task in saved:
                threshold, step, observations = saved[task]
                if tuner.low <= threshold <= tuner.high:
                    tuner.threshold, tuner.step, tuner.observations = threshold, step, int(observations)
            self.tuners[task] = tuner

    def observe(self, task: str, score: float) -> None:
        tuner = self.tuners.get(task)
        if tuner is None:
            return
        tuner.observe(score)
        with self.db:
            self.db.execute(
                "INSERT OR REPLACE INTO quality_tuning VALUES (?, ?, ?, ?)",
                (task, tuner.threshold, tuner.step, tuner.observations),
            )

    def required(self) -> dict[str, float]:
        """task type -> the predicted quality auto currently requires."""
        return {task: round(1.0 - t.threshold, 6) for task, t in self.tuners.items()}
