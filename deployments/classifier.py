"""Classifier deployment: batches prompts with ``@serve.batch`` and runs the classifier core."""

from __future__ import annotations

from ray import serve

from predictors.keyword_classifier import Classification, KeywordClassifier
from serve_app.config import ClassifierOptions


@serve.deployment
class ClassifierDeployment:
    def __init__(self, options: ClassifierOptions) -> None:
        self.core = KeywordClassifier()
        self.classify.set_max_batch_size(options.max_batch_size)  # type: ignore[attr-defined]
        self.classify.set_batch_wait_timeout_s(options.batch_wait_timeout_s)  # type: ignore[attr-defined]

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002)
    async def classify(self, texts: list[str]) -> list[Classification]:
        return self.core.classify_many(texts)
