"""The vLLM engine on a GPU, with a tiny random Llama built in the test. Skipped where there is
no GPU or no vLLM (CI has neither). The adapter is built the way a provider replica builds it,
from a ``local_llama`` config with ``engine: vllm``."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

import pytest

from benchmarks.llama_cpu import one
from deployments.providers.base import ChatMessage, ProviderRequest
from deployments.providers.llama_engine import LocalLlamaAdapter, build_local_adapter
from tests.tiny_llama import build_tiny_llama


def _gpu_ready() -> bool:
    if importlib.util.find_spec("vllm") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


pytestmark = pytest.mark.skipif(not _gpu_ready(), reason="needs a CUDA GPU and the [gpu] extra (vllm)")

# Head size 32 (vLLM's Triton attention needs 32 or more; FlashAttention would too on a real model).
TINY_HIDDEN = 128
ENGINE_ARGS = {"dtype": "bfloat16", "attention_backend": "TRITON_ATTN"}


@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory) -> LocalLlamaAdapter:
    from serve_app.config import LocalLlamaConfig

    model_dir = build_tiny_llama(tmp_path_factory.mktemp("tiny"), hidden_size=TINY_HIDDEN)
    cfg = LocalLlamaConfig(
        engine="vllm",
        model=str(model_dir),
        gpu_memory_utilization=0.3,
        max_model_len=256,
        engine_args=ENGINE_ARGS,
        throughput_tokens_per_s=1000.0,
    )
    return build_local_adapter("meta", cfg)


async def _complete(
    adapter: LocalLlamaAdapter,
    prompt: str,
    max_tokens: int,
    temperature: float | None = None,
    seed: int | None = None,
) -> tuple[str, int, int]:
    request = ProviderRequest(
        model="llama",
        messages=[ChatMessage("user", prompt)],
        max_tokens=max_tokens,
        temperature=temperature,
        seed=seed,
    )
    text, usage = "", None
    async for delta in adapter.stream(request):
        text += delta.text or ""
        if delta.usage is not None:
            usage = delta.usage
    assert usage is not None
    return text, usage.input_tokens, usage.output_tokens


def test_vllm_engine_streams_and_batches_with_usage(adapter: LocalLlamaAdapter) -> None:
    """One event loop, as in a replica: vLLM's output handler lives on the loop that first used it."""

    async def main() -> tuple[dict[str, float], list[tuple[str, int, int]], list[str], list[str]]:
        timing = await one(adapter, "hello", 16)  # the CPU benchmark's own measurement
        prompts = [("hi", 4), ("write a python function that reverses a list", 12)] * 4
        batch = await asyncio.gather(*(_complete(adapter, p, n) for p, n in prompts))
        # the request's seed reaches SamplingParams: at temperature 1.5 on a random model a seeded
        # request repeats its sample, inside one batch and in a later one
        seeded = await asyncio.gather(*(_complete(adapter, "hello", 24, 1.5, seed=7) for _ in range(3)))
        seeded.append(await _complete(adapter, "hello", 24, 1.5, seed=7))
        # and an unseeded one draws afresh (24 tokens at 1.5: equal samples would mean a fixed seed)
        unseeded = await asyncio.gather(*(_complete(adapter, "hello", 24, 1.5) for _ in range(3)))
        return timing, list(batch), [r[0] for r in seeded], [r[0] for r in unseeded]

    timing, results, seeded, unseeded = asyncio.run(main())
    ttft, tokens, total = timing["ttft_s"], int(timing["tokens"]), timing["total_s"]
    load_s = getattr(adapter.engine, "load_s", float("nan"))
    print(f"vllm tiny llama: load {load_s:.1f}s, ttft {ttft * 1000:.1f} ms, {tokens} tokens, {total:.3f}s")
    assert 0 < tokens <= 16
    short, long = results[0], results[1]
    assert long[1] > short[1]  # the longer prompt has more prompt tokens
    for (_, _, out), limit in zip(results, [4, 12] * 4, strict=True):
        assert 0 < out <= limit
    # temperature 0: the same prompt gives the same answer inside one batch
    assert len({r[0] for r in results[0::2]}) == 1
    assert len({r[0] for r in results[1::2]}) == 1
    assert seeded[0] and len(set(seeded)) == 1, seeded
    assert len(set(unseeded)) > 1, unseeded


def test_vllm_engine_rejects_unknown_engine_args(tmp_path: Path) -> None:
    from deployments.providers.llama_vllm import VLLMEngine

    with pytest.raises(TypeError):
        VLLMEngine(tmp_path, "none", engine_args={"no_such_argument": 1})
