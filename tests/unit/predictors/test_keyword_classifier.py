from __future__ import annotations

import pytest

from predictors.keyword_classifier import TASK_TYPES, KeywordClassifier


@pytest.mark.parametrize(
    ("text", "task"),
    [
        ("Write a Python function that parses a CSV file and returns a dict of columns.", "coding"),
        ("```js\nconst x = () => 1;\n```\nWhy does this throw an error?", "coding"),
        ("Write a short poem about autumn leaves and a lost love.", "creative_writing"),
        ("Compose a whimsical story for children about a dragon who bakes bread.", "creative_writing"),
        ("Analyze the economic implications of raising interest rates during a recession.", "analysis"),
        ("Solve for x: 3x + 7 = 22, and explain each step.", "analysis"),
        ("What is the capital of Japan?", "simple_queries"),
    ],
)
def test_obvious_prompts(text: str, task: str) -> None:
    assert KeywordClassifier().classify(text).task_type == task


def test_probabilities_and_complexity_are_well_formed() -> None:
    clf = KeywordClassifier()
    short = clf.classify("Who wrote Hamlet?")
    long = clf.classify(
        "Design a distributed, scalable rate limiter in Go. Explain the architecture step by step, "
        "handle edge cases such as clock skew, and optimize for low latency under concurrency.\n" * 5
    )
    for c in (short, long):
        assert set(c.probabilities) == set(TASK_TYPES)
        assert abs(sum(c.probabilities.values()) - 1.0) < 1e-3
        assert 0.0 <= c.complexity <= 1.0
        assert c.task_type == max(c.probabilities, key=lambda t: c.probabilities[t])
    assert long.complexity > short.complexity + 0.3


def test_batch_matches_single() -> None:
    clf = KeywordClassifier()
    texts = ["hello?", "write a sonnet", "debug my SQL query"]
    assert clf.classify_many(texts) == [clf.classify(t) for t in texts]
