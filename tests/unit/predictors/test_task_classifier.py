from __future__ import annotations

import json
from pathlib import Path

import pytest

from predictors.classification import TASK_TYPES
from predictors.classifier_data import SHARED_DATA, Example, load_examples
from predictors.embedding import MiniLMEmbedder
from predictors.task_classifier import ARTIFACT, EmbeddingClassifier
from predictors.train_classifier import train


@pytest.fixture(scope="module")
def classifier() -> EmbeddingClassifier:
    return EmbeddingClassifier()


@pytest.mark.parametrize(
    ("text", "task"),
    [
        ("Write a Python function that merges two sorted lists and add unit tests.", "coding"),
        (
            "My React component re-renders forever when I call setState in useEffect. How do I fix it?",
            "coding",
        ),
        ("Write a short poem about the sea at night.", "creative_writing"),
        ("Write a bedtime story about a dragon who is afraid of the dark.", "creative_writing"),
        (
            "A train leaves at 3pm at 60 mph; another leaves at 4pm at 80 mph. "
            "When does the second catch up?",
            "analysis",
        ),
        ("Analyze the pros and cons of remote work for productivity, with evidence.", "analysis"),
        ("What is the capital of France?", "simple_queries"),
        ("How many ounces are in a cup?", "simple_queries"),
    ],
)
def test_known_prompts(classifier: EmbeddingClassifier, text: str, task: str) -> None:
    assert classifier.classify(text).task_type == task


def test_outputs_are_well_formed_and_batch_matches_single(classifier: EmbeddingClassifier) -> None:
    texts = ["hi", "Write a sonnet about rain.", "Explain the causes of inflation.", "def f(x): return x"]
    batch = classifier.classify_many(texts)
    for text, c in zip(texts, batch, strict=True):
        assert set(c.probabilities) == set(TASK_TYPES)
        assert abs(sum(c.probabilities.values()) - 1.0) < 1e-3
        assert 0.0 <= c.complexity <= 1.0
        single = classifier.classify(text)
        assert single.task_type == c.task_type
        assert abs(single.complexity - c.complexity) < 1e-3


@pytest.mark.parametrize("text", ["", "   ", "\x00\x01", "🙂" * 50, "x" * 2_000_000, "word " * 100_000])
def test_degenerate_input_has_a_defined_result(classifier: EmbeddingClassifier, text: str) -> None:
    c = classifier.classify(text)
    assert c.task_type in TASK_TYPES and 0.0 <= c.complexity <= 1.0


def test_complexity_separates_hard_from_easy(classifier: EmbeddingClassifier) -> None:
    """The head was trained on where the weaker model lost; check it ranks a few obvious pairs."""
    easy = classifier.classify("What is 2 + 3?")
    hard = classifier.classify(
        "Implement a lock-free concurrent skip list in C++ with memory reclamation via hazard pointers, "
        "prove its linearizability, and analyze its complexity under contention."
    )
    assert hard.complexity > easy.complexity


def test_artifact_is_small_and_describes_itself() -> None:
    heads = json.loads(ARTIFACT.read_text())
    assert ARTIFACT.stat().st_size < 400_000
    assert heads["task_types"] == list(TASK_TYPES)
    assert len(heads["task"]["coef"]) == 4 and len(heads["task"]["coef"][0]) == 384
    terms = heads["ngrams"]["terms"]
    assert 1000 < len(terms) == len(set(terms)) == len(heads["ngrams"]["idf"])
    assert len(heads["task"]["ngram_coef"]) == 4 and len(heads["task"]["ngram_coef"][0]) == len(terms)
    assert len(heads["complexity"]["coef"]) == 385
    assert "codealpaca" not in heads["train_counts"]["by_source"]


@pytest.mark.skipif(not SHARED_DATA.exists(), reason="../shared/data is not beside the checkout")
def test_training_data_respects_splits_and_licences() -> None:
    rows = load_examples()
    train_sources = {e.source for e in rows if e.split == "train"}
    assert "codealpaca" not in train_sources and "mt-bench" not in train_sources
    assert all(e.licence_eval_only for e in rows if e.source == "codealpaca")
    labels = {e.task_type for e in rows if e.split == "train"}
    assert labels == set(TASK_TYPES)
    assert {e.task_type for e in rows if e.source == "handwritten"} == {"simple_queries"}
    assert sum(1 for e in rows if e.weak_lost == 1) > 200  # complexity has a real signal to learn


def test_training_is_deterministic(tmp_path: Path) -> None:
    texts = [
        ("def add(a, b): return a + b  # fix the bug", "coding", 1),
        ("Write a poem about spring", "creative_writing", 0),
        ("Solve 3x + 5 = 20", "analysis", 1),
        ("What is the capital of Peru?", "simple_queries", 0),
    ] * 6
    rows = [
        Example(t + f" #{i}", task, "synthetic", "train", lost) for i, (t, task, lost) in enumerate(texts)
    ]
    embedder = MiniLMEmbedder()
    assert json.dumps(train(rows, embedder)) == json.dumps(train(rows, embedder))
