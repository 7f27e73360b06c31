"""What every task classifier returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

TASK_TYPES = ("coding", "creative_writing", "analysis", "simple_queries")


@dataclass(frozen=True)
class Classification:
    task_type: str
    probabilities: dict[str, float] = field(default_factory=dict)
    complexity: float = 0.5  # probability that the row's cheaper model does worse than its stronger one
    # P(a good answer) per reference model of the quality heads (predictors/quality.py), when shipped
    quality: dict[str, float] = field(default_factory=dict)


class TaskClassifier(Protocol):
    def classify_many(self, texts: list[str], quality: bool = False) -> list[Classification]:
        """``quality``: also the quality heads' predictions, where the classifier has them (they
        cost a MiniLM pass; only quality-target routing reads them)."""
        ...
