"""What does the response cache cost a request it cannot answer, and what does a hit save?

    python -m benchmarks.response_cache [--rounds 300] [--answer-ms 800] [--clients 16] [--seconds 15]

Starts the emulator and the full graph on a local Ray (num_cpus=2) with the cache on
(``cache.enabled``, its SQLite file in a temporary folder, scope global: no API keys here), and
sends ``model: auto`` requests (classifier, routing and metrics on):

1. **What a miss costs.** Sequential requests, interleaved, with the emulator answering at once:
   a new prompt each time (a lookup that misses, then the answer stored off the request path)
   against a new prompt each time sent with ``Cache-Control: no-store`` (no lookup, no store).
   The difference is the lookup's call to the ResponseCache actor.
2. **What a hit costs, and saves.** Interleaved again: the same prompt (a hit) against a new
   prompt with ``no-store``, first with the emulator answering at once (the router's own path,
   classifier and provider hop included, against the lookup alone), then with it answering in
   ``--answer-ms`` (what a client waits).
3. **How many a second.** ``--clients`` closed-loop clients for ``--seconds``: all hits (a few
   prompts asked again and again), then all provider calls (new prompts, ``no-store``), emulator
   answering at once.

Writes benchmarks/results/response_cache.json and response_cache.png.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import yaml

from benchmarks.harness import local_router
from benchmarks.report import added_cost, latency_cdfs, pct, pyplot, write_result
from serve_app.config import DEFAULT_CONFIG_PATH, load_config

RESULTS = Path(__file__).resolve().parent / "results"
ASKED_AGAIN = "What is the capital of France?"
_fresh = itertools.count()
served: Counter[str] = Counter()  # the models that answered the last interleaved provider calls


def body(prompt: str) -> dict[str, Any]:
    return {"model": "auto", "max_tokens": 16, "messages": [{"role": "user", "content": prompt}]}


def fresh() -> dict[str, Any]:
    return body(f"Question {next(_fresh)} of this run: name a river.")


def write_config(workdir: Path) -> Path:
    data = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    data["providers"]["meta"] = {"kind": "openai_compatible", "api_key_env": "FUSION_LLAMA_API_KEY"}
    data["ledger"] = {"path": str(workdir / "ledger.db")}
    data["cache"] = {"enabled": True, "scope": "global", "path": str(workdir / "cache.db")}
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    load_config(str(path))
    return path


Kind = tuple[str, Any, dict[str, str], str]  # name, body maker, headers, expected x-fusion-cache


async def interleave(router: str, kinds: list[Kind], rounds: int, warmup: int = 20) -> dict[str, list[float]]:
    """Sequential requests, one of each kind in turn; latency (ms) per kind, after ``warmup``. A
    request that did not get its expected cache status is a failure of the benchmark."""
    out: dict[str, list[float]] = {name: [] for name, *_ in kinds}
    served.clear()
    async with httpx.AsyncClient(timeout=60) as client:
        for i in range(rounds + warmup):
            for name, make, headers, expected in kinds:
                t0 = time.perf_counter()
                r = await client.post(f"{router}/v1/chat/completions", json=make(), headers=headers)
                ms = (time.perf_counter() - t0) * 1000
                assert r.status_code == 200, r.text
                got = r.headers.get("x-fusion-cache")
                assert got == expected or (i < warmup and got == "miss"), (name, got)
                if i >= warmup:
                    out[name].append(ms)
                    if expected == "bypass":
                        served[r.headers["x-fusion-model"]] += 1
    return out


async def closed_loop(
    router: str, make: Any, headers: dict[str, str], clients: int, seconds: float
) -> dict[str, Any]:
    start = time.monotonic()
    latencies: list[float] = []
    errors = 0

    async def loop(client: httpx.AsyncClient) -> None:
        nonlocal errors
        while time.monotonic() - start < seconds:
            t0 = time.perf_counter()
            r = await client.post(f"{router}/v1/chat/completions", json=make(), headers=headers)
            if r.status_code == 200:
                latencies.append((time.perf_counter() - t0) * 1000)
            else:
                errors += 1

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        await asyncio.gather(*(loop(client) for _ in range(clients)))
    span = time.monotonic() - start
    return {
        "requests_per_s": round(len(latencies) / span, 1),
        "p50_ms": round(statistics.median(latencies), 1),
        "p99_ms": round(pct(latencies, 0.99), 1),
        "errors": errors,
    }


def plot(latencies: dict[str, dict[str, list[float]]], path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    titles = {
        "miss": "a miss against no cache (emulator at 0 ms)",
        "hit_fast": "a hit against a provider call (emulator at 0 ms)",
        "hit_slow": "a hit against a provider call (emulator answering slowly)",
    }
    for ax, (name, title) in zip(axes, titles.items(), strict=True):
        latency_cdfs(ax, latencies[name], title)
    axes[2].set_xscale("log")
    axes[2].set_xlabel("request latency, ms")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=300, help="sequential requests per kind")
    parser.add_argument("--answer-ms", type=float, default=800.0, help="the slow emulator's time to answer")
    parser.add_argument("--slow-rounds", type=int, default=40)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--out", default=str(RESULTS / "response_cache.json"))
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="fusion-cache-"))
    config_path = write_config(workdir)
    no_store = {"cache-control": "no-store"}
    latencies: dict[str, dict[str, list[float]]] = {}
    with local_router(latency_scale=0.0, config_path=str(config_path)) as (router, emulator):
        miss = asyncio.run(
            interleave(
                router, [("miss", fresh, {}, "miss"), ("no cache", fresh, no_store, "bypass")], args.rounds
            )
        )
        latencies["miss"] = miss
        again: list[Kind] = [
            ("hit", lambda: body(ASKED_AGAIN), {}, "hit"),
            ("provider call", fresh, no_store, "bypass"),
        ]
        latencies["hit_fast"] = asyncio.run(interleave(router, again, args.rounds))
        hits = asyncio.run(closed_loop(router, lambda: body(ASKED_AGAIN), {}, args.clients, args.seconds))
        calls = asyncio.run(closed_loop(router, fresh, no_store, args.clients, args.seconds))
        # the slow provider: every model answers in --answer-ms
        config = load_config(str(config_path))
        for name in config.models:  # the emulator knows a model by the ID its provider is sent
            profile = {"ttft_ms": args.answer_ms, "tokens_per_s": 1e6}
            answer = httpx.put(f"{emulator}/admin/profiles/{config.provider_model(name)}", json=profile)
            answer.raise_for_status()
        httpx.put(f"{emulator}/admin/latency_scale", json={"scale": 1.0}).raise_for_status()
        latencies["hit_slow"] = asyncio.run(interleave(router, again, args.slow_rounds, warmup=3))
        slow_models = dict(served)

    hit_fast, hit_slow = latencies["hit_fast"], latencies["hit_slow"]
    result = {
        "rounds": args.rounds,
        "miss_against_no_cache": added_cost(miss["miss"], miss["no cache"], "miss", "no_cache"),
        "hit_against_provider_call_at_0ms": added_cost(
            hit_fast["hit"], hit_fast["provider call"], "hit", "provider_call"
        ),
        "hit_against_provider_call_slow": {
            "answer_ms": args.answer_ms,
            "provider_calls_served_by": slow_models,
            **added_cost(hit_slow["hit"], hit_slow["provider call"], "hit", "provider_call"),
        },
        "closed_loop": {
            "clients": args.clients,
            "seconds": args.seconds,
            "all_hits": hits,
            "all_provider_calls_at_0ms": calls,
        },
        "machine": f"{os.cpu_count()} CPUs, emulator and graph on 127.0.0.1; cache scope global",
    }
    write_result(Path(args.out), result, lambda r, path: plot(latencies, path))


if __name__ == "__main__":
    main()
