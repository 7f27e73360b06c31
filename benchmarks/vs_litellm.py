"""What do Fusion Router and LiteLLM's proxy each add to a call, measured side by side?

    python -m benchmarks.vs_litellm [--rounds 6] [--requests-per-conc 1:1200,16:600,64:1200]
        [--no-haproxy] [--no-throughput-optimized]

LiteLLM (pinned, ``LITELLM_VERSION``) is installed into its own virtual environment under
``$FUSION_CACHE_DIR`` (default ~/.cache/fusion-router; never a project dependency) the first time,
and runs as its proxy with one worker, no database, a master key (it refuses to start without
one), telemetry off and its bundled cost map (no download). One provider emulator (0 ms model
latency) serves all three paths, on the same model:

- direct: the emulator's OpenAI endpoint, ``gpt-4o-mini``;
- LiteLLM: its proxy, ``gpt-4o-mini`` -> ``openai/gpt-4o-mini`` at the emulator;
- Fusion: the full graph on a local Ray (num_cpus=2), ``model: "auto"`` (the classifier and the
  routing policy run; the prompt routes to gpt-4o-mini, checked on every answer).

Fusion runs in Serve's HAProxy ingress and throughput-optimized mode by default, as cluster.yaml
ships it. Rounds interleave the three (direct, LiteLLM, Fusion, then again) with only one gateway up
at a time; each runs closed loops of a bounded number of requests at concurrency 1, 16 and 64. This
machine's CPU speed drifts over seconds (``benchmarks/machine_noise.py``), so the defaults keep
each phase several seconds long and pool six rounds: a slow spell then falls on both gateways
rather than deciding one side's percentile.
Overhead = the gateway's percentile minus the direct path's in the same round; the figures pool
the rounds and list each round's. Writes benchmarks/results/vs_litellm.json and vs_litellm.png.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

from benchmarks.harness import config_with, emulator, graph, parse_plan
from benchmarks.overhead import closed_loop, percentile
from benchmarks.report import pyplot, write_result
from serve_app.config import load_config
from serve_app.emulator.server import free_port
from serve_app.serve_modes import apply

RESULTS = Path(__file__).resolve().parent / "results"
LITELLM_VERSION = "1.108.7"
MODEL = "gpt-4o-mini"
MASTER_KEY = "sk-bench-" + os.urandom(8).hex()
PROMPT = "Write a python function to reverse a string."


def litellm_bin() -> Path:
    """LiteLLM's proxy in its own virtual environment (created once)."""
    cache = Path(os.environ.get("FUSION_CACHE_DIR", Path.home() / ".cache" / "fusion-router"))
    venv = cache / f"litellm-{LITELLM_VERSION}"
    exe = venv / "bin" / "litellm"
    if not exe.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "pip"), "install", "-q", f"litellm[proxy]=={LITELLM_VERSION}"]
        subprocess.run(pip, check=True)
    return exe


