"""Accuracy of the keyword baseline on the labelled prompts in ../shared/data.

    python -m predictors.evaluate_baseline [--data ../shared/data]

Sources and the mapping of their labels to our four task types:
- mt-bench (80 questions, first turn): coding -> coding; writing, roleplay -> creative_writing;
  reasoning, math, stem, humanities, extraction -> analysis.
- arena-hard v2.0 (750 real prompts): hard_prompt/coding -> coding; hard_prompt/math -> analysis;
  creative_writing -> creative_writing.
Neither source has simple queries, so that class is not measured here.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from predictors.keyword_classifier import TASK_TYPES, KeywordClassifier

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


def load_labelled(data: Path) -> list[tuple[str, str, str]]:
    """(source, text, label) rows."""
    rows: list[tuple[str, str, str]] = []
    for line in (data / "mt-bench" / "mt_bench_question.jsonl").read_text().split("\n"):
        if not line.strip():
            continue
        q = json.loads(line)
        rows.append(("mt-bench", q["turns"][0], MT_BENCH[q["category"]]))
    for line in (data / "arena-hard" / "arena_hard_v2.0_question.jsonl").read_text().split("\n"):
        if not line.strip():
            continue
        q = json.loads(line)
        rows.append(("arena-hard-v2", q["prompt"], ARENA_V2[q["subcategory"]]))
    return rows


def evaluate(rows: list[tuple[str, str, str]]) -> dict[str, object]:
    clf = KeywordClassifier()
    report: dict[str, object] = {}
    for source in [*sorted({r[0] for r in rows}), "all"]:
        subset = [r for r in rows if source in ("all", r[0])]
        pred = [clf.classify(text).task_type for _, text, _ in subset]
        gold = [label for _, _, label in subset]
        correct = sum(p == g for p, g in zip(pred, gold, strict=True))
        f1s = {}
        for t in TASK_TYPES:
            tp = sum(p == g == t for p, g in zip(pred, gold, strict=True))
            fp = sum(p == t != g for p, g in zip(pred, gold, strict=True))
            fn = sum(g == t != p for p, g in zip(pred, gold, strict=True))
            if tp + fn == 0:
                continue  # class absent from the gold labels
            f1s[t] = round(2 * tp / (2 * tp + fp + fn), 3) if tp else 0.0
        report[source] = {
            "n": len(subset),
            "accuracy": round(correct / len(subset), 3),
            "macro_f1_present_classes": round(sum(f1s.values()) / len(f1s), 3),
            "f1": f1s,
            "predicted": dict(Counter(pred)),
        }
    return report


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    args = parser.parse_args()
    print(json.dumps(evaluate(load_labelled(Path(args.data))), indent=2))


if __name__ == "__main__":
    main()
