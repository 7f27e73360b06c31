"""Self-tuning routing thresholds: per task type, move the threshold toward the quality target.

The router sends a request to the stronger model when the predicted chance that the cheaper one
falls short (``predictors/quality.py``) is at least the task type's threshold. A higher threshold
means fewer strong calls: cheaper, and lower quality. ``ThresholdTuner`` adjusts it online from
observed outcomes (a feedback score, an error, a judged answer, each mapped to a quality in [0, 1]):

    threshold <- clip(threshold + step x (observed quality - target), low, high)

a Robbins-Monro stochastic approximation: above the target the threshold rises (cheaper), below it
falls (better). Because expected quality falls monotonically as the threshold rises, the threshold
settles where expected quality equals the target, which is also the cheapest threshold that meets
it. Bounded: the threshold never leaves [low, high], the step decays geometrically to
``min_step`` (so it keeps tracking slow drift), and ``min_observations`` outcomes are needed before
the first move. ``benchmarks/threshold_tuning.py`` shows it converging on RouteLLM's GSM8K and MMLU
data.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ThresholdTuner:
    target: float  # the mean quality wanted, in [0, 1]
    threshold: float = 0.5
    step: float = 0.02
    decay: float = 0.9995
    min_step: float = 0.002
    low: float = 0.0
    high: float = 1.0
    min_observations: int = 20
    observations: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.low <= self.threshold <= self.high <= 1.0:
            raise ValueError("need 0 <= low <= threshold <= high <= 1")
        if not 0.0 <= self.target <= 1.0:
            raise ValueError("the quality target lies in [0, 1]")

    def use_strong(self, predicted_shortfall: float) -> bool:
        """Route to the stronger model? ``predicted_shortfall``: P(the cheaper answer falls short)."""
        return predicted_shortfall >= self.threshold

    def observe(self, quality: float) -> None:
        """One served request's quality in [0, 1] (clipped)."""
        quality = min(1.0, max(0.0, quality))
        self.observations += 1
        if self.observations < self.min_observations:
            return
        moved = self.threshold + self.step * (quality - self.target)
        self.threshold = min(self.high, max(self.low, moved))
        self.step = max(self.min_step, self.step * self.decay)


@dataclass
class TaskThresholds:
    """One tuner per task type, all with the same settings but their own targets."""

    targets: dict[str, float]
    tuners: dict[str, ThresholdTuner] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for task, target in self.targets.items():
            self.tuners.setdefault(task, ThresholdTuner(target=target))

    def use_strong(self, task: str, predicted_shortfall: float) -> bool:
        return self.tuners[task].use_strong(predicted_shortfall)

    def observe(self, task: str, quality: float) -> None:
        self.tuners[task].observe(quality)

    def thresholds(self) -> dict[str, float]:
        return {task: t.threshold for task, t in self.tuners.items()}
