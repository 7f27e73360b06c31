"""How many streams per second does the router carry before its latency climbs, with and without
stream coalescing (``server.coalesce_streams``)?

    python -m benchmarks.streams [--rates 10 20 30 40] [--seconds 5]

Starts the emulator (latency profiles x0.02: about 43 SSE events per answer within ~60 ms) and the
full graph on a local Ray (num_cpus=2), once with coalescing on and once off. At each rate it sends
open-loop streaming requests for a bounded time to two models served by different SDKs (Anthropic's
and OpenAI's) and records end-to-end latency (request sent -> ``[DONE]``) and the number of SSE
events per answer. Writes benchmarks/results/streams.json and streams.png.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from benchmarks.harness import local_router
from benchmarks.report import pyplot
from serve_app.config import DEFAULT_CONFIG_PATH

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = ("claude-sonnet-4-5", "gpt-4.1")
PROMPT = "Write a Python function that merges two sorted lists; handle edge cases and explain the complexity."


def bench_config(path: Path, coalesce: bool) -> Path:
    data = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    data["server"]["coalesce_streams"] = coalesce
    data["providers"]["meta"] = {"kind": "openai_compatible", "api_key_env": "FUSION_LLAMA_API_KEY"}
    data["deployments"]["provider_overrides"] = {}
    path.write_text(yaml.safe_dump(data))
    return path


async def one(client: httpx.AsyncClient, url: str, model: str) -> dict[str, Any]:
    body = {"model": model, "stream": True, "messages": [{"role": "user", "content": PROMPT}]}
    start = time.perf_counter()
    try:
        r = await client.post(url, json=body)
        events = [line for line in r.text.splitlines() if line.startswith("data: ")]
        ok = r.status_code == 200 and bool(events) and events[-1] == "data: [DONE]"
    except httpx.HTTPError:
        ok, events = False, []
    return {"ok": ok, "latency_ms": (time.perf_counter() - start) * 1000, "events": len(events)}


async def run_rate(router: str, model: str, rate: float, seconds: float) -> list[dict[str, Any]]:
    url = f"{router}/v1/chat/completions"
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=500)) as client:
        t0 = time.perf_counter()
        tasks = []
        for i in range(int(rate * seconds)):
            await asyncio.sleep(max(0.0, t0 + i / rate - time.perf_counter()))
            tasks.append(asyncio.create_task(one(client, url, model)))
        return list(await asyncio.gather(*tasks))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))], 1)


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    lat = [r["latency_ms"] for r in rows]
    return {
        "requests": len(rows),
        "errors": sum(not r["ok"] for r in rows),
        "p50_ms": pct(lat, 0.5),
        "p99_ms": pct(lat, 0.99),
        "events_per_answer": round(sum(r["events"] for r in rows) / max(1, len(rows)), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rates", type=float, nargs="+", default=[10, 20, 30, 40])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--out", default=str(RESULTS / "streams.json"))
    args = parser.parse_args()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    results: dict[str, Any] = {}
    for coalesce in (True, False):
        label = "coalesced" if coalesce else "per_token"
        config = bench_config(out.parent / f"streams_{label}.yaml", coalesce)
        try:
            with local_router(latency_scale=0.02, config_path=str(config)) as (router, _):
                asyncio.run(run_rate(router, MODELS[0], 10, 2.0))  # warm-up
                results[label] = {}
                for model in MODELS:
                    results[label][model] = {}
                    for rate in args.rates:
                        rows = asyncio.run(run_rate(router, model, rate, args.seconds))
                        results[label][model][f"{rate:g}"] = summary = summarise(rows)
                        print(label, model, rate, summary, flush=True)
        finally:
            config.unlink(missing_ok=True)

    result = {
        "seconds_per_rate": args.seconds,
        "machine": f"{os.cpu_count()} CPUs, emulator latency x0.02, one ingress replica",
        "results": results,
    }
    out.write_text(json.dumps(result, indent=2) + "\n")
    plot(results, out.with_suffix(".png"))


def plot(results: dict[str, Any], path: Path) -> None:
    plt = pyplot()

    fig, axes = plt.subplots(1, len(MODELS), figsize=(11, 4), sharey=True)
    for ax, model in zip(axes, MODELS, strict=True):
        for label, style in (("coalesced", "-o"), ("per_token", "--s")):
            by_rate = results[label][model]
            rates = [float(r) for r in by_rate]
            ax.plot(rates, [v["p50_ms"] for v in by_rate.values()], style, label=f"{label} p50")
            ax.plot(rates, [v["p99_ms"] for v in by_rate.values()], style, alpha=0.5, label=f"{label} p99")
        ax.set_title(model)
        ax.set_xlabel("streams started per second")
        ax.set_yscale("log")
    axes[0].set_ylabel("request -> [DONE] (ms)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
