"""Do replicas rise before the load? A compressed slice of a real trace through the router on a
local Ray, predictive policy against Serve's own reactive one, replica counts from Serve itself.

    python -m benchmarks.predictive_scaling [--days 9 10 11] [--window-s 0.4]

The load: servegen m-large (Alibaba Bailian), the given days at 10-minute windows, each window
replayed in ``--window-s`` seconds (0.4 s: a day in 58 s), its rate mapped linearly onto
``--min-rps`` .. ``--max-rps`` (open loop, Poisson arrivals). Requests go straight to gpt-4.1
(``Provider_openai``; emulator latency x0.5, about 0.5 s per call), whose deployment autoscales between
1 and ``--max-replicas`` replicas, each taking 4 calls at a time (more wait in its queue).

Two runs, one per policy, same arrivals:
- predictive: ``deployments/autoscaling.py`` fed by the DemandForecaster; forecast step 2 s,
  season = one compressed day, cold start 2 s + decision lag 1 s as the horizon;
- reactive: Serve's default policy with the same bounds, upscale_delay_s 0 (its fastest setting)
  and the same downscale delay.

Every 0.25 s it records Serve's RUNNING replica count (``serve.status()``) and the policy's target.
Writes benchmarks/results/predictive_scaling.json and .png: per run, latency p50/p99, requests
over the SLO (2 s), replica-seconds, and the seconds during which fewer replicas ran than the
load needed.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import itertools
import json
import random
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml

from benchmarks.harness import local_router
from benchmarks.report import pyplot
from serve_app.config import DEFAULT_CONFIG_PATH

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
RESULTS = Path(__file__).resolve().parent / "results"
DEPLOYMENT = "Provider_openai"
SLO_S = 2.0
LATENCY_SCALE = 0.5  # emulated gpt-4.1 calls take about 0.5 s
SERVICE_S = 0.5
PER_REPLICA = 4


def trace_rates(days: list[int], min_rps: float, max_rps: float) -> list[float]:
    rows = [
        r
        for r in csv.DictReader((DATA / "servegen" / "aggregate_rate_per_model_10min.csv").open())
        if r["model"] == "m-large" and int(r["window_start_s"]) // 86400 in days
    ]
    rows.sort(key=lambda r: int(r["window_start_s"]))
    raw = np.array([float(r["total_rate_rps"]) for r in rows])
    low, high = np.quantile(raw, 0.01), np.quantile(raw, 0.99)  # a lone spike does not set the scale
    scaled = min_rps + (max_rps - min_rps) * np.clip((raw - low) / (high - low), 0, 1)
    return [float(x) for x in scaled]


def bench_config(path: Path, predictive: bool, args: argparse.Namespace, day_s: float) -> Path:
    data = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    data["providers"]["meta"] = {"kind": "openai_compatible", "api_key_env": "FUSION_LLAMA_API_KEY"}
    autoscaling: dict[str, Any] = {
        "min_replicas": 1,
        "max_replicas": args.max_replicas,
        "target_ongoing_requests": PER_REPLICA,
        "upscale_delay_s": 0,
        "downscale_delay_s": 5,
    }
    if predictive:
        autoscaling.update({"policy": "predictive", "cold_start_s": 2.0, "service_time_s": SERVICE_S})
    data["deployments"]["provider_overrides"] = {
        # a replica takes PER_REPLICA calls at a time; more wait in Serve's queue
        "openai": {"num_cpus": 0.05, "max_ongoing_requests": PER_REPLICA, "autoscaling": autoscaling}
    }
    data["forecast"] = {
        "step_s": 2.0,
        "report_interval_s": 0.25,
        "decision_lag_s": 1.0,
        "season_s": day_s,
        "poll_interval_s": 0.25,
        "alpha": 0.4,  # 2-s steps of tens of arrivals are noisier than minutes of production traffic
    }
    path.write_text(yaml.safe_dump(data))
    return path


def watch_replicas(app: str, stop: threading.Event, out: list[tuple[float, int]], t0: float) -> None:
    from ray import serve

    while not stop.is_set():
        try:
            status = serve.status().applications[app].deployments[DEPLOYMENT]
            running = sum(n for state, n in status.replica_states.items() if str(state).endswith("RUNNING"))
            out.append((time.perf_counter() - t0, int(running)))
        except Exception:  # status briefly unavailable while deploying
            pass
        stop.wait(0.25)


async def drive(
    router: str, rates: list[float], window_s: float, seed: int, t0: float
) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    url = f"{router}/v1/chat/completions"
    body = {"model": "gpt-4.1", "messages": [{"role": "user", "content": "Summarise the plot of Hamlet."}]}
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=1000)) as client:

        async def one(sent: float) -> dict[str, Any]:
            start = time.perf_counter()
            try:
                r = await client.post(url, json=body)
                ok = r.status_code == 200
            except httpx.HTTPError:
                ok = False
            return {"t": sent, "latency_s": time.perf_counter() - start, "ok": ok}

        tasks = []
        due = 0.0
        for i, rate in enumerate(rates):
            end = (i + 1) * window_s
            while True:
                due += rng.expovariate(rate)
                if due >= end:
                    due = end
                    break
                await asyncio.sleep(max(0.0, t0 + due - time.perf_counter()))
                tasks.append(asyncio.create_task(one(due)))
        return list(await asyncio.gather(*tasks))


def under_provisioned_s(
    rates: list[float], window_s: float, replicas: list[tuple[float, int]], per_replica_rps: float
) -> float:
    """Seconds during which Serve ran fewer replicas than the window's load needed."""
    short = 0.0
    for i, rate in enumerate(rates):
        needed = int(np.ceil(rate / per_replica_rps))
        at = (i + 0.5) * window_s
        running = next((n for t, n in reversed(replicas) if t <= at), 0)
        short += window_s if running < needed else 0.0
    return round(short, 1)


