"""Labelled prompts for the task-type and complexity heads, from ../shared/data and one own file.

Task type, per source (label mapping; split):

- arena-hard v2.0: hard_prompt/coding -> coding; hard_prompt/math -> analysis; creative_writing ->
  creative_writing (80% train / 20% test by uid hash).
- mt-bench, first turns: coding -> coding; writing, roleplay -> creative_writing; reasoning, math,
  stem, humanities, extraction -> analysis (test only: a held-out source).
- routellm gsm8k: -> analysis (math word problems; 80/20 by hash).
- routellm mmlu, all 57 subjects: -> analysis (college-level exam questions on which the stronger
  model gains 12 points; 80/20 by hash, capped per subject).
- routerbench mbpp: -> coding; arc-challenge (grade-school science, one letter) and winogrande
  (commonsense fill-in, one letter): -> simple_queries (RouterBench's own train / test split).
- predictors/data/handwritten_simple_queries.jsonl: -> simple_queries (written by this team;
  75% train / 25% test).
- codealpaca (CC BY-NC): -> coding, **evaluation only**, never trained on.

Complexity (did the weaker model lose to the stronger one on this prompt? 1 = yes):
routellm mt-bench judgments (Mixtral's score below GPT-4's, first turn), gsm8k and mmlu
correctness (Mixtral wrong, GPT-4 right), routerbench (Mixtral wrong, GPT-4 right), split as above.
"""

from __future__ import annotations

import ast
import csv
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
OWN_DATA = Path(__file__).resolve().parent / "data"

WEAK, STRONG = "mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"
RB_WEAK, RB_STRONG = "mistralai/mixtral-8x7b-chat", "gpt-4-1106-preview"

MT_BENCH = {
    "coding": "coding",
    "writing": "creative_writing",
    "roleplay": "creative_writing",
    "reasoning": "analysis",
    "math": "analysis",
    "stem": "analysis",
    "humanities": "analysis",
    "extraction": "analysis",
}
ARENA_V2 = {"coding": "coding", "math": "analysis", "creative_writing": "creative_writing"}
MMLU_PER_SUBJECT = 40  # caps so that the large multiple-choice sources do not drown the others
GSM8K_CAP = 500
ROUTERBENCH_TRAIN_CAP = 400


@dataclass(frozen=True)
class Example:
    text: str
    task_type: str | None  # None: no task label (complexity only)
    source: str
    split: str  # "train" or "test"
    weak_lost: int | None = None  # complexity label, None when the source has none
    licence_eval_only: bool = False


def _bucket(key: str, test_share: float) -> str:
    h = int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") / 2**32
    return "test" if h < test_share else "train"


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().split("\n") if line.strip()]


def _last_question(raw: str) -> str:
    """RouterBench prompts are str(list) with few-shot examples before the last question."""
    try:
        parts = ast.literal_eval(raw)
        text = "\n".join(parts) if isinstance(parts, list) else str(parts)
    except (ValueError, SyntaxError):
        text = raw
    blocks = re.split(r"Answer:\s*[A-E]\s*\n\n", text)
    return blocks[-1].strip()


def _bool(value: str) -> bool | None:
    if value in ("True", "1", "1.0"):
        return True
    if value in ("False", "0", "0.0"):
        return False
    return None


def _weak_lost(weak: bool | None, strong: bool | None) -> int | None:
    if weak is None or strong is None:
        return None
    return int(strong and not weak)


def load_examples(data: Path = SHARED_DATA, own: Path = OWN_DATA) -> list[Example]:
    rows: list[Example] = []

    for q in _jsonl(data / "arena-hard" / "arena_hard_v2.0_question.jsonl"):
        rows.append(
            Example(
                str(q["prompt"]),
                ARENA_V2[str(q["subcategory"])],
                "arena-hard-v2",
                _bucket(str(q["uid"]), 0.2),
            )
        )

    judgments: dict[tuple[int, str], float] = {}
    for j in _jsonl(data / "routellm-evals" / "mt_bench_judgements_gpt4-1106_mixtral.jsonl"):
        if j.get("turn") == 1:
            judgments[(int(j["question_id"]), str(j["model"]))] = float(j["score"])
    for q in _jsonl(data / "mt-bench" / "mt_bench_question.jsonl"):
        qid = int(q["question_id"])
        strong = judgments.get((qid, STRONG))
        weak = judgments.get((qid, WEAK))
        lost = int(weak < strong) if weak is not None and strong is not None else None
        turns = q["turns"]
        assert isinstance(turns, list)
        rows.append(Example(str(turns[0]), MT_BENCH[str(q["category"])], "mt-bench", "test", lost))

    with (data / "routellm-evals" / "gsm8k_responses.csv").open() as f:
        for i, r in enumerate(csv.DictReader(f)):
            if i >= GSM8K_CAP:
                break
            rows.append(
                Example(
                    r["prompt"],
                    "analysis",
                    "gsm8k",
                    _bucket(r["prompt"], 0.2),
                    _weak_lost(_bool(r[WEAK]), _bool(r[STRONG])),
                )
            )

    for path in sorted((data / "routellm-evals" / "mmlu_responses").glob("mmlu_*.csv")):
        with path.open() as f:
            for i, r in enumerate(csv.DictReader(f)):
                if i >= MMLU_PER_SUBJECT:
                    break
                rows.append(
                    Example(
                        r["prompt"],
                        "analysis",
                        "mmlu",
                        _bucket(r["prompt"], 0.2),
                        _weak_lost(_bool(r[WEAK]), _bool(r[STRONG])),
                    )
                )

    rb_labels = {"mbpp": "coding", "arc-challenge": "simple_queries", "winogrande": "simple_queries"}
    seen: set[str] = set()
    for name in ("mbpp", "arc_challenge", "winograde"):
        for split in ("train", "test"):
            with (data / "routerbench-subset" / f"{name}_{split}.csv").open() as f:
                for i, r in enumerate(csv.DictReader(f)):
                    text = _last_question(r["prompt"])
                    if text in seen or (split == "train" and i >= ROUTERBENCH_TRAIN_CAP):
                        continue  # the README warns of duplicates across the splits
                    seen.add(text)
                    rows.append(
                        Example(
                            text,
                            rb_labels[r["eval_name"]],
                            f"routerbench/{r['eval_name']}",
                            split,
                            _weak_lost(_bool(r[RB_WEAK]), _bool(r[RB_STRONG])),
                        )
                    )

    for q in _jsonl(own / "handwritten_simple_queries.jsonl"):
        rows.append(
            Example(str(q["prompt"]), "simple_queries", "handwritten", _bucket(str(q["prompt"]), 0.25))
        )

    codealpaca = data / "codealpaca" / "code_alpaca_2k.json"
    if codealpaca.exists():
        for item in json.loads(codealpaca.read_text())[:300]:
            text = (item["instruction"] + ("\n" + item["input"] if item.get("input") else "")).strip()
            rows.append(Example(text, "coding", "codealpaca", "test", licence_eval_only=True))
    return rows
