"""Held-out evaluation of a task classifier (used by the training script and the benchmark)."""

from __future__ import annotations

from typing import Any

from sklearn.metrics import f1_score, roc_auc_score

from predictors.classification import TASK_TYPES
from predictors.classifier_data import Example


def evaluate(examples: list[Example], classify: Any) -> dict[str, Any]:
    test = [e for e in examples if e.split == "test"]
    preds = classify([e.text for e in test])
    gold = [e.task_type for e in test]
    got = [p.task_type for p in preds]
    labelled = [i for i, g in enumerate(gold) if g is not None]
    per_class = {}
    for t in TASK_TYPES:
        tp = sum(got[i] == gold[i] == t for i in labelled)
        fp = sum(got[i] == t != gold[i] for i in labelled)
        fn = sum(gold[i] == t != got[i] for i in labelled)
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[t] = {
            "precision": round(precision, 4),
            "recall": round(recall, 4),
            "f1": round(f1, 4),
            "support": tp + fn,
        }
    confusion = [
        [sum(1 for i in labelled if gold[i] == a and got[i] == b) for b in TASK_TYPES] for a in TASK_TYPES
    ]
    per_source: dict[str, dict[str, Any]] = {}
    for source in sorted({e.source for e in test}):
        idx = [i for i in labelled if test[i].source == source]
        per_source[source] = {
            "accuracy": round(sum(got[i] == gold[i] for i in idx) / len(idx), 4),
            "n": len(idx),
        }
    judged = [i for i, e in enumerate(test) if e.weak_lost is not None]
    y = [test[i].weak_lost for i in judged]
    auc = roc_auc_score(y, [preds[i].complexity for i in judged]) if len(set(y)) > 1 else None
    length_auc = roc_auc_score(y, [len(test[i].text) for i in judged]) if len(set(y)) > 1 else None
    return {
        "macro_f1": round(
            float(
                f1_score(
                    [gold[i] for i in labelled],
                    [got[i] for i in labelled],
                    labels=list(TASK_TYPES),
                    average="macro",
                )
            ),
            4,
        ),
        "per_class": per_class,
        "per_source": per_source,
        "confusion": confusion,
        "confusion_labels": list(TASK_TYPES),
        "complexity_auc": round(float(auc), 4) if auc is not None else None,
        "complexity_auc_length_only": round(float(length_auc), 4) if length_auc is not None else None,
        "complexity_n": len(judged),
        "n_test": len(labelled),
    }
