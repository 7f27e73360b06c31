"""Baseline task-type and complexity classifier: keyword and pattern features, no learning.

The reference the trained classifier is measured against (``benchmarks/classifier.py`` reports
both), and a fallback engine (``classifier.engine: keyword``): a weighted sum of regular-expression
hits per task type, a softmax over those scores, and a complexity from length, structure and
difficulty cues (not the trained "weaker model loses" probability).
"""

from __future__ import annotations

import math
import re

from predictors.classification import TASK_TYPES, Classification

__all__ = ["TASK_TYPES", "Classification", "KeywordClassifier"]


def _rx(*patterns: str) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE)


# (pattern, weight) per task type
_FEATURES: dict[str, list[tuple[re.Pattern[str], float]]] = {
    "coding": [
        (
            re.compile(
                r"```|\bdef \w+\(|\bfunction\s*\w*\(|=>|;\s*$|#include|\bimport \w+|\bclass \w+[:({]",
                re.MULTILINE,
            ),
            3.0,
        ),
        (
            _rx(
                r"\b(python|javascript|typescript|java|c\+\+|c#|golang|rust|kotlin|swift|sql|bash|html|css|react|"
                r"node\.?js|django|flask|pandas|numpy|regex|api|json|yaml|docker|kubernetes|git|linux|zig|php|ruby)\b"
            ),
            1.6,
        ),
        (
            _rx(
                r"\b(code|coding|program|script|function|method|bug|debug|compile|error|exception|algorithm|"
                r"implement|refactor|unit test|variable|array|string|loop|recursion|database|query|backend|"
                r"frontend|library|framework|install|deploy|server|repository)\b"
            ),
            1.0,
        ),
    ],
    "creative_writing": [
        (
            _rx(
                r"\b(story|poem|poetry|haiku|limerick|sonnet|lyrics|song|novel|fiction|fairy tale|fable|"
                r"screenplay|script for a|dialogue|character|plot|narrative|verse|rhyme|slogan|"
                r"tagline|joke)\b"
            ),
            2.2,
        ),
        (_rx(r"\b(write|compose|draft|create|craft|imagine|pretend|role-?play|act as|you are a)\b"), 0.9),
        (
            _rx(
                r"\b(blog post|essay|email|letter|speech|toast|advertisement|ad copy|tweet|social media post|"
                r"product description|persuasive|creative|funny|humorous|whimsical|vivid|engaging)\b"
            ),
            1.2,
        ),
    ],
    "analysis": [
        (
            _rx(
                r"\b(analy[sz]e|analysis|compare|contrast|evaluate|assess|explain why|reason|reasoning|"
                r"implications?|pros and cons|trade-?offs?|critique|argue|justify|interpret|summari[sz]e|"
                r"extract|classify|derive|prove|estimate)\b"
            ),
            1.5,
        ),
        (
            _rx(
                r"\b(calculate|compute|solve|equation|probability|integral|derivative|matrix|theorem|"
                r"statistics?|percent|average|how many|how much|ratio|function f|x\s*[\^=+\-*/]|"
                r"\d+\s*[+\-*/^]\s*\d+)"
            ),
            1.6,
        ),
        (
            _rx(
                r"\b(economy|economic|market|strategy|policy|history|historical|scientific|physics|chemistry|"
                r"biology|philosoph\w*|ethic\w*|data|dataset|trend|research|study|evidence|cause|effect)\b"
            ),
            0.8,
        ),
    ],
    "simple_queries": [
        (_rx(r"^\s*(what|who|when|where|which|is|are|does|do|can|how)\b[^.?!]{0,80}\?\s*$"), 2.0),
        (_rx(r"^\s*(define|translate|spell|convert|list|name|give me)\b"), 1.0),
        (
            _rx(
                r"\b(capital of|meaning of|definition of|synonym|antonym|what time|how old|how tall|"
                r"stand for|abbreviation)\b"
            ),
            1.5,
        ),
    ],
}

_PRIOR = {"coding": 0.0, "creative_writing": 0.0, "analysis": 0.3, "simple_queries": 0.2}

_HARD_CUES = _rx(
    r"\b(optimi[sz]e|complex|advanced|detailed|step[- ]by[- ]step|prove|rigorous|efficient|concurren\w*|"
    r"distributed|scalable|edge cases?|architecture|multi-?step|comprehensive|in depth|constraints?)\b"
)


def _complexity(text: str, task_type: str) -> float:
    n_words = len(text.split())
    length = min(1.0, math.log1p(n_words) / math.log1p(400))
    structure = min(1.0, (text.count("\n") + text.count("```") * 3) / 20)
    hard = min(1.0, len(_HARD_CUES.findall(text)) / 3)
    base = 0.5 * length + 0.2 * structure + 0.3 * hard
    if task_type == "simple_queries":
        base *= 0.6
    return round(min(1.0, max(0.0, base)), 4)


class KeywordClassifier:
    """Pure Python; ``classify_many`` is what the batched Serve deployment calls."""

    def classify(self, text: str) -> Classification:
        sample = text[:4000]
        scores = {t: _PRIOR[t] for t in TASK_TYPES}
        for task, feats in _FEATURES.items():
            for pattern, weight in feats:
                hits = len(pattern.findall(sample))
                if hits:
                    scores[task] += weight * min(3.0, 1.0 + math.log(hits))
        n_words = len(sample.split())
        if n_words <= 15:
            scores["simple_queries"] += 1.0
        elif n_words > 60:
            scores["simple_queries"] -= 1.0
        top = max(scores.values())
        exp = {t: math.exp(s - top) for t, s in scores.items()}
        total = sum(exp.values())
        probs = {t: round(v / total, 4) for t, v in exp.items()}
        task = max(TASK_TYPES, key=lambda t: scores[t])
        return Classification(task_type=task, probabilities=probs, complexity=_complexity(sample, task))

    def classify_many(self, texts: list[str], quality: bool = False) -> list[Classification]:
        return [self.classify(t) for t in texts]  # no quality heads: ``quality`` finds none
