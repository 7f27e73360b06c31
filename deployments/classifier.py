"""Classifier deployment: batches concurrent prompts with ``@serve.batch`` and runs the classifier core."""

from __future__ import annotations

from collections import Counter

from ray import serve

from predictors.classification import Classification, TaskClassifier
from serve_app.config import ClassifierOptions


def load_classifier(engine: str) -> TaskClassifier:
    if engine == "keyword":
        from predictors.keyword_classifier import KeywordClassifier

        return KeywordClassifier()
    from predictors.task_classifier import EmbeddingClassifier

    return EmbeddingClassifier()


@serve.deployment
class ClassifierDeployment:
    def __init__(self, options: ClassifierOptions) -> None:
        self.core = load_classifier(options.engine)
        self.batch_sizes: Counter[int] = Counter()
        self.classify.set_max_batch_size(options.max_batch_size)  # type: ignore[attr-defined]
        self.classify.set_batch_wait_timeout_s(options.batch_wait_timeout_s)  # type: ignore[attr-defined]

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002)
    async def classify(self, texts: list[str]) -> list[Classification]:
        self.batch_sizes[len(texts)] += 1
        return self.core.classify_many(texts)

    def batch_stats(self) -> dict[int, int]:
        """How many batches of each size this replica has run (observability and tests)."""
        return dict(self.batch_sizes)
