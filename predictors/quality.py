"""Quality predictor: for a prompt and each candidate model, the probability of a good answer.

One logistic regression per model on the prompt's MiniLM embedding (``predictors/embedding.py``,
the classifier's embeddings), L2-regularised, with the model's base rate as the prior when a model
has too few examples. Plain Python (numpy, scikit-learn); trained and scored by
``benchmarks/routing_quality.py``.

Routing rules built on it (``route_cheapest``): the cheapest candidate whose predicted quality
meets a target; sweeping the target traces the router's cost-quality curve.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

Matrix = npt.NDArray[np.float64]


@dataclass
class QualityPredictor:
    models: list[str]
    coefs: dict[str, tuple[Matrix, float]]  # model -> (weights, intercept); absent: base rate
    base_rates: dict[str, float]

    @classmethod
    def fit(
        cls,
        x: Matrix,
        labels: dict[str, npt.NDArray[np.float64]],
        c: float = 1.0,
        min_examples: int = 30,
        weights: npt.NDArray[np.float64] | None = None,
    ) -> QualityPredictor:
        """``labels[model]``: 1 for a good answer, 0 for a bad one, NaN where unknown; ``weights``
        per row (e.g. to keep a large auxiliary dataset from swamping a small one)."""
        from sklearn.linear_model import LogisticRegression  # training only: a dev dependency

        coefs: dict[str, tuple[Matrix, float]] = {}
        base: dict[str, float] = {}
        for model, y in labels.items():
            known = ~np.isnan(y)
            yk = y[known]
            base[model] = float(yk.mean()) if len(yk) else 0.5
            if len(yk) < min_examples or yk.min() == yk.max():
                continue
            lr = LogisticRegression(C=c, max_iter=2000)
            lr.fit(x[known], yk.astype(int), sample_weight=None if weights is None else weights[known])
            coefs[model] = (lr.coef_[0].astype(np.float64), float(lr.intercept_[0]))
        return cls(list(labels), coefs, base)

    def predict(self, x: Matrix) -> dict[str, npt.NDArray[np.float64]]:
        """model -> P(good answer) for each row of ``x``."""
        out: dict[str, npt.NDArray[np.float64]] = {}
        for model in self.models:
            if model in self.coefs:
                w, b = self.coefs[model]
                out[model] = 1.0 / (1.0 + np.exp(-(x @ w + b)))
            else:
                out[model] = np.full(len(x), self.base_rates[model])
        return out


def quality_features(
    embeddings: Matrix, texts: Sequence[str], complexity: npt.NDArray[np.float64] | None = None
) -> Matrix:
    """The prompt's embedding, its length and digit count (log-scaled) and, for the shipped heads,
    the classifier's complexity: what a prompt's difficulty shows before any model has seen it."""
    chars = np.log1p(np.array([len(t) for t in texts], dtype=float))[:, None]
    digits = np.log1p(np.array([sum(ch.isdigit() for ch in t) for t in texts], dtype=float))[:, None]
    parts = [embeddings, (chars - 5.0) / 2.0, digits / 2.0]
    if complexity is not None:
        parts.append(np.asarray(complexity, dtype=float)[:, None] - 0.5)
    return np.hstack(parts)


def load_heads(path: Path) -> QualityPredictor:
    """The shipped heads (``python -m predictors.train_quality``)."""
    heads = json.loads(path.read_text())
    coefs = {
        m: (np.asarray(heads["coef"][m], dtype=np.float64), float(heads["intercept"][m]))
        for m in heads["coef"]
    }
    return QualityPredictor(
        list(heads["models"]), coefs, {m: float(v) for m, v in heads["base_rate"].items()}
    )


def route_cheapest(
    predicted: dict[str, npt.NDArray[np.float64]], costs: dict[str, float], target: float
) -> list[str]:
    """Per prompt: the cheapest model whose predicted quality is at least ``target``; where none
    is, the model with the highest predicted quality."""
    order = sorted(costs, key=lambda m: costs[m])
    n = len(next(iter(predicted.values())))
    choice: list[str] = []
    for i in range(n):
        pick = next((m for m in order if predicted[m][i] >= target), None)
        if pick is None:
            pick = max(order, key=lambda m: predicted[m][i])
        choice.append(pick)
    return choice


def route_utility(
    predicted: dict[str, npt.NDArray[np.float64]], costs: dict[str, float], cost_weight: float
) -> list[str]:
    """Per prompt: the model with the best predicted quality minus ``cost_weight`` x its cost (in
    units of the dearest model's cost): 0 picks the likeliest to be right, large values the cheapest."""
    models = list(costs)
    scale = max(costs.values()) or 1.0
    stacked = np.stack([predicted[m] - cost_weight * costs[m] / scale for m in models])
    return [models[i] for i in np.argmax(stacked, axis=0)]


def pareto_hull(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The upper-left convex hull of (cost, quality) points, from cheapest to dearest: what any mix
    of the given routers (or models) can reach."""
    pts = sorted(set(points))
    hull: list[tuple[float, float]] = []
    for p in pts:
        if hull and p[1] <= hull[-1][1]:
            continue  # dominated: dearer and no better
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            if (y2 - y1) * (p[0] - x1) <= (p[1] - y1) * (x2 - x1):
                hull.pop()  # the middle point lies under the line from its neighbours
            else:
                break
        hull.append(p)
    return hull


def cost_at(curve: Sequence[tuple[float, float]], quality: float) -> float | None:
    """The cost at which a (cost, quality) curve rising from cheapest to dearest, such as
    ``pareto_hull``'s, first reaches ``quality`` (linear between its points); None if it never does."""
    if not curve or curve[-1][1] < quality - 1e-9:
        return None
    return float(np.interp(quality, [q for _, q in curve], [c for c, _ in curve]))


def area_under(hull: list[tuple[float, float]], low: float, high: float) -> float:
    """Mean quality over costs [low, high] of the hull's best reachable quality (RouterBench's AIQ):
    below the hull's cheapest point nothing is reachable (quality 0), past its dearest, flat."""
    if not hull or high <= low:
        return 0.0
    xs = np.linspace(low, high, 2001)
    hx = np.array([p[0] for p in hull])
    hy = np.array([p[1] for p in hull])
    ys = np.where(xs < hx[0], 0.0, np.interp(xs, hx, hy))
    return float(np.trapezoid(ys, xs) / (high - low))
