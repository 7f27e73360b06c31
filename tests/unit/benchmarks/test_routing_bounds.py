"""The routing bounds' pieces (benchmarks/routing_bounds.py): letters, cascades, the cheapest picks."""

from __future__ import annotations

import itertools

import numpy as np

from benchmarks.routing_bounds import (
    answer_letter,
    cascade,
    cheapest_mix,
    cheapest_pick,
    pareto_front,
    question_text,
    separation_needed,
)
from predictors.quality import cost_at


def test_the_answer_letter_is_read_from_the_stored_response() -> None:
    assert answer_letter("['A']", "ABCD") == "A"
    assert answer_letter("['B\\n']", "ABCD") == "B"
    assert answer_letter("['C)']", "ABCD") == "C"
    assert answer_letter("['The answer is D.']", "ABCD") == "D"  # "The" is a word, not a letter
    assert answer_letter("['C']", "AB") is None  # not one of the task's letters
    assert answer_letter("['']", "AB") is None
    assert answer_letter("not a list A", "AB") == "A"


def test_a_cascade_keeps_an_agreed_answer_and_pays_the_fallback_only_on_disagreement() -> None:
    right = np.array([[1.0, 1.0], [0.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    cost = np.array([[1.0, 2.0], [1.0, 2.0], [1.0, 2.0], [1.0, 2.0]])
    letters: list[list[str | None]] = [["A", "A"], ["B", "B"], ["A", "C"], [None, None]]
    outcome, spent = cascade(right, cost, letters, np.array([0.0, 1.0, 1.0, 0.0]), np.array([10.0] * 4))
    # agreed and right; agreed and wrong (the fallback is not asked); disagreed; unreadable = disagreed
    assert outcome.tolist() == [1.0, 0.0, 1.0, 0.0]
    assert spent.tolist() == [3.0, 3.0, 13.0, 13.0]


def test_the_pareto_front_drops_what_is_dearer_and_no_better() -> None:
    assert pareto_front([(1, 5), (2, 5), (2, 7), (3, 6), (0.5, 1)]) == [(0.5, 1), (1, 5), (2, 7)]


def test_the_cheapest_pick_is_the_exhaustive_minimum() -> None:
    rng = np.random.default_rng(3)
    options = {t: [(float(c), float(r)) for c, r in rng.integers(1, 20, size=(5, 2))] for t in "xyz"}
    for target in (10.0, 25.0, 40.0, 55.0):
        brute = [
            sum(p[0] for p in combo)
            for combo in itertools.product(*options.values())
            if sum(p[1] for p in combo) >= target
        ]
        assert cheapest_pick(options, target) == (min(brute) if brute else None)


def test_a_mix_takes_the_best_value_segments_first_and_interpolates() -> None:
    options = {
        "a": [(1.0, 1.0), (3.0, 5.0), (10.0, 6.0)],  # slopes 2 then 1/7
        "b": [(2.0, 2.0), (3.0, 5.0)],  # slope 3
    }
    curve = cheapest_mix(options)
    assert curve == [(3.0, 3.0), (4.0, 6.0), (6.0, 10.0), (13.0, 11.0)]
    assert cost_at(curve, 8.0) == 5.0  # halfway along a's first segment
    assert cost_at(curve, 12.0) is None  # more than any mix reaches
    # never dearer than picking whole options
    for target in (6.0, 10.0, 11.0):
        picked = cheapest_pick(options, target)
        mixed = cost_at(curve, target)
        assert picked is not None and mixed is not None and mixed <= picked


def test_the_question_is_the_last_paragraph() -> None:
    assert question_text("Q: 1+1?\nA) 2\nAnswer:\nA\n\nQ: 2+2?\nA) 4\nAnswer:") == "Q: 2+2?\nA) 4\nAnswer:"
    assert question_text("  one paragraph only\n") == "one paragraph only"


def test_a_noisy_oracle_needs_separation_to_route_below_the_strong_models_cost() -> None:
    n = 400
    cheap_right = (np.arange(n) % 2).astype(float)  # the cheap model is right on half
    right = np.stack([cheap_right, np.ones(n)], axis=1)  # the strong one always
    cost = np.tile([1.0, 10.0], (n, 1))
    tasks = np.array(["t"] * n)
    got = separation_needed(right, cost, tasks, right, cost, tasks, separations=(0.0, 6.0), draws=2)
    blind, sharp = got
    # knowing only base rates, every prompt must go to the strong model to match its accuracy
    assert blind["roc_auc"] == 0.5 and blind["cost_share_mean"] == 1.0
    # seeing (nearly) who is right, the cheap model takes its half: (0.5 x 1 + 0.5 x 10) / 10
    assert sharp["roc_auc"] > 0.99
    assert sharp["cost_share_mean"] is not None and abs(sharp["cost_share_mean"] - 0.55) < 0.02
