"""How fast is the self-hosted Llama on the CPU engine? SmolLM2-135M-Instruct, transformers, 1 thread.

    python -m benchmarks.llama_cpu [--requests 8] [--max-tokens 64]

Measures the load time (GGUF conversion when the cache is cold, reload from the cache), then time
to first token and decode speed at concurrency 1 and 4 with a bounded number of requests, and the
aggregate output tokens/s (the figure `throughput_tokens_per_s` in the config takes, from which the
self-hosted price per token is derived). Writes benchmarks/results/llama_cpu.json and .png.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.report import pyplot, write_result
from deployments.providers.base import ChatMessage, ProviderRequest
from deployments.providers.llama_engine import LocalLlamaAdapter, TransformersEngine
from deployments.providers.llama_models import SMOLLM2, cache_root, display_name, resolve_model_dir

RESULTS = Path(__file__).resolve().parent / "results"
PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the ocean.",
    "Explain what a hash table is in two sentences.",
    "Give three tips for writing clean Python code.",
    "Translate 'good morning' into Spanish and German.",
    "Why is the sky blue? Answer briefly.",
    "List the planets of the solar system.",
    "Write a short thank-you note to a colleague.",
]


async def one(adapter: LocalLlamaAdapter, prompt: str, max_tokens: int) -> dict[str, float]:
    request = ProviderRequest(model="llama", messages=[ChatMessage("user", prompt)], max_tokens=max_tokens)
    start = time.perf_counter()
    first: float | None = None
    tokens = 0
    async for delta in adapter.stream(request):
        if delta.text and first is None:
            first = time.perf_counter()
        if delta.usage is not None:
            tokens = delta.usage.output_tokens
    end = time.perf_counter()
    ttft = (first or end) - start
    decode = end - (first or end)
    return {
        "ttft_s": ttft,
        "total_s": end - start,
        "tokens": tokens,
        "decode_tokens_per_s": (tokens - 1) / decode if decode > 0 and tokens > 1 else 0.0,
    }


async def level(
    adapter: LocalLlamaAdapter, concurrency: int, requests: int, max_tokens: int
) -> dict[str, Any]:
    queue = [PROMPTS[i % len(PROMPTS)] for i in range(requests)]
    results: list[dict[str, float]] = []

    async def worker() -> None:
        while queue:
            results.append(await one(adapter, queue.pop(0), max_tokens))

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - began
    ttfts = sorted(r["ttft_s"] * 1000 for r in results)
    return {
        "requests": len(results),
        "ttft_ms_p50": round(statistics.median(ttfts), 1),
        "ttft_ms_max": round(ttfts[-1], 1),
        "decode_tokens_per_s_per_request": round(
            statistics.fmean(r["decode_tokens_per_s"] for r in results), 1
        ),
        "aggregate_output_tokens_per_s": round(sum(r["tokens"] for r in results) / wall, 1),
        "mean_output_tokens": round(statistics.fmean(r["tokens"] for r in results), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--out", default=str(RESULTS / "llama_cpu.json"))
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

    cold = not any(cache_root().glob("smollm2-*/config.json")) if cache_root().exists() else True
    t = time.perf_counter()
    model_dir = resolve_model_dir(SMOLLM2)
    prepare_s = time.perf_counter() - t
    t = time.perf_counter()
    engine = TransformersEngine(model_dir, display_name(SMOLLM2), threads=1)
    load_s = time.perf_counter() - t
    adapter = LocalLlamaAdapter("meta", engine)
    asyncio.run(one(adapter, "hi", 4))  # warm-up
    levels = {str(c): asyncio.run(level(adapter, c, args.requests, args.max_tokens)) for c in (1, 4)}
    result = {
        "model": display_name(SMOLLM2),
        "engine": "transformers (CPU, torch threads=1)",
        "machine": f"{os.cpu_count()} CPUs",
        "gguf_conversion_s": round(prepare_s, 2) if cold else None,
        "cache_lookup_s": None if cold else round(prepare_s, 2),
        "load_s": round(load_s, 2),
        "max_tokens": args.max_tokens,
        "concurrency": levels,
    }
    write_result(Path(args.out), result, plot)


def plot(result: dict[str, Any], path: Path) -> None:
    plt = pyplot()

    concs = list(result["concurrency"])
    rows = [result["concurrency"][c] for c in concs]
    fig, (a, b) = plt.subplots(1, 2, figsize=(8, 3.5))
    a.bar([f"c={c}" for c in concs], [r["ttft_ms_p50"] for r in rows])
    a.set_title("time to first token p50 (ms)")
    b.bar([f"c={c}" for c in concs], [r["aggregate_output_tokens_per_s"] for r in rows], label="aggregate")
    b.plot(
        [f"c={c}" for c in concs],
        [r["decode_tokens_per_s_per_request"] for r in rows],
        "o-",
        color="k",
        label="per request",
    )
    b.set_title("output tokens/s")
    b.legend()
    fig.suptitle(f"{result['model']} on the CPU engine")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
