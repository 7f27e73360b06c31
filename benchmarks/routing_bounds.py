"""How far can routing on the prompt go on this data? The bounds behind issue 7's two unmet goals.

    python -m benchmarks.routing_bounds

RouterBench (the goal: GPT-4-1106's accuracy at half its cost). Every figure here is chosen on the
test split itself, so each is a bound that a router trained without it can only do worse than:

- the cheapest way to reach GPT-4's count of right answers when each task (ARC-Challenge, MBPP,
  Winogrande) is sent whole to one option, and when a task may be split at random between the
  options on its hull (a mix); the options are the 11 models, then also agreement cascades in the
  manner of FrugalGPT (ask two or three of the ten cheaper models, keep their answer where their
  letters agree, else ask GPT-4; cost: every call made), which see the models' answers, not only
  the prompt;
- how well a prompt tells, within one task, which questions a model gets wrong: the test ROC-AUC
  of a logistic head per task and model (trained on the train split, the task known: more than the
  router knows) on the router's features (the first 64 tokens' embedding, length, digits) and on
  the question alone (the prompt's last paragraph, after the few-shot examples);
- and how well it would have to: a simulated predictor that knows each task's base rates and mean
  costs and sees every model's right or wrong answer through Gaussian noise (separation d, ROC-AUC
  Phi(d / sqrt 2), independent across models: kinder than real errors, which are correlated),
  routed by the best predicted quality minus a weight x cost; the cost at GPT-4's accuracy on the
  hull of those settings and the single models, for each d, over five noise draws.

MT-Bench as RouteLLM scores it (the goal: APGR above its 0.802; a question routed on its first
turn): the APGR of the oracle order, of ordering by each MT-Bench category's mean score gap fitted
on the scored questions themselves (what knowing the category can give; ties in random order, 200
draws), and how much of the gap a few questions carry.

Writes benchmarks/results/routing_bounds.json and routing_bounds.png.
"""

from __future__ import annotations

import ast
import itertools
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from benchmarks import routing_quality as rq
from benchmarks.report import pyplot
from predictors.quality import QualityPredictor, cost_at, pareto_hull

RESULTS = Path(__file__).resolve().parent / "results"
LETTERS = {"arc-challenge": "ABCD", "winogrande": "AB"}  # the tasks whose answers are one letter
Array = npt.NDArray[np.float64]
Point = tuple[float, float]  # (total cost, right answers)


def answer_letter(response: str, letters: str) -> str | None:
    """The first standalone answer letter in a model's response (stored as a list's repr), if any."""
    try:
        parsed = ast.literal_eval(response)
        text = " ".join(map(str, parsed)) if isinstance(parsed, list) else str(parsed)
    except (ValueError, SyntaxError):
        text = response
    found = re.search(rf"(?<![A-Za-z])([{letters}])(?![A-Za-z])", text)
    return found.group(1) if found else None


def cascade(
    right: Array,
    cost: Array,
    letters: Sequence[Sequence[str | None]],
    fallback_right: Array,
    fallback_cost: Array,
) -> tuple[Array, Array]:
    """Per prompt: ask every model (columns of ``right``/``cost``, ``letters[i][k]`` model k's letter
    on prompt i); where all gave the same letter keep it (right iff the first model was), else ask
    the fallback. Returns (right, cost) per prompt."""
    agree = np.array([row[0] is not None and all(a == row[0] for a in row) for row in letters])
    outcome = np.where(agree, right[:, 0], fallback_right)
    spent = cost.sum(axis=1) + np.where(agree, 0.0, fallback_cost)
    return outcome, spent


def pareto_front(points: Sequence[Point]) -> list[Point]:
    """The points no other point beats on both cost and right answers, cheapest first."""
    front: list[Point] = []
    for p in sorted(set(points), key=lambda q: (q[0], -q[1])):
        if not front or p[1] > front[-1][1]:
            front.append(p)
    return front


def cheapest_pick(options: dict[str, list[Point]], target: float) -> float | None:
    """The least total cost with at least ``target`` right answers when each task takes one whole
    option (exhaustive, pruned to each partial sum's Pareto front)."""
    combined: list[Point] = [(0.0, 0.0)]
    for points in options.values():
        combined = pareto_front(
            [(c + pc, r + pr) for (c, r), (pc, pr) in itertools.product(combined, points)]
        )
    reaching = [c for c, r in combined if r >= target - 1e-9]
    return min(reaching) if reaching else None