def run(predictive: bool, args: argparse.Namespace, rates: list[float]) -> dict[str, Any]:
    label = "predictive" if predictive else "reactive"
    day_s = 144 * args.window_s
    config = bench_config(RESULTS / f"predictive_scaling_{label}.yaml", predictive, args, day_s)
    try:
        with local_router(latency_scale=LATENCY_SCALE, config_path=str(config)) as (router, _):
            replicas: list[tuple[float, int]] = []
            stop = threading.Event()
            t0 = time.perf_counter()
            watcher = threading.Thread(
                target=watch_replicas, args=("fusion", stop, replicas, t0), daemon=True
            )
            watcher.start()
            rows = asyncio.run(drive(router, rates, args.window_s, args.seed, t0))
            stop.set()
            watcher.join()
    finally:
        config.unlink(missing_ok=True)
    latencies = [r["latency_s"] for r in rows]
    duration = len(rates) * args.window_s
    replica_seconds = sum(
        n * (t2 - t1) for (t1, n), (t2, _) in itertools.pairwise(replicas) if t1 <= duration
    )
    summary = {
        "requests": len(rows),
        "errors": sum(not r["ok"] for r in rows),
        "latency_p50_s": round(float(np.quantile(latencies, 0.5)), 3),
        "latency_p99_s": round(float(np.quantile(latencies, 0.99)), 3),
        "over_slo": sum(lat > SLO_S for lat in latencies),
        "replica_seconds": round(replica_seconds, 1),
        "under_provisioned_s": under_provisioned_s(rates, args.window_s, replicas, PER_REPLICA / SERVICE_S),
        "max_replicas_seen": max((n for _, n in replicas), default=0),
    }
    print(label, summary, flush=True)
    return {"summary": summary, "replicas": replicas, "requests": rows}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--days", type=int, nargs="+", default=[9, 10, 11])
    parser.add_argument("--window-s", type=float, default=0.4)
    parser.add_argument("--min-rps", type=float, default=4.0)
    parser.add_argument("--max-rps", type=float, default=28.0)
    parser.add_argument("--max-replicas", type=int, default=6)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    rates = trace_rates(args.days, args.min_rps, args.max_rps)
    runs = {"predictive": run(True, args, rates), "reactive": run(False, args, rates)}
    result = {
        "trace": f"servegen m-large days {args.days}, 10-min windows replayed in {args.window_s}s",
        "rps_range": [args.min_rps, args.max_rps],
        "slo_s": SLO_S,
        "runs": {k: v["summary"] for k, v in runs.items()},
        "replicas": {k: v["replicas"] for k, v in runs.items()},
    }
    (RESULTS / "predictive_scaling.json").write_text(json.dumps(result, indent=1) + "\n")
    plot(runs, rates, args.window_s, RESULTS / "predictive_scaling.png")


def plot(runs: dict[str, Any], rates: list[float], window_s: float, path: Path) -> None:
    plt = pyplot()

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(12, 7), sharex=True)
    xs = [i * window_s for i in range(len(rates))]
    needs = [r * SERVICE_S / PER_REPLICA for r in rates]
    top.step(xs, needs, where="post", color="black", label="replicas the load needs")
    for label, color in (("predictive", "tab:blue"), ("reactive", "tab:orange")):
        reps = runs[label]["replicas"]
        top.step(
            [t for t, _ in reps], [n for _, n in reps], where="post", color=color, label=f"{label}: running"
        )
        rows = runs[label]["requests"]
        bottom.scatter([r["t"] for r in rows], [r["latency_s"] for r in rows], s=3, color=color, label=label)
    top.set_ylabel("replicas (Serve's RUNNING count)")
    top.legend(fontsize=8)
    bottom.axhline(SLO_S, color="grey", linestyle="--")
    bottom.set_ylabel("latency (s)")
    bottom.set_xlabel("seconds (one trace day = 144 windows)")
    bottom.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
