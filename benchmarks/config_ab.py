"""Does a configuration change make the router faster? Interleaved starts of two configurations.

    python -m benchmarks.config_ab --a '{"classifier": {"placement": "deployment"}}' \\
        --b '{"classifier": {"placement": "adaptive"}}' [--starts 3] [--haproxy --throughput-optimized]

Each ``--a`` / ``--b`` is JSON merged into the default configuration's ``deployments`` section
(one level deep: ``{"classifier": {...}}`` updates the classifier's options,
``{"api_providers_when_idle": true}`` sets a field). The emulator (0 ms) stays up; the full graph
starts afresh on a local Ray for every start, A and B alternating, because this machine's speed
drifts between starts by 20% or more and only interleaving separates a change from the drift.
Each start runs closed loops at concurrency 1, 16 and 64 (``benchmarks/overhead.py``) with
``model: "auto"``. Writes benchmarks/results/config_ab.json (per start: p50, p99 and rate per
concurrency; and per configuration the mean of each) unless ``--out`` says otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
from pathlib import Path
from typing import Any

from benchmarks.harness import config_with, emulator, graph, parse_plan
from benchmarks.overhead import EXPECTED_MODEL, PROMPT, closed_loop, percentile
from benchmarks.report import write_result
from serve_app.serve_modes import apply

RESULTS = Path(__file__).resolve().parent / "results"


def one_start(emulator_url: str, config_path: str, plan: dict[int, int]) -> dict[str, Any]:
    body = {"model": "auto", "messages": [{"role": "user", "content": PROMPT}]}
    out: dict[str, Any] = {}
    with graph(emulator_url, config_path) as router:
        url = f"{router}/v1/chat/completions"
        asyncio.run(closed_loop(url, body, 4, 100, EXPECTED_MODEL))  # warm-up
        for conc, total in plan.items():
            latencies, errors, wall = asyncio.run(closed_loop(url, body, conc, total, EXPECTED_MODEL))
            out[str(conc)] = {
                "p50_ms": round(percentile(latencies, 0.5), 2),
                "p99_ms": round(percentile(latencies, 0.99), 2),
                "rps": round(len(latencies) / wall, 1) if wall else 0.0,
                "errors": errors,
            }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--a", default="{}", help="JSON merged into deployments for configuration A")
    parser.add_argument("--b", required=True, help="JSON merged into deployments for configuration B")
    parser.add_argument("--starts", type=int, default=3, help="starts of each configuration")
    parser.add_argument("--requests-per-conc", default="1:500,16:1500,64:2000")
    parser.add_argument("--haproxy", action="store_true")
    parser.add_argument("--throughput-optimized", action="store_true")
    parser.add_argument("--out", default=str(RESULTS / "config_ab.json"))
    args = parser.parse_args()
    serve_env = apply(args.haproxy, args.throughput_optimized)  # before Ray starts
    plan = parse_plan(args.requests_per_conc)
    changes = {"a": json.loads(args.a), "b": json.loads(args.b)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    paths = {
        name: config_with(change, RESULTS / f"config_ab_{name}.yaml") for name, change in changes.items()
    }

    starts: list[dict[str, Any]] = []
    try:
        with emulator(0.0) as emu:
            for index in range(args.starts):
                for name in ("a", "b"):
                    got = one_start(emu, paths[name], plan)
                    starts.append({"config": name, "start": index + 1, "concurrency": got})
                    line = {c: (r["p50_ms"], r["rps"]) for c, r in got.items()}
                    print(f"start {index + 1} {name}: (p50 ms, req/s) {line}", flush=True)
    finally:
        for path in paths.values():
            Path(path).unlink(missing_ok=True)

    means: dict[str, Any] = {}
    for name in ("a", "b"):
        mine = [s["concurrency"] for s in starts if s["config"] == name]
        means[name] = {
            str(c): {
                key: round(statistics.fmean(m[str(c)][key] for m in mine), 2)
                for key in ("p50_ms", "p99_ms", "rps")
            }
            for c in plan
        }
    result = {
        "changes": changes,
        "serve_environment": serve_env,
        "starts_each": args.starts,
        "starts": starts,
        "mean": means,
    }
    write_result(Path(args.out), result)


if __name__ == "__main__":
    main()
