"""Static token embeddings distilled from all-MiniLM-L6-v2: what the task and complexity heads read.

A prompt's embedding is the normalised sum of its tokens' rows in a table, so classifying a prompt
takes no transformer pass: under a millisecond where the MiniLM pass takes 3-18 ms on one core
(``python -m benchmarks.classifier``; figures in the README). The table is distilled once, when the
heads are trained (``python -m predictors.train_classifier``), from the int8 MiniLM that the quality
heads still read (``predictors/embedding.py``), the way model2vec distils its static models: each
vocabulary token goes through the model alone (``[CLS] token [SEP]``) and the mean of the outputs
is its row. Each row is then weighted by how much its token tells, SIF style: ``a / (a + p)``,
with ``p`` the token's share of the training prompts' tokens, so "the" or "?" weigh little. The
weight is folded into the row, since a weighted mean and a weighted sum point the same way once
normalised. Rows are stored int8 with one float16 scale each (11.7 MB, 10.3 MB compressed; the
held-out macro-F1 and complexity AUC are those of the float32 table).

On the held-out split this reads better than the MiniLM pass for the task head (the whole prompt,
not its first 64 tokens) and as well for complexity; for the quality heads, which rank models on
a prompt, it read worse (README, "The task classifier"), so they keep the MiniLM embedding.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from predictors.embedding import EMBED_DIM, onnx_path, tokenizer_path

ARTIFACT = Path(__file__).resolve().parent / "artifacts" / "static_embedding.npz"
MAX_TOKENS = 512  # a row lookup each; the task head's n-grams read up to MAX_CHARS of the same text
SIF_A = 1e-3  # the SIF weight's a: tokens more frequent than about 1 in 1,000 are damped


class StaticEmbedder:
    """Normalised sums of int8 token rows: ``embed`` as ``MiniLMEmbedder.embed`` (one row per text)."""

    def __init__(self, artifact: Path = ARTIFACT, max_tokens: int = MAX_TOKENS) -> None:
        from tokenizers import Tokenizer

        with np.load(artifact) as data:
            self._rows: npt.NDArray[np.int8] = data["rows"]
            self._scales: npt.NDArray[np.float32] = data["scales"].astype(np.float32)
        self._tokenizer = Tokenizer.from_file(str(tokenizer_path()))
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_tokens)

    def _ids(self, texts: list[str]) -> list[list[int]]:
        texts = [t if t.strip() else "(empty)" for t in texts]
        if len(texts) == 1:  # the request path's usual case: encode_batch's thread pool costs a third more
            return [self._tokenizer.encode(texts[0], add_special_tokens=False).ids]
        return [e.ids for e in self._tokenizer.encode_batch(texts, add_special_tokens=False)]

    def embed(self, texts: list[str], batch_size: int = 0) -> npt.NDArray[np.float32]:
        """``batch_size`` is accepted for ``MiniLMEmbedder``'s signature; lookups need no batches."""
        return self.embed_counted(texts)[0]

    def embed_counted(self, texts: list[str]) -> tuple[npt.NDArray[np.float32], list[int]]:
        """The embeddings and ``token_counts`` from one tokenisation."""
        all_ids = self._ids(texts)
        out = np.zeros((len(texts), EMBED_DIM), dtype=np.float32)
        for i, ids in enumerate(all_ids):
            if not ids:  # only characters the tokenizer drops: no direction, the heads' bias decides
                continue
            index = np.asarray(ids, dtype=np.int64)
            summed = self._scales[index] @ self._rows[index].astype(np.float32)
            out[i] = summed / max(float(np.linalg.norm(summed)), 1e-12)
        return out, [len(ids) for ids in all_ids]

    def token_counts(self, texts: list[str]) -> list[int]:
        """Tokens read per text (at most ``max_tokens``): the complexity head's length feature."""
        return [len(ids) for ids in self._ids(texts)]


def sif_weights(token_ids: Iterable[list[int]], vocab_size: int, a: float = SIF_A) -> npt.NDArray[np.float64]:
    """``a / (a + p(token))`` from token counts (each token counted once more, so none has p = 0)."""
    counts = np.ones(vocab_size, dtype=np.float64)
    for ids in token_ids:
        np.add.at(counts, np.asarray(ids, dtype=np.int64), 1.0)
    return a / (a + counts / counts.sum())


def distil(texts: list[str], batch: int = 1024) -> dict[str, np.ndarray[Any, Any]]:
    """The table's arrays (``rows`` int8, ``scales`` float16) from the int8 MiniLM, weighted by the
    tokens of ``texts`` (the training prompts). One ONNX Runtime thread: the same input gives the
    same bytes."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_path()))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    vocab = tokenizer.get_vocab()
    size = max(vocab.values()) + 1
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path()), options, providers=["CPUExecutionProvider"])
    inputs = {i.name for i in session.get_inputs()}
    table = np.zeros((size, EMBED_DIM), dtype=np.float32)
    for start in range(0, size, batch):
        ids = np.arange(start, min(size, start + batch), dtype=np.int64)
        column = np.ones(len(ids), dtype=np.int64)
        x = np.stack([column * vocab["[CLS]"], ids, column * vocab["[SEP]"]], axis=1)
        feeds = {"input_ids": x, "attention_mask": np.ones_like(x)}
        if "token_type_ids" in inputs:
            feeds["token_type_ids"] = np.zeros_like(x)
        table[ids] = session.run(None, feeds)[0].mean(axis=1)
    encoded = tokenizer.encode_batch(texts, add_special_tokens=False)
    table *= sif_weights((e.ids for e in encoded), size)[:, None].astype(np.float32)
    scales = (np.maximum(np.abs(table).max(axis=1), 1e-6) / 127.0).astype(np.float16)
    rows = np.clip(np.round(table / scales.astype(np.float32)[:, None]), -127, 127).astype(np.int8)
    return {"rows": rows, "scales": scales}


def save_table(path: Path, arrays: dict[str, np.ndarray[Any, Any]]) -> None:
    """An npz that ``np.load`` reads, with fixed entry times: the same arrays give the same bytes."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.save(buffer, array, allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, buffer.getvalue())