def cheapest_mix(options: dict[str, list[Point]]) -> list[Point]:
    """The cheapest (cost, right answers) curve when each task may be split at random between its
    options: every task starts at its cheapest option, then the hulls' segments are taken by most
    right answers per dollar (a task's own segments come in that order, its hull being concave)."""
    hulls = {task: pareto_hull(points) for task, points in options.items()}
    cost = sum(h[0][0] for h in hulls.values())
    right = sum(h[0][1] for h in hulls.values())
    segments = [(b[0] - a[0], b[1] - a[1]) for h in hulls.values() for a, b in itertools.pairwise(h)]
    curve = [(cost, right)]
    for dc, dr in sorted(segments, key=lambda s: s[1] / s[0] if s[0] > 0 else np.inf, reverse=True):
        cost, right = cost + dc, right + dr
        curve.append((cost, right))
    return curve


def question_text(prompt: str) -> str:
    """The prompt's last paragraph: the question, after any few-shot examples."""
    return prompt.strip().split("\n\n")[-1]


def within_task_auc(
    x_train: Array,
    y_train: Array,
    x_test: Array,
    y_test: Array,
    task_train: Any,
    task_test: Any,
    models: list[str],
) -> dict[str, dict[str, float]]:
    """task -> model -> test ROC-AUC of a per-task logistic head for that model's right answers."""
    from sklearn.metrics import roc_auc_score  # benchmarks only: a dev dependency

    out: dict[str, dict[str, float]] = {}
    for task in sorted(set(task_test)):
        tr, te = task_train == task, task_test == task
        labels = {m: y_train[tr, j] for j, m in enumerate(models)}
        predicted = QualityPredictor.fit(x_train[tr], labels, c=0.5).predict(x_test[te])
        out[task] = {
            m: round(float(roc_auc_score(y_test[te, j], predicted[m])), 3)
            for j, m in enumerate(models)
            if 0 < y_test[te, j].mean() < 1
        }
    return out


def separation_needed(
    right: Array,
    cost: Array,
    tasks: Any,
    train_right: Array,
    train_cost: Array,
    train_tasks: Any,
    separations: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5),
    draws: int = 5,
) -> list[dict[str, Any]]:
    """For each separation d: the cost (over the strong model's, the column of ``right`` with the
    best accuracy) at which a noisy oracle's router reaches the best model's accuracy, on the hull
    of a sweep of cost weights. d = 0 knows only each task's base rates and mean costs, so it sends
    each task whole to one model (the per-task bound)."""
    from math import erf

    rate = np.zeros_like(right)
    mean_cost = np.zeros_like(cost)
    for task in set(tasks):
        rate[tasks == task] = np.clip(np.nanmean(train_right[train_tasks == task], axis=0), 1e-3, 1 - 1e-3)
        mean_cost[tasks == task] = np.nanmean(train_cost[train_tasks == task], axis=0)
    prior = np.log(rate / (1 - rate))
    best = int(np.argmax(right.mean(axis=0)))
    target, best_cost = float(right[:, best].mean()), float(cost[:, best].mean())
    rows = np.arange(len(right))
    out = []
    for d in separations:
        shares = []
        for draw in range(draws):
            seen = right * d + np.random.default_rng(draw).standard_normal(right.shape)
            predicted = prior + d * seen - d * d / 2  # log-odds of a right answer given what is seen
            # a router may also send everything to one model
            points = [(float(cost[:, j].mean()), float(right[:, j].mean())) for j in range(right.shape[1])]
            for weight in np.geomspace(1e-2, 1e4, 240):
                chosen = np.argmax(1 / (1 + np.exp(-predicted)) - weight * mean_cost, axis=1)
                points.append((float(cost[rows, chosen].mean()), float(right[rows, chosen].mean())))
            reached = cost_at(pareto_hull(points), target)
            shares.append(None if reached is None else reached / best_cost)
        reached_shares = [v for v in shares if v is not None]
        out.append(
            {
                "separation": d,
                "roc_auc": round(0.5 * (1 + erf(d / 2)), 3),  # Phi(d / sqrt 2)
                "cost_share_mean": round(float(np.mean(reached_shares)), 3) if reached_shares else None,
                "cost_share_by_draw": [None if v is None else round(v, 3) for v in shares],
            }
        )
    return out


