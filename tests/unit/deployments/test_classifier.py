"""The classifier deployment's batching wait (deployments/classifier.py: BatchWait) and how a classifier is
loaded, without Ray."""

from __future__ import annotations

import pytest

from deployments.classifier import BatchWait
from serve_app.config import ClassifierOptions


def test_adaptive_wait_opens_only_after_a_batch_with_company() -> None:
    wait = BatchWait(0.002)
    assert wait.first() == 0.0  # an idle replica classifies the first prompt at once
    assert wait.after(1) == 0.0  # alone: the next prompt goes straight through too
    assert wait.after(5) == 0.002  # prompts overlapped: the next batch waits for company
    assert wait.after(32) == 0.002
    assert wait.after(1) == 0.0  # the burst is over


def test_fixed_wait_always_waits() -> None:
    wait = BatchWait(0.002, adaptive=False)
    assert wait.first() == 0.002
    assert [wait.after(n) for n in (1, 2, 1)] == [0.002, 0.002, 0.002]


def test_options_default_to_adaptive_and_check_the_wait() -> None:
    options = ClassifierOptions()
    assert options.adaptive_batch_wait is True and options.batch_wait_timeout_s == 0.002
    with pytest.raises(ValueError):
        ClassifierOptions(batch_wait_timeout_s=-1)
    with pytest.raises(ValueError):
        ClassifierOptions.model_validate({"adaptive_batch_wait": True, "batch_wait": 1})


def test_ingress_threads_default_to_one() -> None:
    assert ClassifierOptions().ingress_threads == 1  # a second thread spins between passes
    assert ClassifierOptions(ingress_threads=2).ingress_threads == 2
    with pytest.raises(ValueError):
        ClassifierOptions(ingress_threads=0)


def test_a_two_thread_classifier_gives_the_same_answer() -> None:
    from deployments.classifier import load_classifier

    one, two = load_classifier("embedding", threads=1), load_classifier("embedding", threads=2)
    prompt = "Write a python function to reverse a string."
    [a], [b] = one.classify_many([prompt], quality=True), two.classify_many([prompt], quality=True)
    minilm = two.quality_embedder()  # type: ignore[attr-defined]
    assert minilm._session.get_session_options().intra_op_num_threads == 2
    assert a.task_type == b.task_type == "coding"
    assert b.complexity == pytest.approx(a.complexity, abs=1e-3)
    assert b.quality == pytest.approx(a.quality, abs=1e-3)


def test_a_batch_makes_the_minilm_pass_only_for_the_prompts_that_ask() -> None:
    from deployments.classifier import classify_batch
    from predictors.classification import Classification
    from predictors.keyword_classifier import KeywordClassifier

    class Recording(KeywordClassifier):
        def __init__(self) -> None:
            self.calls: list[tuple[list[str], bool]] = []

        def classify_many(self, texts: list[str], quality: bool = False) -> list[Classification]:
            self.calls.append((texts, quality))
            found = super().classify_many(texts)
            return [
                Classification(c.task_type, c.probabilities, c.complexity, {"m": 0.5} if quality else {})
                for c in found
            ]

    texts = ["Write a poem.", "Sort a list in Python.", "What is 2 + 2?"]
    core = Recording()
    results = classify_batch(core, texts, [False, True, False])
    assert [bool(r.quality) for r in results] == [False, True, False]
    assert [r.task_type for r in results] == [c.task_type for c in KeywordClassifier().classify_many(texts)]
    assert core.calls == [(["Write a poem.", "What is 2 + 2?"], False), (["Sort a list in Python."], True)]
    core.calls.clear()
    assert all(r.quality for r in classify_batch(core, texts, [True] * 3)) and core.calls == [(texts, True)]
    core.calls.clear()
    assert not any(r.quality for r in classify_batch(core, texts, [False] * 3)) and core.calls == [
        (texts, False)
    ]


def test_a_replica_preloads_the_quality_heads_minilm_off_the_request_path() -> None:
    from deployments.classifier import load_classifier, preload_in_background

    core = load_classifier("embedding")
    assert core._quality_embedder is None  # type: ignore[attr-defined]
    thread = preload_in_background(core)
    assert thread is not None
    thread.join(timeout=60)
    assert core._quality_embedder is not None  # type: ignore[attr-defined]
    assert preload_in_background(load_classifier("keyword")) is None  # nothing to load
