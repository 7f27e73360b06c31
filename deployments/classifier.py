"""Classifier deployment: batches concurrent prompts with ``@serve.batch`` and runs the classifier core."""

from __future__ import annotations

import threading
from collections import Counter

from ray import serve

from predictors.classification import Classification, TaskClassifier
from serve_app.config import ClassifierOptions


def load_classifier(engine: str, threads: int = 1) -> TaskClassifier:
    """``threads``: ONNX Runtime's intra-op threads for one MiniLM pass (the quality heads' input;
    the task and complexity heads read a static table)."""
    if engine == "keyword":
        from predictors.keyword_classifier import KeywordClassifier

        return KeywordClassifier()
    from predictors.task_classifier import EmbeddingClassifier

    return EmbeddingClassifier(quality_threads=threads)


def preload_in_background(core: TaskClassifier) -> threading.Thread | None:
    """Start loading the quality heads' MiniLM beside a replica's start-up, off any request: loaded
    at the first request routed on predicted quality instead, it would hold that request about
    0.5 s, and in the ingress, where it runs on the event loop, every request in flight with it."""
    from predictors.task_classifier import EmbeddingClassifier

    if not isinstance(core, EmbeddingClassifier):
        return None
    thread = threading.Thread(target=core.preload_quality, name="minilm-preload", daemon=True)
    thread.start()
    return thread


def classify_batch(core: TaskClassifier, texts: list[str], quality: list[bool]) -> list[Classification]:
    """One batch, in order; the MiniLM pass behind the quality heads only for the prompts that ask."""
    results: list[Classification | None] = [None] * len(texts)
    for flag in (False, True):
        group = [i for i, q in enumerate(quality) if q == flag]
        if group:
            for i, found in zip(group, core.classify_many([texts[i] for i in group], flag), strict=True):
                results[i] = found
    return [r for r in results if r is not None]


class BatchWait:
    """How long the next batch stays open for more prompts.

    A fixed wait is pure latency when prompts arrive one at a time: with 2 ms, a lone request at
    concurrency 1 took 2-5 ms longer end to end (benchmarks/README.md). Under load the wait is
    what lets batches form, and without it the maximum rate fell by a fifth. So, when adaptive,
    the next batch waits ``wait_s`` only if the last one had company (prompts that arrived while
    it ran, or within its wait); a batch of one means the replica is not contended, and the next
    prompt goes straight through. Batches form by themselves as soon as prompts overlap, because
    they queue while one runs.
    """

    def __init__(self, wait_s: float, adaptive: bool = True) -> None:
        self.wait_s = wait_s
        self.adaptive = adaptive

    def first(self) -> float:
        return 0.0 if self.adaptive else self.wait_s

    def after(self, batch_size: int) -> float:
        if not self.adaptive or batch_size > 1:
            return self.wait_s
        return 0.0


@serve.deployment
class ClassifierDeployment:
    def __init__(self, options: ClassifierOptions) -> None:
        self.core = load_classifier(options.engine)
        preload_in_background(self.core)
        self.batch_sizes: Counter[int] = Counter()
        self.wait = BatchWait(options.batch_wait_timeout_s, options.adaptive_batch_wait)
        self.classify.set_max_batch_size(options.max_batch_size)  # type: ignore[attr-defined]
        self.classify.set_batch_wait_timeout_s(self.wait.first())  # type: ignore[attr-defined]

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002)
    async def classify(self, prompts: list[tuple[str, bool]]) -> list[Classification]:
        """Each prompt with whether its request routes on predicted quality; the MiniLM pass runs
        on the prompts that do."""
        self.batch_sizes[len(prompts)] += 1
        results = classify_batch(self.core, [p[0] for p in prompts], [p[1] for p in prompts])
        # the next batch's wait (Serve reads it when that batch's first prompt arrives)
        self.classify.set_batch_wait_timeout_s(self.wait.after(len(prompts)))  # type: ignore[attr-defined]
        return results

    def batch_stats(self) -> dict[int, int]:
        """How many batches of each size this replica has run (observability and tests)."""
        return dict(self.batch_sizes)
