"""What does the router add to a call? Direct-to-emulator vs through the full graph, same requests.

    python -m benchmarks.overhead [--rounds 2] [--requests-per-conc 1:150,16:600,64:1200]

Starts the provider emulator in its own process (0 ms model latency, so the difference is pure
gateway overhead), a local Ray (num_cpus=2) with the application (classifier on, routing on),
then, for each concurrency and round, runs a closed loop of a bounded number of requests
directly against the emulator's OpenAI endpoint and through the router with ``model: "auto"``.
The prompt routes (coding, low complexity) to gpt-4o-mini, an OpenAI-protocol model, so both
paths do the same work at the emulator. Writes benchmarks/results/overhead.json and overhead.png.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.harness import local_router, parse_plan
from benchmarks.report import pyplot, write_result

RESULTS = Path(__file__).resolve().parent / "results"
PROMPT = "Write a python function to reverse a string."
EXPECTED_MODEL = "gpt-4o-mini"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


async def closed_loop(
    url: str,
    body: dict[str, Any],
    concurrency: int,
    total: int,
    check_model: str | None,
    headers: dict[str, str] | None = None,
    kinds: Counter[str] | None = None,
) -> tuple[list[float], int, float]:
    """``total`` requests from ``concurrency`` workers; returns latencies (ms), errors, wall seconds.
    ``kinds``, where given, counts the errors by kind: ``http <status>``, ``model <the one that
    answered>``, or the client exception's class.

    The client is aiohttp, not httpx: on this 2-CPU machine httpx's connection pool became the
    bottleneck as concurrency grew (straight at the emulator, 894 req/s at 16 and 227 at 64 with a
    p99 of 1.3 s, against aiohttp's 11,790 and 12,268 req/s with a p99 of 2.5 and 10.6 ms), and the
    CPU it burnt was taken from the gateway under test, which shares the machine.
    """
    latencies: list[float] = []
    errors = 0
    issued = 0
    payload = json.dumps(body).encode()
    send_headers = {"content-type": "application/json", **(headers or {})}
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def call() -> str | None:
            """None when the answer is good, else what was wrong with it."""
            async with session.post(url, data=payload, headers=send_headers) as response:
                await response.read()
                if response.status != 200:
                    return f"http {response.status}"
                model = response.headers.get("x-fusion-model")
                if check_model is not None and model != check_model:
                    return f"model {model}"
                return None

        async def warm() -> None:
            # one unmeasured request per worker opens its keep-alive connection
            try:
                await call()
            except (aiohttp.ClientError, TimeoutError):
                pass

        async def worker() -> None:
            nonlocal issued, errors
            while issued < total:
                issued += 1
                start = time.perf_counter()
                try:
                    wrong = await call()
                except (aiohttp.ClientError, TimeoutError) as exc:
                    wrong = type(exc).__name__
                elapsed = (time.perf_counter() - start) * 1000
                if wrong is None:
                    latencies.append(elapsed)
                else:
                    errors += 1
                    if kinds is not None:
                        kinds[wrong] += 1

        await asyncio.gather(*(warm() for _ in range(concurrency)))
        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - began
    return latencies, errors, wall


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--requests-per-conc", default="1:150,16:600,64:1200")
    parser.add_argument("--warmup", type=int, default=60)
    parser.add_argument("--out", default=str(RESULTS / "overhead.json"))
    args = parser.parse_args()
    plan = parse_plan(args.requests_per_conc)

    with local_router(latency_scale=0.0) as (router, emu_url):
        router_url = f"{router}/v1/chat/completions"
        direct_url = f"{emu_url}/openai/v1/chat/completions"
        messages = [{"role": "user", "content": PROMPT}]
        direct_body = {"model": EXPECTED_MODEL, "messages": messages}
        router_body = {"model": "auto", "messages": messages}

        asyncio.run(closed_loop(direct_url, direct_body, 4, args.warmup, None))
        asyncio.run(closed_loop(router_url, router_body, 4, args.warmup, EXPECTED_MODEL))

        raw: dict[int, dict[str, Any]] = {
            c: {"direct": [], "router": [], "errors": 0, "router_wall": 0.0, "router_n": 0} for c in plan
        }
        for rnd in range(args.rounds):
            for conc, total in plan.items():
                d_lat, d_err, _ = asyncio.run(closed_loop(direct_url, direct_body, conc, total, None))
                r_lat, r_err, r_wall = asyncio.run(
                    closed_loop(router_url, router_body, conc, total, EXPECTED_MODEL)
                )
                raw[conc]["direct"] += d_lat
                raw[conc]["router"] += r_lat
                raw[conc]["errors"] += r_err + d_err
                raw[conc]["router_wall"] += r_wall
                raw[conc]["router_n"] += len(r_lat)
                print(
                    f"round {rnd + 1} c={conc}: direct p50 {percentile(d_lat, 0.5):.1f} ms, "
                    f"router p50 {percentile(r_lat, 0.5):.1f} ms, p99 {percentile(r_lat, 0.99):.1f} ms, "
                    f"{len(r_lat) / r_wall:.1f} req/s, errors {r_err + d_err}",
                    flush=True,
                )

    result: dict[str, Any] = {
        "machine": f"{os.cpu_count()} CPUs",
        "rounds": args.rounds,
        "emulator_latency": "0 ms (latency_scale 0)",
        "path": "client -> Serve proxy -> Ingress -> Classifier -> Provider_openai -> emulator",
        "concurrency": {},
    }
    for conc, r in raw.items():
        d50, d99 = percentile(r["direct"], 0.5), percentile(r["direct"], 0.99)
        r50, r99 = percentile(r["router"], 0.5), percentile(r["router"], 0.99)
        result["concurrency"][str(conc)] = {
            "direct_p50_ms": round(d50, 2),
            "direct_p99_ms": round(d99, 2),
            "router_p50_ms": round(r50, 2),
            "router_p99_ms": round(r99, 2),
            "overhead_p50_ms": round(r50 - d50, 2),
            "overhead_p99_ms": round(r99 - d99, 2),
            "throughput_rps": round(r["router_n"] / r["router_wall"], 1) if r["router_wall"] else 0.0,
            "errors": r["errors"],
            "requests": len(r["router"]) + r["errors"],
            "router_mean_ms": round(statistics.fmean(r["router"]), 2) if r["router"] else None,
        }
    write_result(Path(args.out), result, plot)


def plot(result: dict[str, Any], path: Path) -> None:
    plt = pyplot()

    concs = list(result["concurrency"])
    rows = [result["concurrency"][c] for c in concs]
    x = range(len(concs))
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.2
    for i, (key, label) in enumerate(
        [
            ("direct_p50_ms", "direct p50"),
            ("router_p50_ms", "router p50"),
            ("direct_p99_ms", "direct p99"),
            ("router_p99_ms", "router p99"),
        ]
    ):
        ax.bar([xi + (i - 1.5) * width for xi in x], [r[key] for r in rows], width, label=label)
    ax.set_xticks(list(x), [f"c={c}" for c in concs])
    ax.set_ylabel("latency (ms)")
    ax.set_yscale("log")
    ax.set_title("Fusion Router overhead vs direct-to-emulator (0 ms model)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