@contextmanager
def litellm_proxy(emulator_url: str, workdir: Path) -> Iterator[str]:
    config = {
        "model_list": [
            {
                "model_name": MODEL,
                "litellm_params": {
                    "model": f"openai/{MODEL}",
                    "api_base": f"{emulator_url}/openai/v1",
                    "api_key": "emulated",
                },
            }
        ],
        "litellm_settings": {"telemetry": False, "num_retries": 0},
    }
    path = workdir / "litellm_config.yaml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    env = {
        **os.environ,
        "LITELLM_MASTER_KEY": MASTER_KEY,  # it refuses to start without one
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # the cost map bundled with the package, no download
        "LITELLM_TELEMETRY": "False",
        "LITELLM_LOG": "ERROR",
    }
    command = [str(litellm_bin()), "--config", str(path), "--host", "127.0.0.1", "--port", str(port)]
    process = subprocess.Popen(
        [*command, "--num_workers", "1"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/health/liveliness", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None:
                raise RuntimeError(f"LiteLLM's proxy exited with {process.returncode}")
            time.sleep(0.5)
        else:
            raise RuntimeError("LiteLLM's proxy did not come up in 120 s")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def fusion_config(
    workdir: Path, placement: str | None, providers_in_ingress: bool, providers_when_idle: bool | None = None
) -> str:
    """The default configuration with the benchmark's overrides; None keeps the config's own value."""
    change: dict[str, Any] = {"api_providers_in_ingress": providers_in_ingress}
    if providers_when_idle is not None:
        change["api_providers_when_idle"] = providers_when_idle
    if placement is not None:
        change["classifier"] = {"placement": placement}
    return config_with(change, workdir / "fusion_config.yaml")


def measure(
    url: str,
    body: dict[str, Any],
    plan: dict[int, int],
    check: str | None,
    headers: dict[str, str] | None = None,
) -> dict[int, Any]:
    out: dict[int, Any] = {}
    asyncio.run(closed_loop(url, body, 4, 40, check, headers))  # warm-up
    for conc, total in plan.items():
        kinds: Counter[str] = Counter()
        latencies, errors, wall = asyncio.run(closed_loop(url, body, conc, total, check, headers, kinds))
        out[conc] = {
            "lat": latencies,
            "errors": errors,
            "error_kinds": kinds,
            "rps": len(latencies) / wall if wall else 0.0,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--requests-per-conc", default="1:1200,16:600,64:1200")
    parser.add_argument(
        "--classifier-placement",
        choices=("deployment", "ingress", "adaptive"),
        default=None,
        help="Fusion's deployments.classifier.placement (default: the default config's)",
    )
    parser.add_argument(
        "--api-providers-in-ingress",
        action="store_true",
        help="Fusion's deployments.api_providers_in_ingress (no provider hop)",
    )
    parser.add_argument(
        "--api-providers-when-idle",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="Fusion's deployments.api_providers_when_idle (no provider hop while an ingress is "
        "idle; default: the default config's)",
    )
    parser.add_argument(
        "--haproxy",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Serve's HAProxy ingress (serve_app/serve_modes.py; on by default, as in cluster.yaml)",
    )
    parser.add_argument(
        "--throughput-optimized",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Serve's throughput-optimized mode (on by default, as in cluster.yaml)",
    )
    parser.add_argument("--out", default=str(RESULTS / "vs_litellm.json"))
    args = parser.parse_args()
    serve_env = apply(args.haproxy, args.throughput_optimized)  # before Ray starts
    out = Path(args.out)
    plan = parse_plan(args.requests_per_conc)
    RESULTS.mkdir(parents=True, exist_ok=True)
    litellm_bin()  # install before any clock starts

    messages = [{"role": "user", "content": PROMPT}]
    rounds: list[dict[str, dict[int, Any]]] = []
    with emulator(0.0) as emu:
        for rnd in range(args.rounds):
            got: dict[str, dict[int, Any]] = {}
            direct = f"{emu}/openai/v1/chat/completions"
            got["direct"] = measure(direct, {"model": MODEL, "messages": messages}, plan, None)
            with litellm_proxy(emu, RESULTS) as proxy:
                body = {"model": MODEL, "messages": messages}
                auth = {"authorization": f"Bearer {MASTER_KEY}"}
                got["litellm"] = measure(f"{proxy}/v1/chat/completions", body, plan, None, auth)
            fusion = fusion_config(
                RESULTS,
                args.classifier_placement,
                args.api_providers_in_ingress,
                args.api_providers_when_idle,
            )
            with graph(emu, fusion) as router:
                body = {"model": "auto", "messages": messages}
                got["fusion"] = measure(f"{router}/v1/chat/completions", body, plan, MODEL)
            rounds.append(got)
            for conc in plan:
                line = {k: round(percentile(v[conc]["lat"], 0.5), 1) for k, v in got.items()}
                print(f"round {rnd + 1} c={conc} p50 ms {line}", flush=True)
    ran = load_config(str(RESULTS / "fusion_config.yaml")).deployments  # what Fusion ran with
    (RESULTS / "litellm_config.yaml").unlink(missing_ok=True)
    (RESULTS / "fusion_config.yaml").unlink(missing_ok=True)

    def pooled(kind: str, conc: int) -> list[float]:
        return [x for r in rounds for x in r[kind][conc]["lat"]]

    result: dict[str, Any] = {
        "litellm_version": LITELLM_VERSION,
        "rounds": args.rounds,
        "fusion_classifier_placement": ran.classifier.placement,
        "fusion_api_providers_in_ingress": ran.api_providers_in_ingress,
        "fusion_api_providers_when_idle": ran.api_providers_when_idle,
        "fusion_api_providers_local_calls": ran.api_providers_local_calls,
        "fusion_serve_environment": serve_env,
        "requests_per_round": {str(c): n for c, n in plan.items()},
        "machine": f"{os.cpu_count()} CPUs; emulator at 0 ms; closed loops from a Python client",
        "concurrency": {},
    }
    for conc in plan:
        row: dict[str, Any] = {}
        for q, name in ((0.5, "p50"), (0.99, "p99")):
            base = percentile(pooled("direct", conc), q)
            for kind in ("litellm", "fusion"):
                row[f"{kind}_overhead_{name}_ms"] = round(percentile(pooled(kind, conc), q) - base, 2)
                row[f"{kind}_overhead_{name}_ms_by_round"] = [
                    round(percentile(r[kind][conc]["lat"], q) - percentile(r["direct"][conc]["lat"], q), 2)
                    for r in rounds
                ]
        for kind in ("litellm", "fusion"):
            row[f"{kind}_rps"] = round(sum(r[kind][conc]["rps"] for r in rounds) / len(rounds), 1)
        row["fusion_errors"] = sum(r["fusion"][conc]["errors"] for r in rounds)
        row["fusion_error_kinds"] = dict(sum((r["fusion"][conc]["error_kinds"] for r in rounds), Counter()))
        row["litellm_errors"] = sum(r["litellm"][conc]["errors"] for r in rounds)
        row["direct_p50_ms"] = round(percentile(pooled("direct", conc), 0.5), 2)
        result["concurrency"][str(conc)] = row
    result["max_rps"] = {
        kind: max(result["concurrency"][str(c)][f"{kind}_rps"] for c in plan)
        for kind in ("litellm", "fusion")
    }
    result["goal"] = goal_check(result)
    write_result(out, result, plot)


def goal_check(result: dict[str, Any]) -> dict[str, Any]:
    """The issue's goal: Fusion's overhead at most half of LiteLLM's, p50 and p99, at every
    concurrency, a higher maximum rate, and no errors. Ratios are Fusion / LiteLLM, pooled and
    per round (the rounds' spread is the noise)."""
    ratios: dict[str, Any] = {}
    unmet: list[str] = []
    for conc, row in result["concurrency"].items():
        entry: dict[str, Any] = {}
        for q in ("p50", "p99"):
            fusion, litellm = row[f"fusion_overhead_{q}_ms"], row[f"litellm_overhead_{q}_ms"]
            entry[q] = round(fusion / litellm, 2) if litellm > 0 else None
            entry[f"{q}_by_round"] = [
                round(f / lt, 2) if lt > 0 else None
                for f, lt in zip(
                    row[f"fusion_overhead_{q}_ms_by_round"],
                    row[f"litellm_overhead_{q}_ms_by_round"],
                    strict=True,
                )
            ]
            if entry[q] is None or entry[q] > 0.5:
                unmet.append(f"c={conc} {q}: {entry[q]}x LiteLLM's overhead")
        ratios[conc] = entry
        if row["fusion_errors"]:
            unmet.append(f"c={conc}: {row['fusion_errors']} Fusion errors")
    rate = result["max_rps"]
    rate_ratio = round(rate["fusion"] / rate["litellm"], 2) if rate["litellm"] else None
    if rate_ratio is None or rate_ratio <= 1.0:
        unmet.append(f"maximum rate {rate_ratio}x LiteLLM's")
    return {"overhead_ratio": ratios, "max_rps_ratio": rate_ratio, "met": not unmet, "unmet": unmet}


def plot(result: dict[str, Any], path: Path) -> None:
    plt = pyplot()

    concs = list(result["concurrency"])
    rows = [result["concurrency"][c] for c in concs]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, q in zip(axes, ("p50", "p99"), strict=True):
        xs = range(len(concs))
        for i, kind in enumerate(("litellm", "fusion")):
            ax.bar(
                [x + (i - 0.5) * 0.35 for x in xs],
                [r[f"{kind}_overhead_{q}_ms"] for r in rows],
                0.35,
                label=kind,
            )
        ax.set_xticks(list(xs), [f"c={c}" for c in concs])
        ax.set_ylabel(f"overhead at {q} (ms)")
        ax.set_title(f"added latency, {q}")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
