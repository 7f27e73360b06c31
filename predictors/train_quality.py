"""Train the shipped quality heads; writes predictors/artifacts/quality_heads.json.

    python -m predictors.train_quality [--data ../shared/data]

One logistic regression per model of routerbench-subset (11 real models with per-prompt
correctness and cost) on the train split only, over the prompt's MiniLM embedding (the one
transformer pass the classifier makes, for requests routed on predicted quality), log length and
log digit count, and the classifier's complexity (from its static-embedding head).
``routing.quality_target`` then routes on them: each configured model names the RouterBench model
whose results stand in for it (``models.<name>.quality_proxy``).
Deterministic (lbfgs, rounded weights). The evaluation on the test split is
``python -m benchmarks.routing_quality``.
"""

from __future__ import annotations

import argparse
import ast
import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from predictors.classifier_data import SHARED_DATA
from predictors.embedding import MiniLMEmbedder
from predictors.quality import QualityPredictor, quality_features
from predictors.task_classifier import MAX_CHARS, EmbeddingClassifier

ARTIFACT = Path(__file__).resolve().parent / "artifacts" / "quality_heads.json"
SETS = ("arc_challenge", "mbpp", "winograde")
C = 0.5


def prompt_text(raw: str) -> str:
    try:
        parts = ast.literal_eval(raw)
        return "\n".join(parts) if isinstance(parts, list) else str(parts)
    except (ValueError, SyntaxError):
        return raw


def load(data: Path, split: str) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """(texts, models, correctness [n, m] with NaN unknown, cost [n, m]); duplicates dropped."""
    rows: list[dict[str, str]] = []
    for name in SETS:
        rows.extend(csv.DictReader((data / "routerbench-subset" / f"{name}_{split}.csv").open()))
    models = [c for c in rows[0] if "|" not in c and c not in ("", "sample_id", "prompt", "eval_name")]
    models = [m for m in models if f"{m}|total_cost" in rows[0] and m != "oracle_model_to_route_to"]
    seen: set[str] = set()
    kept = []
    for r in rows:
        if r["sample_id"] in seen:
            continue
        seen.add(r["sample_id"])
        kept.append(r)

    def value(r: dict[str, str], key: str) -> float:
        return float(r[key]) if r[key] not in ("", "nan") else np.nan

    y = np.array([[value(r, m) for m in models] for r in kept])
    cost = np.array([[value(r, f"{m}|total_cost") for m in models] for r in kept])
    return [prompt_text(r["prompt"]) for r in kept], models, y, cost


def train(data: Path) -> dict[str, Any]:
    texts, models, y, cost = load(data, "train")
    embedder = MiniLMEmbedder()
    classifier = EmbeddingClassifier(quality_embedder=embedder)  # its complexity: the static head's
    clipped = [t[:MAX_CHARS] for t in texts]
    emb = embedder.embed(clipped, batch_size=64)
    complexity = np.array([c.complexity for c in classifier.classify_many(clipped)])
    x = quality_features(emb.astype(np.float64), texts, complexity)
    predictor = QualityPredictor.fit(x, {m: y[:, j] for j, m in enumerate(models)}, c=C)
    return {
        "source": "routerbench-subset train split (arc_challenge, mbpp, winograde)",
        "features": ["minilm-l6 embedding (384)", "log chars", "log digits", "complexity"],
        "n_train": len(texts),
        "models": models,
        "coef": {
            m: [round(float(v), 6) for v in predictor.coefs[m][0]] for m in models if m in predictor.coefs
        },
        "intercept": {m: round(predictor.coefs[m][1], 6) for m in models if m in predictor.coefs},
        "base_rate": {m: round(v, 4) for m, v in predictor.base_rates.items()},
        "mean_cost_usd": {m: round(float(np.nanmean(cost[:, j])), 8) for j, m in enumerate(models)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=SHARED_DATA)
    parser.add_argument("--out", type=Path, default=ARTIFACT)
    args = parser.parse_args()
    heads = train(args.data)
    args.out.write_text(json.dumps(heads, separators=(",", ":")) + "\n")
    print(f"wrote {args.out}: {len(heads['models'])} models, {heads['n_train']} prompts")


if __name__ == "__main__":
    main()
