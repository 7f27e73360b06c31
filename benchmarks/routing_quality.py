"""How well does the quality predictor route, against RouteLLM (two models) and RouterBench (11)?

    python -m benchmarks.routing_quality

Features of a prompt: its MiniLM embedding (the classifier's), its length and its count of digits
(log-scaled). Logistic regressions, C = 0.5 (the best of 0.05/0.2/0.5/2 on these folds).

RouteLLM's evaluation sets (GPT-4-1106 vs Mixtral-8x7B; MT-Bench judge scores, GSM8K and MMLU
correctness): the predictor learns the probability that the weak model's answer is worse than the
strong one's; the router sends the prompts it ranks highest
to the strong model. MT-Bench as RouteLLM scores it: a question routed once on its first turn, the
routed model's two turns' judgments averaged (``mt_bench``); and, as this router meets a
conversation, each (question, turn) routed on its last user turn (``mt_bench_per_turn``). 5-fold by
prompt (MT-Bench: by question, both turns together), after dropping RouteLLM's contaminated
prompts; every prompt is scored by a model that never saw it. Each fold's
training may borrow the same two models' pairs from the other sets (the other two RouteLLM sets and
RouterBench's training split, where GPT-4-1106 and Mixtral-8x7B are also scored), at weight 0 or 0.2
against its own rows, whichever routes better in a 3-fold split of that fold's training part
alone. Three fold splits (seeds 0-2); reported as RouteLLM does, averaged over the three: APGR (area
under the performance-gap-recovered curve over the share of strong calls, random = 0.5), CPT(50%)
and CPT(80%) (share of strong calls to recover 50%/80% of the gap).

RouterBench (ARC-Challenge, MBPP, Winogrande; 11 models with per-call cost): one predictor per
model trained on the given train split, scored on the test split (overlaps and unknown scores
dropped); two routing rules, each swept: the cheapest model whose predicted P(correct) meets a
target, and the model with the best predicted P(correct) minus a weight x its cost. AIQ: the mean
accuracy reachable over the cost range of the single models (the area under the convex hull of the
router's points); the zero router is the hull of the single models. Also the cost at which the
router reaches the best single model's accuracy, and the seed's two figures against always-GPT-4
(quality kept, cost saved) at 90% of its quality.

Writes benchmarks/results/routing_quality.json and routing_quality.png. Embeddings are cached
under ~/.cache/fusion-router/embeddings (the data never leaves this machine).
"""

from __future__ import annotations

