"""The offline evaluation's reading of RouteLLM's MT-Bench data (benchmarks/routing_quality.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks.routing_quality import DATA, STRONG, WEAK, mt_bench, mt_bench_per_turn

pytestmark = pytest.mark.skipif(not DATA.exists(), reason="../shared/data is not beside the checkout")


def _judgments() -> dict[tuple[int, int, str], float]:
    path = DATA / "routellm-evals" / "mt_bench_judgements_gpt4-1106_mixtral.jsonl"
    out = {}
    for line in path.open():
        j = json.loads(line)
        out[(j["question_id"], j["turn"], STRONG if "gpt-4" in j["model"] else WEAK)] = float(j["score"])
    return out


def test_routellm_protocol_routes_a_question_on_its_first_turn_and_scores_both_turns() -> None:
    texts, strong, weak, qids = mt_bench()
    questions = {
        q["question_id"]: q["turns"]
        for q in map(json.loads, (DATA / "mt-bench" / "mt_bench_question.jsonl").open())
    }
    bad = {
        json.loads(line)["eval_prompt"]
        for line in (DATA / "routellm-evals" / "mt_bench_contaminated_prompts.jsonl").open()
    }
    assert len(qids) == len(set(qids)) == 72  # 80 questions less RouteLLM's 8 contaminated
    assert not any(bad & set(questions[q]) for q in qids)
    assert texts == [questions[q][0] for q in qids]
    scores = _judgments()
    for i, q in enumerate(qids):
        assert strong[i] == np.mean([scores[(q, 1, STRONG)], scores[(q, 2, STRONG)]])
        assert weak[i] == np.mean([scores[(q, 1, WEAK)], scores[(q, 2, WEAK)]])
    assert round(float(strong.mean()), 2) == 9.21 and round(float(weak.mean()), 2) == 8.28


def test_per_turn_items_are_read_on_their_last_user_turn() -> None:
    texts, strong, _weak, groups = mt_bench_per_turn()
    per_question = mt_bench()
    assert len(texts) == 144 and sorted(set(groups)) == sorted(per_question[3])
    assert all(groups.count(q) == 2 for q in set(groups))
    # the second turn's text is the question's second user turn, not its first
    assert texts[groups.index(per_question[3][0]) + 1] != per_question[0][0]
    assert float(strong.mean()) == pytest.approx(float(per_question[1].mean()))