def routerbench_bounds() -> dict[str, Any]:
    models, train, test = rq.routerbench_rows()
    right = rq.score_matrix(test, models)
    cost = rq.score_matrix(test, models, "|total_cost")
    tasks = np.array([r["eval_name"] for r in test])
    strong = models.index(rq.STRONG)
    target = float(right[:, strong].sum())
    strong_cost = float(cost[:, strong].sum())
    singles: dict[str, list[Point]] = {}
    with_cascades: dict[str, list[Point]] = {}
    per_task: dict[str, Any] = {}
    best_cascade: dict[str, Any] = {}
    for task in sorted(set(tasks)):
        sel = tasks == task
        singles[task] = [(float(cost[sel, j].sum()), float(right[sel, j].sum())) for j in range(len(models))]
        per_task[task] = {
            m: {
                "accuracy": round(float(right[sel, j].mean()), 3),
                "cost_per_query": round(float(cost[sel, j].mean()), 6),
            }
            for j, m in enumerate(models)
        }
        with_cascades[task] = list(singles[task])
        if task not in LETTERS:
            continue
        rows = [r for r, s in zip(test, sel, strict=True) if s]
        letters = [[answer_letter(r[m + "|model_response"], LETTERS[task]) for m in models] for r in rows]
        cheaper = [j for j in range(len(models)) if j != strong]
        found = []
        for size in (2, 3):
            for combo in itertools.combinations(cheaper, size):
                cols = list(combo)
                outcome, spent = cascade(
                    right[sel][:, cols],
                    cost[sel][:, cols],
                    [[row[j] for j in cols] for row in letters],
                    right[sel, strong],
                    cost[sel, strong],
                )
                point = (float(spent.sum()), float(outcome.sum()))
                with_cascades[task].append(point)
                found.append((point, [models[j] for j in cols]))
        # the cascade with GPT-4's accuracy on this task at the least cost, if any
        reaching = [(p, names) for p, names in found if p[1] >= singles[task][strong][1]]
        if reaching:
            (c, r), names = min(reaching)
            best_cascade[task] = {
                "models": names,
                "accuracy": round(r / sel.sum(), 3),
                "cost_share_of_gpt4": round(c / singles[task][strong][0], 3),
            }

    def share(value: float | None) -> float | None:
        return None if value is None else round(value / strong_cost, 3)

    mix_singles, mix_cascades = cheapest_mix(singles), cheapest_mix(with_cascades)
    x_train = rq.features([rq._text(r) for r in train])
    x_test = rq.features([rq._text(r) for r in test])
    q_train = rq.features([question_text(rq._text(r)) for r in train])
    q_test = rq.features([question_text(rq._text(r)) for r in test])
    y_train = rq.score_matrix(train, models)
    task_train = np.array([r["eval_name"] for r in train])
    cost_train = rq.score_matrix(train, models, "|total_cost")
    auc = {
        "router_features": within_task_auc(x_train, y_train, x_test, right, task_train, tasks, models),
        "question_alone": within_task_auc(q_train, y_train, q_test, right, task_train, tasks, models),
    }
    return {
        "gpt4": {"right": target, "accuracy": round(target / len(test), 4), "cost": round(strong_cost, 4)},
        "n_test": len(test),
        "cost_share_at_gpt4_accuracy": {
            "one_model_per_task": share(cheapest_pick(singles, target)),
            "models_mixed_per_task": share(cost_at(mix_singles, target)),
            "with_cascades_one_per_task": share(cheapest_pick(with_cascades, target)),
            "with_cascades_mixed_per_task": share(cost_at(mix_cascades, target)),
        },
        "best_cascade_at_gpt4_task_accuracy": best_cascade,
        "within_task_auc": auc,
        "within_task_auc_mean": {
            features: {task: round(float(np.mean(list(v.values()))), 3) for task, v in by_task.items()}
            for features, by_task in auc.items()
        },
        "separation_needed": separation_needed(right, cost, tasks, y_train, cost_train, task_train),
        "per_task": per_task,
        "_curves": {
            "models": mix_singles,
            "with cascades": mix_cascades,
            "strong_cost": strong_cost,
            "target": target,
        },
    }


