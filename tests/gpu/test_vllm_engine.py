"""The vLLM engine on a GPU, with the tiny random Llama. Skipped where there is no GPU or no vLLM."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

import pytest

from benchmarks.llama_cpu import one
from deployments.providers.llama_engine import LocalLlamaAdapter
from tests.tiny_llama import build_tiny_llama


def _gpu_ready() -> bool:
    if importlib.util.find_spec("vllm") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


pytestmark = pytest.mark.skipif(not _gpu_ready(), reason="needs a CUDA GPU and the [gpu] extra (vllm)")


def test_vllm_engine_streams_with_usage(tmp_path: Path) -> None:
    from deployments.providers.llama_vllm import VLLMEngine

    model_dir = build_tiny_llama(tmp_path / "tiny")
    engine = VLLMEngine(model_dir, "tiny", gpu_memory_utilization=0.3, max_model_len=256)
    adapter = LocalLlamaAdapter("meta", engine)
    timing = asyncio.run(one(adapter, "hello", 16))  # the CPU benchmark's own measurement
    ttft, tokens, total = timing["ttft_s"], int(timing["tokens"]), timing["total_s"]
    print(
        f"vllm tiny llama: load {engine.load_s:.1f}s, ttft {ttft * 1000:.1f} ms, "
        f"{tokens} tokens, {total:.3f}s"
    )
    assert 0 < tokens <= 16
