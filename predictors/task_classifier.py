"""The trained task-type and complexity classifier: static embeddings + two small linear heads.

Task type: a softmax over the four types, on the prompt's static embedding
(``predictors/static_embedding.py``) and its word n-grams (``predictors/ngrams.py``). Complexity:
the probability that the row's cheaper model does worse than its stronger one on this prompt
(trained on real win/loss and correctness data; see ``predictors/classifier_data.py``). The heads
are a small JSON artifact, the table an npz, both built deterministically by
``python -m predictors.train_classifier``. When asked, the quality heads' predictions too
(``predictors/quality.py``), on the prompt's MiniLM embedding (``predictors/embedding.py``): the one
transformer pass, made only for the requests that route on predicted quality.
"""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from predictors.classification import TASK_TYPES, Classification
from predictors.embedding import MiniLMEmbedder
from predictors.ngrams import NgramFeatures
from predictors.quality import QualityPredictor, load_heads, quality_features
from predictors.static_embedding import StaticEmbedder

ARTIFACT = Path(__file__).resolve().parent / "artifacts" / "classifier_heads.json"
QUALITY_ARTIFACT = Path(__file__).resolve().parent / "artifacts" / "quality_heads.json"
MAX_CHARS = 4000  # what the n-grams and the static embedding read; bounds tokenisation cost


class Embedder(Protocol):
    def embed(self, texts: list[str], batch_size: int = ...) -> npt.NDArray[np.float32]: ...

    def token_counts(self, texts: list[str]) -> list[int]: ...

    def embed_counted(self, texts: list[str]) -> tuple[npt.NDArray[np.float32], list[int]]:
        """``embed`` and ``token_counts`` together (the static table tokenises once for both)."""
        ...


def complexity_features(
    embeddings: npt.NDArray[np.float32], token_counts: list[int]
) -> npt.NDArray[np.float32]:
    length = np.log1p(np.asarray(token_counts, dtype=np.float32))[:, None] / 5.0
    return np.hstack([embeddings, length]).astype(np.float32)


class EmbeddingClassifier:
    """``embedder``: what the task and complexity heads read (the shipped static table unless given);
    ``quality_threads``: ONNX Runtime threads of the MiniLM pass behind the quality heads, loaded by
    ``preload_quality`` (the replicas call it as they start) or else at the first request that asks
    for them (or given as ``quality_embedder``)."""

    def __init__(
        self,
        artifact: Path = ARTIFACT,
        embedder: Embedder | None = None,
        quality_artifact: Path | None = QUALITY_ARTIFACT,
        quality_embedder: MiniLMEmbedder | None = None,
        quality_threads: int = 1,
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
        self._embedder: Embedder = embedder or StaticEmbedder()
        self._quality: QualityPredictor | None = (
            load_heads(quality_artifact)
            if quality_artifact is not None and quality_artifact.exists()
            else None
        )
        self._quality_embedder = quality_embedder
        self._quality_threads = quality_threads
        self._loading = threading.Lock()

    def quality_embedder(self) -> MiniLMEmbedder:
        with self._loading:  # a preload thread and a first request may ask at once: one load
            if self._quality_embedder is None:
                self._quality_embedder = MiniLMEmbedder(threads=self._quality_threads)
            return self._quality_embedder

    def preload_quality(self) -> None:
        """Load the MiniLM the quality heads read now (about 0.5 s), where they are shipped, so
        that the first request routed on predicted quality does not wait for it."""
        if self._quality is not None:
            self.quality_embedder()

    def classify_many(self, texts: list[str], quality: bool = False) -> list[Classification]:
        clipped = [t[:MAX_CHARS] for t in texts]
        emb, counts = self._embedder.embed_counted(clipped)
        logits = emb @ self._task_w.T + self._task_b
        if self._ngrams is not None:
            logits += self._ngrams.scores(clipped, self._ngram_w)
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)
        cx = complexity_features(emb, counts) @ self._cx_w + self._cx_b
        complexity = 1.0 / (1.0 + np.exp(-cx.astype(np.float64)))
        predictions: list[dict[str, float]] = [{} for _ in texts]
        if quality and self._quality is not None:
            minilm = self.quality_embedder().embed(clipped).astype(np.float64)
            predicted = self._quality.predict(quality_features(minilm, texts, complexity))
            predictions = [
                {m: round(float(p[i]), 4) for m, p in predicted.items()} for i in range(len(texts))
            ]
        out = []
        for i, (row, z) in enumerate(zip(probs, cx, strict=True)):
            best = int(row.argmax())
            out.append(
                Classification(
                    task_type=TASK_TYPES[best],
                    probabilities={t: round(float(p), 4) for t, p in zip(TASK_TYPES, row, strict=True)},
                    complexity=round(1.0 / (1.0 + math.exp(-float(z))), 4),
                    quality=predictions[i],
                )
            )
        return out

    def classify(self, text: str, quality: bool = False) -> Classification:
        return self.classify_many([text], quality)[0]
