"""The n-gram features served from the artifact are scikit-learn's TF-IDF rows, term for term."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer

from predictors.ngrams import NgramFeatures, terms

CORPUS = [
    "Write a poem about the sea at night.",
    "Write a Python function that reverses a linked list.",
    "Explain why the sky is blue, step by step.",
    "What is the capital of France?",
    "Write a short story about a robot who learns to paint.",
    "def add(a, b): return a + b  # why does this fail?",
    "Explain the causes of inflation in the 1970s.",
    "What is 2 + 2? Explain.",
    "Écris un poème sur la mer, s'il te plaît: la mer, la mer.",
]


def test_terms_are_scikit_learns_word_ngrams() -> None:
    analyzer = TfidfVectorizer(ngram_range=(1, 2), lowercase=True).build_analyzer()
    for text in [*CORPUS, "", "a b c", "snake_case_name and CamelCase, 42 x 7"]:
        assert terms(text) == analyzer(text)


@pytest.mark.parametrize("max_features", [5, 40, 10_000])
def test_rows_and_scores_match_scikit_learn(max_features: int) -> None:
    features, matrix = NgramFeatures.fit(CORPUS, max_features)
    assert len(features.vocabulary) <= max_features
    reference = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2, max_features=max_features)
    reference.fit(CORPUS)
    unseen = ["Write a poem about France.", "nothing known here", "", "the the the sea sea"]
    expected = reference.transform(CORPUS + unseen).toarray()
    assert np.allclose(matrix.toarray(), expected[: len(CORPUS)])
    for i, text in enumerate(CORPUS + unseen):
        row = np.zeros(len(features.vocabulary))
        for column, weight in features.weights(text).items():
            row[column] = weight
        assert np.allclose(row, expected[i]), text
    coef = np.random.default_rng(0).normal(size=(4, len(features.vocabulary))).astype(np.float32)
    assert np.allclose(features.scores(CORPUS + unseen, coef), expected @ coef.T, atol=1e-5)


def test_the_json_form_serves_the_same_rows() -> None:
    features, _ = NgramFeatures.fit(CORPUS, 100)
    loaded = NgramFeatures.from_json(features.to_json())
    assert loaded.vocabulary == features.vocabulary
    for text in CORPUS:
        mine, theirs = features.weights(text), loaded.weights(text)
        assert mine.keys() == theirs.keys()
        assert all(abs(mine[c] - theirs[c]) < 1e-5 for c in mine)
