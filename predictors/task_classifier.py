"""The trained task-type and complexity classifier: MiniLM embeddings + two small linear heads.

Task type: a softmax over the four types, on the embedding and the prompt's word n-grams
(``predictors/ngrams.py``). Complexity: the probability that the row's cheaper model
does worse than its stronger one on this prompt (trained on real win/loss and correctness data; see
``predictors/classifier_data.py``). The heads are a small JSON artifact built deterministically by
``python -m predictors.train_classifier``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from predictors.classification import TASK_TYPES, Classification
from predictors.embedding import MiniLMEmbedder
from predictors.ngrams import NgramFeatures
from predictors.quality import load_heads, quality_features

ARTIFACT = Path(__file__).resolve().parent / "artifacts" / "classifier_heads.json"
QUALITY_ARTIFACT = Path(__file__).resolve().parent / "artifacts" / "quality_heads.json"
MAX_CHARS = 4000  # what the n-grams read (the embedding: 64 tokens); bounds tokenisation cost


def complexity_features(
    embeddings: npt.NDArray[np.float32], token_counts: list[int]
) -> npt.NDArray[np.float32]:
    length = np.log1p(np.asarray(token_counts, dtype=np.float32))[:, None] / 5.0
    return np.hstack([embeddings, length]).astype(np.float32)


class EmbeddingClassifier:
    def __init__(
        self,
        artifact: Path = ARTIFACT,
        embedder: MiniLMEmbedder | None = None,
        quality_artifact: Path | None = QUALITY_ARTIFACT,
    ) -> None:
        heads: dict[str, Any] = json.loads(artifact.read_text())
        if tuple(heads["task_types"]) != TASK_TYPES:
            raise ValueError(f"{artifact}: task types {heads['task_types']} differ from {TASK_TYPES}")
        self._task_w = np.asarray(heads["task"]["coef"], dtype=np.float32)  # (4, 384)
        self._task_b = np.asarray(heads["task"]["intercept"], dtype=np.float32)
        self._ngrams = NgramFeatures.from_json(heads["ngrams"]) if "ngrams" in heads else None
        self._ngram_w = np.asarray(heads["task"].get("ngram_coef", []), dtype=np.float32)  # (4, terms)
        self._cx_w = np.asarray(heads["complexity"]["coef"], dtype=np.float32)  # (385,)
        self._cx_b = float(heads["complexity"]["intercept"])
        self.metadata = heads.get("metrics", {})
        self._embedder = embedder or MiniLMEmbedder()
        self._quality = (
            load_heads(quality_artifact)
            if quality_artifact is not None and quality_artifact.exists()
            else None
        )

    def classify_many(self, texts: list[str]) -> list[Classification]:
        clipped = [t[:MAX_CHARS] for t in texts]
        emb = self._embedder.embed(clipped)
        counts = self._embedder.token_counts(clipped)
        logits = emb @ self._task_w.T + self._task_b
        if self._ngrams is not None:
            logits += self._ngrams.scores(clipped, self._ngram_w)
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)
        cx = complexity_features(emb, counts) @ self._cx_w + self._cx_b
        complexity = 1.0 / (1.0 + np.exp(-cx.astype(np.float64)))
        quality: list[dict[str, float]] = [{} for _ in texts]
        if self._quality is not None:  # the same embedding: the quality heads cost a dot product
            predicted = self._quality.predict(quality_features(emb.astype(np.float64), texts, complexity))
            quality = [{m: round(float(p[i]), 4) for m, p in predicted.items()} for i in range(len(texts))]
        out = []
        for i, (row, z) in enumerate(zip(probs, cx, strict=True)):
            best = int(row.argmax())
            out.append(
                Classification(
                    task_type=TASK_TYPES[best],
                    probabilities={t: round(float(p), 4) for t, p in zip(TASK_TYPES, row, strict=True)},
                    complexity=round(1.0 / (1.0 + math.exp(-float(z))), 4),
                    quality=quality[i],
                )
            )
        return out

    def classify(self, text: str) -> Classification:
        return self.classify_many([text])[0]
