"""Do the self-tuning thresholds converge to the quality target, at the least cost?

    python -m benchmarks.threshold_tuning

On RouteLLM's GSM8K and MMLU data (GPT-4 vs Mixtral, exact-match correctness), with the quality
predictor's cross-fitted scores (``benchmarks/routing_quality.py``: no prompt is scored by a model
that saw it): 30,000 requests drawn at random from each set are routed by a ``ThresholdTuner``
(``predictors/threshold_tuning.py``) that sees only each served answer's correctness. The target is
the quality that recovers 80% of the gap between the weak and the strong model. Started from three
thresholds (0.05, 0.5, 0.95), it is compared with the offline optimum: the highest threshold whose
quality over the whole set meets the target (the fewest strong calls that do). Reported over the
last 10,000 requests: quality, share of strong calls, and the final threshold.

Writes benchmarks/results/threshold_tuning.json and threshold_tuning.png.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.report import pyplot
from benchmarks.routing_quality import cross_fitted_scores, features, gsm8k, mmlu
from predictors.threshold_tuning import ThresholdTuner

RESULTS = Path(__file__).resolve().parent / "results"
REQUESTS = 30_000
TAIL = 10_000
PGR_TARGET = 0.8


def offline_optimum(
    score: np.ndarray, strong: np.ndarray, weak: np.ndarray, target: float
) -> tuple[float, float]:
    """(threshold, share of strong calls): the highest threshold whose quality meets the target."""
    best = (0.0, 1.0)
    for tau in np.unique(score):
        use = score >= tau
        if np.where(use, strong, weak).mean() >= target:
            best = (float(tau), float(use.mean()))
    return best


def simulate(
    score: np.ndarray, strong: np.ndarray, weak: np.ndarray, target: float, start: float
) -> dict[str, Any]:
    rng = np.random.default_rng(7)
    tuner = ThresholdTuner(target=target, threshold=start)
    picks = rng.integers(0, len(score), REQUESTS)
    quality = np.zeros(REQUESTS)
    used_strong = np.zeros(REQUESTS, dtype=bool)
    path = np.zeros(REQUESTS)
    for n, i in enumerate(picks):
        use = tuner.use_strong(float(score[i]))
        q = float(strong[i] if use else weak[i])
        tuner.observe(q)
        quality[n], used_strong[n], path[n] = q, use, tuner.threshold
    return {
        "start": start,
        "final_threshold": round(tuner.threshold, 4),
        "tail_mean_threshold": round(float(path[-TAIL:].mean()), 4),
        "tail_quality": round(float(quality[-TAIL:].mean()), 4),
        "tail_strong_share": round(float(used_strong[-TAIL:].mean()), 4),
        "_path": path,
    }


def main() -> None:
    out: dict[str, Any] = {}
    paths: dict[str, list[np.ndarray]] = {}
    for name, loader in (("gsm8k", gsm8k), ("mmlu", mmlu)):
        texts, strong, weak, groups = loader()
        score, _ = cross_fitted_scores(features(texts), strong, weak, groups)  # own folds only
        target = float(weak.mean() + PGR_TARGET * (strong.mean() - weak.mean()))
        tau, share = offline_optimum(score, strong, weak, target)
        runs = [simulate(score, strong, weak, target, start) for start in (0.05, 0.5, 0.95)]
        paths[name] = [r.pop("_path") for r in runs]
        out[name] = {
            "target_quality": round(target, 4),
            "strong_quality": round(float(strong.mean()), 4),
            "weak_quality": round(float(weak.mean()), 4),
            "offline_threshold": round(tau, 4),
            "offline_strong_share": round(share, 4),
            "runs": runs,
        }
        print(name, json.dumps(out[name]), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "threshold_tuning.json").write_text(json.dumps(out, indent=2) + "\n")
    plot(out, paths, RESULTS / "threshold_tuning.png")


def plot(out: dict[str, Any], paths: dict[str, list[np.ndarray]], path: Path) -> None:
    plt = pyplot()

    fig, axes = plt.subplots(1, len(paths), figsize=(12, 4))
    for ax, (name, runs) in zip(axes, paths.items(), strict=True):
        for run, p in zip(out[name]["runs"], runs, strict=True):
            ax.plot(p, linewidth=1, label=f"start {run['start']}")
        ax.axhline(out[name]["offline_threshold"], color="black", linestyle="--", label="offline optimum")
        ax.set_title(f"{name}: threshold over requests")
        ax.set_xlabel("requests")
        ax.set_ylabel("threshold")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