import ast
import csv
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from benchmarks.report import pyplot
from predictors.quality import (
    QualityPredictor,
    area_under,
    cost_at,
    pareto_hull,
    route_cheapest,
    route_utility,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
RESULTS = Path(__file__).resolve().parent / "results"
STRONG, WEAK = "gpt-4-1106-preview", "mistralai/Mixtral-8x7B-Instruct-v0.1"
RB_WEAK = "mistralai/mixtral-8x7b-chat"  # RouterBench's name for the same Mixtral
FOLDS = 5
Array = npt.NDArray[np.float64]


def embed(texts: list[str]) -> Array:
    from predictors.embedding import MAX_TOKENS, MiniLMEmbedder

    key = hashlib.sha256("\x00".join([f"max_tokens={MAX_TOKENS}", *texts]).encode()).hexdigest()[:24]
    cache = Path(os.environ.get("FUSION_CACHE_DIR", Path.home() / ".cache" / "fusion-router")) / "embeddings"
    path = cache / f"{key}.npy"
    if path.exists():
        return np.load(path).astype(np.float64)
    vectors = MiniLMEmbedder(threads=os.cpu_count() or 1).embed(texts, batch_size=64).astype(np.float64)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors


def features(texts: list[str]) -> Array:
    """The prompt's embedding, its length and how many digits it holds (both log-scaled): what a
    prompt's difficulty shows before any model has seen it."""
    chars = np.log1p(np.array([len(t) for t in texts], dtype=float))[:, None]
    digits = np.log1p(np.array([sum(ch.isdigit() for ch in t) for t in texts], dtype=float))[:, None]
    return np.hstack([embed(texts), (chars - 5.0) / 2.0, digits / 2.0])


# -- RouteLLM: two models ------------------------------------------------------------------------


def _contaminated(name: str) -> set[str]:
    """RouteLLM's contaminated prompts for a set; like RouteLLM, a prompt is dropped on an exact match."""
    path = DATA / "routellm-evals" / f"{name}_contaminated_prompts.jsonl"
    return {json.loads(line)["eval_prompt"] for line in path.open() if line.strip()}


def _mt_bench_turns() -> tuple[dict[int, list[str]], dict[tuple[int, int], dict[str, float]]]:
    """MT-Bench's questions (id -> user turns) and the judge's score per (question, turn) and model."""
    questions = {}
    for line in (DATA / "mt-bench" / "mt_bench_question.jsonl").open():
        q = json.loads(line)
        questions[q["question_id"]] = q["turns"]
    scores: dict[tuple[int, int], dict[str, float]] = {}
    for line in (DATA / "routellm-evals" / "mt_bench_judgements_gpt4-1106_mixtral.jsonl").open():
        j = json.loads(line)
        if j["score"] is None or j["score"] < 0:
            continue
        model = STRONG if "gpt-4" in j["model"] else WEAK
        scores.setdefault((j["question_id"], j["turn"]), {})[model] = float(j["score"])
    return questions, scores


def mt_bench() -> tuple[list[str], Array, Array, list[int]]:
    """RouteLLM's protocol (``routellm/evals/benchmarks.py``): a question is routed once, on its
    first turn; the routed model answers both turns, scored by the mean of the two judgments. A
    question is dropped when either turn is in RouteLLM's contaminated list."""
    questions, scores = _mt_bench_turns()
    bad = _contaminated("mt_bench")
    qids = sorted(
        q
        for q, turns in questions.items()
        if not bad & set(turns) and all(len(scores.get((q, t + 1), {})) == 2 for t in range(len(turns)))
    )
    turns = {q: range(1, len(questions[q]) + 1) for q in qids}
    strong = np.array([np.mean([scores[(q, t)][STRONG] for t in turns[q]]) for q in qids])
    weak = np.array([np.mean([scores[(q, t)][WEAK] for t in turns[q]]) for q in qids])
    return [questions[q][0] for q in qids], strong, weak, qids


def mt_bench_per_turn() -> tuple[list[str], Array, Array, list[int]]:
    """Each (question, turn) an item of its own, read as the router reads a conversation: its last
    user turn (``ChatCompletionRequest.routing_text``), so a second turn may go to another model."""
    questions, scores = _mt_bench_turns()
    bad = _contaminated("mt_bench")
    items = sorted(k for k, v in scores.items() if len(v) == 2 and not bad & set(questions[k[0]]))
    texts = [questions[qid][turn - 1] for qid, turn in items]
    strong = np.array([scores[i][STRONG] for i in items])
    weak = np.array([scores[i][WEAK] for i in items])
    return texts, strong, weak, [qid for qid, _ in items]


def gsm8k() -> tuple[list[str], Array, Array, list[int]]:
    rows = list(csv.DictReader((DATA / "routellm-evals" / "gsm8k_responses.csv").open()))
    bad = _contaminated("gsm8k")
    rows = [r for r in rows if r["prompt"] not in bad]
    strong = np.array([r[STRONG] == "True" for r in rows], dtype=float)
    weak = np.array([r[WEAK] == "True" for r in rows], dtype=float)
    return [r["prompt"] for r in rows], strong, weak, list(range(len(rows)))


def mmlu() -> tuple[list[str], Array, Array, list[int]]:
    rows: list[dict[str, str]] = []
    for path in sorted((DATA / "routellm-evals" / "mmlu_responses").glob("*.csv")):
        rows.extend(csv.DictReader(path.open()))
    bad = _contaminated("mmlu")
    rows = [r for r in rows if r["prompt"] not in bad]
    strong = np.array([r[STRONG] == "True" for r in rows], dtype=float)
    weak = np.array([r[WEAK] == "True" for r in rows], dtype=float)
    return [r["prompt"] for r in rows], strong, weak, list(range(len(rows)))


def pgr_curve(strong: Array, weak: Array, score: Array) -> tuple[Array, Array]:
    """Share of strong calls -> performance gap recovered, routing the highest scores first."""
    order = np.argsort(-score, kind="stable")
    n = len(score)
    gain = np.concatenate([[0.0], np.cumsum((strong - weak)[order])])
    quality = (weak.sum() + gain) / n
    gap = strong.mean() - weak.mean()
    return np.arange(n + 1) / n, (quality - weak.mean()) / gap


def apgr(shares: Array, pgr: Array) -> float:
    points = np.linspace(0, 1, 11)  # RouteLLM's 10 cost intervals
    return float(np.trapezoid(np.interp(points, shares, pgr), points))


def cpt(shares: Array, pgr: Array, level: float) -> float:
    reached = np.nonzero(pgr >= level)[0]
    return float(shares[reached[0]]) if len(reached) else 1.0


Pairs = tuple[list[str], Array, Array, list[int]]  # texts, strong scores, weak scores, groups
BORROW_WEIGHTS = (0.0, 0.2)  # a borrowed row's weight against one of the set's own
FOLD_SEEDS = (0, 1, 2)


def folds_of(groups: list[int], seed: int, k: int = FOLDS) -> npt.NDArray[np.int64]:
    unique = np.array(sorted(set(groups)))
    fold_of = dict(zip(unique, np.random.default_rng(seed).permutation(len(unique)) % k, strict=True))
    return np.array([fold_of[g] for g in groups])


def _fit_score(
    x: Array, worse: Array, x_test: Array, borrowed: tuple[Array, Array] | None, weight: float
) -> Array:
    if borrowed is None or weight == 0:
        return QualityPredictor.fit(x, {"worse": worse}, c=0.5).predict(x_test)["worse"]
    xb, yb = borrowed
    w = np.concatenate([np.ones(len(worse)), np.full(len(yb), weight)])
    model = QualityPredictor.fit(np.vstack([x, xb]), {"worse": np.concatenate([worse, yb])}, c=0.5, weights=w)
    return model.predict(x_test)["worse"]


def _borrow_weight(
    x: Array, strong: Array, weak: Array, groups: list[int], borrowed: tuple[Array, Array] | None
) -> float:
    """The borrowed rows' weight that routes best in a 3-fold split of the training part alone."""
    if borrowed is None:
        return 0.0
    inner = folds_of(groups, seed=99, k=3)
    worse = (weak < strong).astype(float)
    scores = {}
    for weight in BORROW_WEIGHTS:
        score = np.zeros(len(worse))
        for k in range(3):
            test = inner == k
            score[test] = _fit_score(x[~test], worse[~test], x[test], borrowed, weight)
        scores[weight] = apgr(*pgr_curve(strong, weak, score))
    return max(BORROW_WEIGHTS, key=lambda w: (scores[w], -w))


def cross_fitted_scores(
    x: Array,
    strong: Array,
    weak: Array,
    groups: list[int],
    borrowed: tuple[Array, Array] | None = None,
    seed: int = 0,
) -> tuple[Array, list[float]]:
    """P(the weak answer is worse) for every prompt, each from a model trained without its fold;
    ``borrowed`` (features, labels of other sets' GPT-4/Mixtral pairs) join each fold's training at
    the weight its own inner split picks. Returns the scores and the weight chosen per fold."""
    worse = (weak < strong).astype(float)
    folds = folds_of(groups, seed)
    score = np.zeros(len(worse))
    chosen = []
    for k in range(FOLDS):
        test = folds == k
        train_groups = [g for g, t in zip(groups, test, strict=True) if not t]
        weight = _borrow_weight(x[~test], strong[~test], weak[~test], train_groups, borrowed)
        score[test] = _fit_score(x[~test], worse[~test], x[test], borrowed, weight)
        chosen.append(weight)
    return score, chosen


def routellm_set(name: str, pairs: Pairs, x: Array, borrowed: tuple[Array, Array] | None) -> dict[str, Any]:
    texts, strong, weak, groups = pairs
    runs = []
    for seed in FOLD_SEEDS:  # the fold split moves APGR by a few points on the small sets
        score, weights = cross_fitted_scores(x, strong, weak, groups, borrowed, seed)
        shares, pgr = pgr_curve(strong, weak, score)
        runs.append((apgr(shares, pgr), cpt(shares, pgr, 0.5), cpt(shares, pgr, 0.8), weights, shares, pgr))
    result = {
        "apgr": round(float(np.mean([r[0] for r in runs])), 4),
        "cpt50": round(float(np.mean([r[1] for r in runs])), 4),
        "cpt80": round(float(np.mean([r[2] for r in runs])), 4),
        "n_test": len(texts),
        "apgr_by_fold_seed": [round(r[0], 4) for r in runs],
        "borrow_weight_by_fold": [r[3] for r in runs],
        "strong_mean": round(float(strong.mean()), 4),
        "weak_mean": round(float(weak.mean()), 4),
    }
    print(name, result, flush=True)
    return {**result, "_curve": (runs[0][4], runs[0][5])}


def routerbench_pairs() -> tuple[Array, Array]:
    """RouterBench's training split, as GPT-4-1106 against Mixtral-8x7B pairs (the same two models
    as RouteLLM's sets): features, and 1 where Mixtral failed and GPT-4 did not."""
    rows = [
        r
        for r in routerbench_split("train")
        if r[STRONG] not in ("", "nan") and r[RB_WEAK] not in ("", "nan")
    ]
    worse = np.array([float(r[RB_WEAK]) < float(r[STRONG]) for r in rows], dtype=float)
    return features([_text(r) for r in rows]), worse


# -- RouterBench: eleven models with cost ----------------------------------------------------------


def routerbench_split(split: str) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    for name in ("arc_challenge", "mbpp", "winograde"):
        rows.extend(csv.DictReader((DATA / "routerbench-subset" / f"{name}_{split}.csv").open()))
    return rows


def _text(row: dict[str, str]) -> str:
    try:
        parts = ast.literal_eval(row["prompt"])
        return "\n".join(parts) if isinstance(parts, list) else str(parts)
    except (ValueError, SyntaxError):
        return row["prompt"]


def routerbench_rows() -> tuple[list[str], list[dict[str, str]], list[dict[str, str]]]:
    """The 11 models, and the train and test rows as scored: no test prompt in train, no duplicate
    ids, no test row with an unknown score."""
    train, test = routerbench_split("train"), routerbench_split("test")
    models = [c for c in train[0] if "|" not in c and c not in ("", "sample_id", "prompt", "eval_name")]
    models = [m for m in models if f"{m}|total_cost" in train[0] and m != "oracle_model_to_route_to"]
    test_ids = {r["sample_id"] for r in test}
    test_prompts = {r["prompt"] for r in test}
    seen: set[str] = set()
    clean_train = []
    for r in train:  # no prompt scored in test, no duplicate ids
        if r["sample_id"] in test_ids or r["prompt"] in test_prompts or r["sample_id"] in seen:
            continue
        seen.add(r["sample_id"])
        clean_train.append(r)
    seen = set()
    clean_test = []
    for r in test:
        if r["sample_id"] in seen or any(r[m] in ("", "nan") for m in models):
            continue
        seen.add(r["sample_id"])
        clean_test.append(r)
    return models, clean_train, clean_test


def score_matrix(rows: list[dict[str, str]], models: list[str], suffix: str = "") -> Array:
    """One column per model: its score (or, with ``suffix="|total_cost"``, its cost); NaN unknown."""
    return np.array(
        [[float(r[m + suffix]) if r[m + suffix] not in ("", "nan") else np.nan for m in models] for r in rows]
    )


def routerbench() -> dict[str, Any]:
    return evaluate_routerbench(*routerbench_rows())


def evaluate_routerbench(
    models: list[str], clean_train: list[dict[str, str]], clean_test: list[dict[str, str]]
) -> dict[str, Any]:
    y_train, y_test = score_matrix(clean_train, models), score_matrix(clean_test, models)
    cost_test = score_matrix(clean_test, models, "|total_cost")
    cost_train = score_matrix(clean_train, models, "|total_cost")
    mean_cost = {m: float(np.nanmean(cost_train[:, j])) for j, m in enumerate(models)}
    x_train = features([_text(r) for r in clean_train])
    x_test = features([_text(r) for r in clean_test])
    predictor = QualityPredictor.fit(x_train, {m: y_train[:, j] for j, m in enumerate(models)}, c=0.5)
    predicted = predictor.predict(x_test)

    singles = {m: (float(cost_test[:, j].mean()), float(y_test[:, j].mean())) for j, m in enumerate(models)}
    index = {m: j for j, m in enumerate(models)}
    router_points = []
    settings: list[tuple[str, Any, float]] = [
        ("target", route_cheapest, float(t)) for t in np.linspace(0.0, 1.0, 101)
    ]
    settings += [("cost_weight", route_utility, float(w)) for w in np.geomspace(1e-3, 10, 61)]
    by_rule: dict[str, list[tuple[float, float]]] = {"target": [], "cost_weight": []}
    for rule, route, knob in settings:
        chosen = route(predicted, mean_cost, knob)
        rows = np.arange(len(chosen))
        cols = np.array([index[m] for m in chosen])
        point = (float(cost_test[rows, cols].mean()), float(y_test[rows, cols].mean()))
        by_rule[rule].append(point)
        router_points.append(point)
    single_hull = pareto_hull(list(singles.values()))
    router_hull = pareto_hull(router_points + list(singles.values()))  # a router may also send all to one
    low = min(c for c, _ in singles.values())
    high = max(c for c, _ in singles.values())
    best_model = max(singles, key=lambda m: singles[m][1])
    best_acc, best_cost = singles[best_model][1], singles[best_model][0]
    reaching = [c for c, q in router_points if q >= best_acc]
    on_hull = cost_at(router_hull, best_acc)
    gpt4 = singles[STRONG]
    kept = [(c, q) for c, q in router_points if q >= 0.9 * gpt4[1]]
    cheapest_kept = min(kept) if kept else None
    result = {
        "aiq": round(area_under(pareto_hull(router_points), low, high), 4),
        "aiq_with_single_models": round(area_under(router_hull, low, high), 4),
        "best_single_model": best_model,
        "best_single_accuracy": round(best_acc, 4),
        "best_single_cost_per_query": round(best_cost, 6),
        "router_cost_at_best_single_accuracy": round(min(reaching), 6) if reaching else None,
        "router_hull_cost_at_best_single_accuracy": None if on_hull is None else round(on_hull, 6),
        "zero_router_aiq": round(area_under(single_hull, low, high), 4),
        "single_model_aiq": {m: round(area_under([singles[m]], low, high), 4) for m in models},
        "oracle_accuracy": round(float((np.nanmax(y_test, axis=1) > 0).mean()), 4),
        "always_gpt4": {"accuracy": round(gpt4[1], 4), "cost_per_query": round(gpt4[0], 6)},
        "at_90pct_of_gpt4_quality": None
        if cheapest_kept is None
        else {
            "quality_kept": round(cheapest_kept[1] / gpt4[1], 4),
            "cost_saved": round(1 - cheapest_kept[0] / gpt4[0], 4),
        },
        "aiq_by_rule": {
            rule: round(area_under(pareto_hull(pts), low, high), 4) for rule, pts in by_rule.items()
        },
        "n_train": len(clean_train),
        "n_test": len(clean_test),
    }
    print("routerbench", {k: v for k, v in result.items() if k != "single_model_aiq"}, flush=True)
    return {**result, "_points": router_points, "_singles": singles}


def main() -> None:
    out: dict[str, Any] = {"routellm": {}}
    curves: dict[str, Any] = {}
    sets = {
        "mt_bench": mt_bench(),
        "gsm8k": gsm8k(),
        "mmlu": mmlu(),
        "mt_bench_per_turn": mt_bench_per_turn(),
    }
    x = {name: features(texts) for name, (texts, _, _, _) in sets.items()}
    # what other sets lend: MT-Bench as its (question, turn) items, never a set's own prompts
    pooled = {
        name: (x[name], (sets[name][2] < sets[name][1]).astype(float))
        for name in ("mt_bench_per_turn", "gsm8k", "mmlu")
    }
    pooled["routerbench_train"] = routerbench_pairs()
    for name, pairs in sets.items():
        others = [v for k, v in pooled.items() if k.split("_per_")[0] != name.split("_per_")[0]]
        borrowed = (np.vstack([o[0] for o in others]), np.concatenate([o[1] for o in others]))
        r = routellm_set(name, pairs, x[name], borrowed)
        curves[name] = r.pop("_curve")
        out["routellm"][name] = r
    rb = routerbench()
    points, singles = rb.pop("_points"), rb.pop("_singles")
    out["routerbench"] = rb
    out["reference"] = {
        "routellm_best_apgr": {"mt_bench": 0.802, "gsm8k": 0.622, "mmlu": 0.603},
        "goal": "APGR above RouteLLM's best on each set; RouterBench: cost at the best single model's "
        "accuracy at most half of its cost, AIQ above every single model and the zero router",
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "routing_quality.json").write_text(json.dumps(out, indent=2) + "\n")
    plot(curves, points, singles, RESULTS / "routing_quality.png")


def plot(curves: dict[str, Any], points: list[Any], singles: dict[str, Any], path: Path) -> None:
    plt = pyplot()

    fig, axes = plt.subplots(1, 4, figsize=(18, 4.2))
    for ax, name in zip(axes[:3], ("mt_bench", "gsm8k", "mmlu"), strict=True):
        shares, pgr = curves[name]
        ax.plot(shares, pgr, label="router")
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="random")
        ax.set_title(f"{name}: APGR")
        ax.set_xlabel("share of calls to GPT-4")
        ax.set_ylabel("performance gap recovered")
        ax.legend(fontsize=8)
    ax = axes[3]
    ax.scatter([p[0] for p in points], [p[1] for p in points], s=6, alpha=0.5, label="router settings")
    hull = pareto_hull(points)
    ax.plot([p[0] for p in hull], [p[1] for p in hull], color="tab:blue", label="router (hull)")
    single_hull = pareto_hull(list(singles.values()))
    ax.plot([p[0] for p in single_hull], [p[1] for p in single_hull], "--", color="grey", label="zero router")
    for model, (c, q) in singles.items():
        ax.scatter([c], [q], s=15)
        ax.annotate(model.split("/")[-1][:16], (c, q), fontsize=6)
    ax.set_xscale("log")
    ax.set_title("RouterBench: accuracy vs cost")
    ax.set_xlabel("mean cost per query (USD)")
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