def mt_bench_bounds(draws: int = 200) -> dict[str, Any]:
    _texts, strong, weak, groups = rq.mt_bench()
    category = {}
    for line in (rq.DATA / "mt-bench" / "mt_bench_question.jsonl").open():
        q = json.loads(line)
        category[q["question_id"]] = q["category"]
    cats = np.array([category[g] for g in groups])
    gap = strong - weak
    mean_gap = {c: float(gap[cats == c].mean()) for c in set(cats)}
    by_category = np.array([mean_gap[c] for c in cats])
    rng = np.random.default_rng(0)
    category_apgr = [
        rq.apgr(*rq.pgr_curve(strong, weak, by_category + 1e-6 * rng.random(len(gap)))) for _ in range(draws)
    ]
    random_apgr = [rq.apgr(*rq.pgr_curve(strong, weak, rng.random(len(gap)))) for _ in range(draws)]
    positive = np.sort(gap[gap > 0])[::-1]
    return {
        "n_items": len(gap),
        "ties": int((gap == 0).sum()),
        "strong_better": int((gap > 0).sum()),
        "weak_better": int((gap < 0).sum()),
        "gap_share_of_top_11_items": round(float(positive[:11].sum() / gap.sum()), 3),
        "oracle_apgr": round(rq.apgr(*rq.pgr_curve(strong, weak, gap)), 4),
        "category_order_apgr": round(float(np.mean(category_apgr)), 4),
        "category_order_apgr_range": [
            round(float(min(category_apgr)), 4),
            round(float(max(category_apgr)), 4),
        ],
        "random_apgr": round(float(np.mean(random_apgr)), 4),
        "category_mean_gap": {c: round(v, 2) for c, v in sorted(mean_gap.items(), key=lambda kv: -kv[1])},
    }


def main() -> None:
    rb = routerbench_bounds()
    curves = rb.pop("_curves")
    out = {
        "routerbench": rb,
        "mt_bench": mt_bench_bounds(),
        "goal": {"routerbench_cost_share": 0.5, "mt_bench_apgr": 0.802},
    }
    print(json.dumps({k: v for k, v in out["routerbench"].items() if k != "per_task"}, indent=1))
    print(json.dumps(out["mt_bench"], indent=1))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "routing_bounds.json").write_text(json.dumps(out, indent=2) + "\n")
    plot(curves, rb["within_task_auc_mean"], rb["separation_needed"], RESULTS / "routing_bounds.png")


def plot(
    curves: dict[str, Any], auc: dict[str, dict[str, float]], needed: list[dict[str, Any]], path: Path
) -> None:
    plt = pyplot()
    fig, (left, right, third) = plt.subplots(1, 3, figsize=(18, 4.2))
    for name in ("models", "with cascades"):
        pts = curves[name]
        left.plot(
            [c / curves["strong_cost"] for c, _ in pts],
            [r / curves["target"] for _, r in pts],
            marker=".",
            label=f"per task, {name}",
        )
    left.axhline(1.0, color="grey", linestyle="--", label="GPT-4's right answers")
    left.axvline(0.5, color="tab:red", linestyle=":", label="goal: half its cost")
    left.set_xlabel("cost / GPT-4's cost (test split)")
    left.set_ylabel("right answers / GPT-4's")
    left.set_title("RouterBench: best per-task choices, chosen on test")
    left.legend(fontsize=8)
    tasks = sorted(next(iter(auc.values())))
    width = 0.8 / len(auc)
    for k, (features, by_task) in enumerate(auc.items()):
        right.bar(np.arange(len(tasks)) + k * width, [by_task[t] for t in tasks], width, label=features)
    right.axhline(0.5, color="grey", linestyle="--", label="chance")
    right.set_xticks(np.arange(len(tasks)) + width / 2, tasks)
    right.set_ylim(0.4, 0.8)
    right.set_ylabel("mean test ROC-AUC over models")
    right.set_title("Within a task: does the prompt tell a model's misses?")
    right.legend(fontsize=8)
    for row in needed:
        draws = [v for v in row["cost_share_by_draw"] if v is not None]
        third.scatter([row["roc_auc"]] * len(draws), draws, s=10, color="tab:blue", alpha=0.5)
    third.plot(
        [r["roc_auc"] for r in needed],
        [r["cost_share_mean"] for r in needed],
        marker="o",
        label="mean of draws",
    )
    third.axhline(0.5, color="tab:red", linestyle=":", label="goal: half GPT-4's cost")
    third.set_xlabel("ROC-AUC of the simulated predictor, every model, within each task")
    third.set_ylabel("cost at GPT-4's accuracy / GPT-4's cost")
    third.set_title("RouterBench: how well a predictor would have to tell misses")
    third.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
