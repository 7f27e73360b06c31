"""Does the router keep serving while the primary model fails in each way the emulator can fail?

    python -m benchmarks.failover [--rate 20] [--seconds 8] [--fault-at 2]

Starts the emulator (its own process, latency profiles x0.02) and a local Ray (num_cpus=2) with the
full graph, per-attempt timeouts of 1 s. For each fault kind: circuits reset, open-loop load at a
fixed rate of coding requests (primary: claude-sonnet-4-5) for a bounded time, the fault injected on
the primary after ``--fault-at`` seconds. Per kind it records the success rate, the p99 latency added
over a fault-free run, and eject_s: how long after the fault started the primary was still
attempted. Writes benchmarks/results/failover.json and failover.png.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
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
PRIMARY = "claude-sonnet-4-5"
PROMPT = "Write a Python function that merges two sorted lists; handle edge cases and explain the complexity."

# kind name -> (fault spec, stream requests only)
FAULTS: dict[str, tuple[dict[str, Any] | None, bool]] = {
    "none": (None, False),
    "none_streams": (None, True),  # the baseline of the stream-only kinds below
    "http_429": ({"kind": "http_error", "status": 429, "retry_after": 2}, False),
    "http_500": ({"kind": "http_error", "status": 500}, False),
    "http_503": ({"kind": "http_error", "status": 503}, False),
    "http_529": ({"kind": "http_error", "status": 529}, False),
    "refuse": ({"kind": "refuse"}, False),
    "timeout": ({"kind": "timeout", "delay_s": 30}, False),
    "stall_before_first_token": ({"kind": "stall", "after_tokens": 0, "delay_s": 30}, True),
    "stall_after_tokens": ({"kind": "stall", "after_tokens": 3, "delay_s": 30}, True),
    "cut_before_first_token": ({"kind": "cut", "after_tokens": 0}, True),
    "cut_after_tokens": ({"kind": "cut", "after_tokens": 3}, True),
    "malformed_before_first_token": ({"kind": "malformed", "after_tokens": 0}, True),
    "malformed_after_tokens": ({"kind": "malformed", "after_tokens": 3}, True),
}


def bench_config(path: Path) -> Path:
    data = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    for provider in data["providers"].values():
        provider["read_timeout_s"] = 1.0
    data["providers"]["meta"] = {
        "kind": "openai_compatible",
        "api_key_env": "FUSION_LLAMA_API_KEY",
        "read_timeout_s": 1.0,
    }
    data["deployments"]["provider_overrides"] = {}
    data["retry"].update(
        {"attempt_timeout_s": 1.0, "first_token_timeout_s": 1.0, "inter_token_timeout_s": 1.0}
    )
    path.write_text(yaml.safe_dump(data))
    return path


async def one(client: httpx.AsyncClient, url: str, stream: bool, t0: float) -> dict[str, Any]:
    body = {"model": "auto:quality", "stream": stream, "messages": [{"role": "user", "content": PROMPT}]}
    start = time.perf_counter()
    ok, fusion = False, {}
    try:
        r = await client.post(url, json=body)
        if r.status_code == 200 and stream:
            data = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
            ok = bool(data) and data[-1] == "[DONE]"
            if ok:
                fusion = json.loads(data[-2]).get("fusion", {})
        elif r.status_code == 200:
            fusion = r.json()["fusion"]
            ok = bool(r.json()["choices"][0]["message"]["content"])
    except httpx.HTTPError:
        ok = False
    failed = [f["model"] for f in fusion.get("fallbacks", [])] + list(fusion.get("hedged", []))
    return {
        "t": start - t0,
        "latency_ms": (time.perf_counter() - start) * 1000,
        "ok": ok,
        "primary_failed": PRIMARY in failed,  # failed, or hedged over because it was too slow
        "primary_attempted": PRIMARY in [*failed, fusion.get("model")],
        "fusion": fusion,
    }


async def run_kind(
    router: str,
    emu: str,
    fault: dict[str, Any] | None,
    stream_only: bool,
    rate: float,
    seconds: float,
    fault_at: float,
) -> list[dict[str, Any]]:
    url = f"{router}/v1/chat/completions"
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=200)) as client:
        await client.delete(f"{emu}/admin/faults")
        await client.post(f"{router}/v1/router/circuits/reset")
        await asyncio.sleep(0.5)
        t0 = time.perf_counter()
        tasks = []
        injected = False
        n = int(rate * seconds)
        for i in range(n):
            due = t0 + i / rate
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            if fault is not None and not injected and time.perf_counter() - t0 >= fault_at:
                await client.put(f"{emu}/admin/faults/{PRIMARY}", json=fault)
                injected = True
            tasks.append(asyncio.create_task(one(client, url, stream_only or i % 2 == 0, t0)))
        results = list(await asyncio.gather(*tasks))
        await client.delete(f"{emu}/admin/faults")
    return results


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))] if ordered else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--fault-at", type=float, default=2.0)
    parser.add_argument("--out", default=str(RESULTS / "failover.json"))
    parser.add_argument("--raw", help="also write every request's record (fusion info included) here")
    parser.add_argument("--kinds", nargs="*", help="only these fault kinds (the baselines always run)")
    args = parser.parse_args()

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    raw: dict[str, list[dict[str, Any]]] = {}
    config = bench_config(out.parent / "failover_config.yaml")
    try:
        with local_router(latency_scale=0.02, config_path=str(config)) as (router, emu):
            asyncio.run(run_kind(router, emu, None, False, args.rate, 2.0, 99))  # warm-up
            for kind, (fault, stream_only) in FAULTS.items():
                if args.kinds and kind not in args.kinds and not kind.startswith("none"):
                    continue
                raw[kind] = asyncio.run(
                    run_kind(router, emu, fault, stream_only, args.rate, args.seconds, args.fault_at)
                )
                ok = sum(r["ok"] for r in raw[kind])
                print(f"{kind}: {ok}/{len(raw[kind])} ok", flush=True)
    finally:
        config.unlink(missing_ok=True)

    if args.raw:
        Path(args.raw).write_text(json.dumps(raw, indent=1) + "\n")
    baseline_p99 = p99([r["latency_ms"] for r in raw["none"]])
    stream_baseline_p99 = p99([r["latency_ms"] for r in raw["none_streams"]])
    faults: dict[str, Any] = {}
    for kind, rows in raw.items():
        base = stream_baseline_p99 if FAULTS[kind][1] else baseline_p99
        during = [r for r in rows if r["t"] >= args.fault_at]
        failed_at = sorted(
            r["t"] for r in during if r["primary_failed"] or (r["primary_attempted"] and not r["ok"])
        )
        # eject: the end of the first run of failed attempts on the primary; later isolated failures
        # (more than 1 s apart) are the breaker's half-open probes
        ejected = failed_at[0] if failed_at else args.fault_at
        for earlier, later in itertools.pairwise(failed_at):
            if later - earlier > 1.0:
                break
            ejected = later
        succeeded = sum(r["ok"] for r in rows)
        faults[kind] = {
            "requests": len(rows),
            "succeeded": succeeded,
            "success_rate": round(succeeded / len(rows), 4),
            "added_latency_p99_ms": round(p99([r["latency_ms"] for r in during]) - base, 1),
            "eject_s": round(ejected - args.fault_at, 3) if failed_at else 0.0,
            "primary_failures_seen": len(failed_at),
            "probe_failures": sum(1 for t in failed_at if t > ejected),
        }
    result = {
        "rate_rps": args.rate,
        "seconds_per_kind": args.seconds,
        "fault_at_s": args.fault_at,
        "attempt_timeout_s": 1.0,
        "baseline_p99_ms": round(baseline_p99, 1),
        "baseline_streams_p99_ms": round(stream_baseline_p99, 1),
        "machine": f"{os.cpu_count()} CPUs, emulator latency x0.02, one ingress replica",
        "goals": {"success_rate": 0.999, "added_latency_p99_ms": 1100, "eject_s": 1.0},
        "faults": faults,
    }
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(faults, indent=2))
    plot(raw, args.fault_at, out.with_suffix(".png"))


def plot(raw: dict[str, list[dict[str, Any]]], fault_at: float, path: Path) -> None:
    plt = pyplot()

    kinds = list(raw)
    cols = 4
    rows = (len(kinds) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(16, 3 * rows), sharex=True)
    for ax, kind in zip(axes.flat, kinds, strict=False):
        data = raw[kind]
        ax.scatter(
            [r["t"] for r in data if r["ok"]], [r["latency_ms"] for r in data if r["ok"]], s=6, label="ok"
        )
        ax.scatter(
            [r["t"] for r in data if not r["ok"]],
            [r["latency_ms"] for r in data if not r["ok"]],
            s=12,
            color="red",
            label="failed",
        )
        ax.axvline(fault_at, color="grey", linestyle="--")
        ax.set_title(kind, fontsize=9)
        ax.set_yscale("log")
    for ax in list(axes.flat)[len(kinds) :]:
        ax.axis("off")
    fig.supxlabel("seconds (fault from the dashed line)")
    fig.supylabel("latency (ms)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
