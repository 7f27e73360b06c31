"""Word n-gram TF-IDF features for the task head, beside the MiniLM embedding.

The embedding sees what a prompt is about; the words say what it asks for ("write a poem",
"def", "explain why"). Trained with scikit-learn's ``TfidfVectorizer`` (unigrams and bigrams,
sublinear term frequency, L2-normalised rows), then served by this module alone from the
vocabulary and IDF weights kept in the heads' JSON artifact: the same tokens (lower-cased
``\\b\\w\\w+\\b``, as scikit-learn's default), the same weights, in plain Python. The task head's
n-gram weights are read for the prompt's terms only, never as a dense row.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np
import numpy.typing as npt

TOKEN = re.compile(r"(?u)\b\w\w+\b")  # scikit-learn's default token_pattern
NGRAMS = (1, 2)


def terms(text: str) -> list[str]:
    """The prompt's unigrams and bigrams, as scikit-learn's word analyzer builds them."""
    tokens = TOKEN.findall(text.lower())
    out = list(tokens)
    out += [f"{a} {b}" for a, b in pairwise(tokens)]
    return out


@dataclass(frozen=True)
class NgramFeatures:
    vocabulary: dict[str, int]  # term -> column
    idf: npt.NDArray[np.float64]

    @classmethod
    def fit(cls, texts: Sequence[str], max_features: int) -> tuple[NgramFeatures, Any]:
        """Learn the vocabulary (terms in at least two prompts, the ``max_features`` most frequent)
        and IDF weights from training texts; returns the features and the training matrix."""
        from sklearn.feature_extraction.text import TfidfVectorizer  # training only

        vectorizer = TfidfVectorizer(
            ngram_range=NGRAMS, sublinear_tf=True, min_df=2, max_features=max_features, lowercase=True
        )
        matrix = vectorizer.fit_transform(texts)
        vocabulary = {str(t): int(i) for t, i in vectorizer.vocabulary_.items()}
        return cls(vocabulary, np.asarray(vectorizer.idf_, dtype=np.float64)), matrix

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> NgramFeatures:
        names: list[str] = data["terms"]
        return cls({t: i for i, t in enumerate(names)}, np.asarray(data["idf"], dtype=np.float64))

    def to_json(self) -> dict[str, Any]:
        names = sorted(self.vocabulary, key=lambda t: self.vocabulary[t])
        return {
            "terms": names,
            "idf": np.round(self.idf, 6).tolist(),
            "analyzer": "word 1-2 grams, lower-cased \\b\\w\\w+\\b, sublinear tf x idf, L2-normalised",
        }

    def weights(self, text: str) -> dict[int, float]:
        """The prompt's TF-IDF row, sparse: column -> weight (L2 norm 1; empty without known terms)."""
        counts = Counter(c for c in (self.vocabulary.get(t) for t in terms(text)) if c is not None)
        row = {c: (1.0 + math.log(n)) * float(self.idf[c]) for c, n in counts.items()}
        norm = math.sqrt(sum(w * w for w in row.values()))
        return {c: w / norm for c, w in row.items()} if norm else {}

    def scores(self, texts: Sequence[str], coef: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """``rows x coef.T`` for the texts' TF-IDF rows, without building them: (n, classes)."""
        out = np.zeros((len(texts), coef.shape[0]), dtype=np.float32)
        for i, text in enumerate(texts):
            row = self.weights(text)
            if row:
                columns = np.fromiter(row.keys(), dtype=np.intp, count=len(row))
                out[i] = coef[:, columns] @ np.fromiter(row.values(), dtype=np.float32, count=len(row))
        return out
