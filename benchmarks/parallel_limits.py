"""Does a key's parallel-request limit hold across ingress replicas, how much of it can a busy
client use, and what does it cost a request?

    python -m benchmarks.parallel_limits [--limit 4] [--clients 16] [--seconds 20] [--answer-ms 200]

Starts the emulator, with ``gpt-4o-mini`` answering in ``--answer-ms``, and the full graph on a
local Ray (num_cpus=2) with two ingress replicas (Serve spreads requests over both), the ledger in
a temporary SQLite file, and three keys: one limited to ``--limit`` requests in flight, one with a
limit too high to reach, and one with none. Then:

1. ``--clients`` concurrent clients send requests with the limited key for ``--seconds``, each
   sending its next request as soon as it has an answer, or ``--backoff-ms`` after a 429. The
   emulator reports the most answers it had in progress at once: the limit holds if that is at
   most ``--limit``. Every refusal must be 429 ``rate_limit_exceeded`` with ``Retry-After``. The
   slots' use is the admitted requests' answer time over ``limit x seconds``: what a refusal sent
   while a slot was in fact free (a release not yet through) costs;
2. sequential requests, interleaved, with the key whose limit is never reached and the key with
   none: the difference is what a slot costs (its lease, in the ledger call the rate limits make,
   and its release before the answer goes out).

Writes benchmarks/results/parallel_limits.json and parallel_limits.png.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.harness import interleaved, local_router
from benchmarks.rate_limits import INGRESS_REPLICAS, write_config
from benchmarks.report import added_cost, latency_cdfs, pyplot, write_result
from serve_app.ledger import Ledger

RESULTS = Path(__file__).resolve().parent / "results"
MODEL = "gpt-4o-mini"
BODY = {"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "Name a river."}]}


async def busy_clients(
    router: str, key: str, clients: int, seconds: float, backoff_s: float
) -> list[dict[str, Any]]:
    headers = {"authorization": f"Bearer {key}"}
    start = time.monotonic()
    out: list[dict[str, Any]] = []

    async def client_loop(client: httpx.AsyncClient) -> None:
        while time.monotonic() - start < seconds:
            sent = time.monotonic() - start
            r = await client.post(f"{router}/v1/chat/completions", json=BODY, headers=headers)
            error = r.json().get("error", {}) if r.status_code != 200 else {}
            out.append(
                {
                    "sent_s": sent,
                    "answered_s": time.monotonic() - start,
                    "status": r.status_code,
                    "code": error.get("code"),
                    "retry_after": r.headers.get("retry-after"),
                }
            )
            if r.status_code == 429:
                await asyncio.sleep(backoff_s)

    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=clients)) as client:
        await asyncio.gather(*(client_loop(client) for _ in range(clients)))
    return out


def plot(
    result: dict[str, Any], sent: list[dict[str, Any]], latencies: dict[str, list[float]], path: Path
) -> None:
    plt = pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    ok = [s for s in sent if s["status"] == 200]
    for i, s in enumerate(sorted(ok, key=lambda s: s["sent_s"])[:60]):
        a.plot([s["sent_s"], s["answered_s"]], [i, i], lw=2)
    a.set_xlabel("seconds (the first 60 admitted requests, client side)")
    a.set_ylabel("request")
    a.set_title(
        f"limit {result['limit']}: emulator peak {result['emulator_peak_in_flight']} in progress, "
        f"{result['clients']} clients"
    )
    latency_cdfs(b, latencies, "what a parallel-request slot costs a request")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--limit", type=int, default=4)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--answer-ms", type=float, default=200.0)
    parser.add_argument("--backoff-ms", type=float, default=20.0, help="a refused client waits this long")
    parser.add_argument("--rounds", type=int, default=300, help="sequential requests per key (cost)")
    parser.add_argument("--out", default=str(RESULTS / "parallel_limits.json"))
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="fusion-parallel-"))
    config_path = write_config(workdir)
    ledger = Ledger(workdir / "ledger.db")
    limited = ledger.keys.create("bench", "limited", max_parallel_requests=args.limit)[0]
    roomy = ledger.keys.create("bench", "roomy", max_parallel_requests=100_000)[0]
    free = ledger.keys.create("bench", "free")[0]
    ledger.close()

    with local_router(latency_scale=1.0, config_path=str(config_path)) as (router, emulator):
        profile = {"ttft_ms": args.answer_ms, "tokens_per_s": 1e6}
        httpx.put(f"{emulator}/admin/profiles/{MODEL}", json=profile).raise_for_status()
        httpx.delete(f"{emulator}/admin/stats").raise_for_status()
        sent = asyncio.run(busy_clients(router, limited, args.clients, args.seconds, args.backoff_ms / 1000))
        peak = httpx.get(f"{emulator}/admin/stats").json()["peak_in_flight"].get(MODEL, 0)
        httpx.put(f"{emulator}/admin/profiles/{MODEL}", json={"ttft_ms": 0, "tokens_per_s": 1e6})
        keyed = {"parallel limit (never reached)": roomy, "no limit": free}
        latencies = asyncio.run(interleaved(router, keyed, BODY, args.rounds))

    ok = [s for s in sent if s["status"] == 200]
    refused = [s for s in sent if s["status"] != 200]
    span = max(s["answered_s"] for s in sent)
    slot_use = len(ok) * args.answer_ms / 1000 / (args.limit * span)
    limited_ms, free_ms = latencies["parallel limit (never reached)"], latencies["no limit"]
    result = {
        "limit": args.limit,
        "clients": args.clients,
        "seconds": round(span, 2),
        "answer_ms": args.answer_ms,
        "backoff_ms": args.backoff_ms,
        "ingress_replicas": INGRESS_REPLICAS,
        "sent": len(sent),
        "admitted": len(ok),
        "admitted_per_s": round(len(ok) / span, 2),
        "most_per_s_possible": round(args.limit / (args.answer_ms / 1000), 2),
        "slot_use": round(slot_use, 4),
        "emulator_peak_in_flight": peak,
        "refused": len(refused),
        "refused_codes": sorted({f"{s['status']} {s['code']}" for s in refused}),
        "refusals_without_retry_after": sum(s["retry_after"] is None for s in refused),
        "admitted_latency_p50_ms": round(
            statistics.median((s["answered_s"] - s["sent_s"]) * 1000 for s in ok), 1
        ),
        "cost_per_request": added_cost(limited_ms, free_ms, "limited", "no_limit"),
        "goals": {
            "limit_holds": 0 < peak <= args.limit,
            "every_refusal_is_429_rate_limit_exceeded": all(
                s["status"] == 429 and s["code"] == "rate_limit_exceeded" for s in refused
            ),
        },
        "machine": f"{os.cpu_count()} CPUs, emulator and graph on 127.0.0.1",
    }
    write_result(Path(args.out), result, lambda r, path: plot(r, sent, latencies, path))


if __name__ == "__main__":
    main()
