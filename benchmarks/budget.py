"""Can concurrent requests overspend a budget, and does a ledger crash lose settled spend?

    python -m benchmarks.budget [--requests 200] [--allow 10] [--kill-after 0.4] [--rounds 300]

Starts the emulator (real latency profiles: a gpt-4.1 answer takes about a second) and the full
graph on a local Ray (num_cpus=2) with the ledger in a temporary SQLite file and a team budget
that allows about ``--allow`` requests (``--allow`` times one request's reservation). Then:

1. fires ``--requests`` concurrent requests with a key of that team; ``--kill-after`` seconds in,
   while the admitted calls are in flight, kills the BudgetLedger replica's process with kill -9;
   Serve starts another, which reopens the file;
2. waits for every settlement, then compares the team's spend on disk with the budget (overspend)
   and with what the clients were told they were charged (``fusion.cost_usd``; lost spend);
3. measures what the ledger costs a request: sequential requests (emulator at zero latency),
   interleaved, with a key under a budget (reserve before the call, settle after it, batched) and
   a key under none.

Writes benchmarks/results/budget.json and budget.png.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from benchmarks.harness import interleaved, local_router
from benchmarks.report import added_cost, latency_cdfs, pyplot, write_result
from serve_app.config import DEFAULT_CONFIG_PATH, load_config
from serve_app.ledger import Ledger
from serve_app.pricing import worst_case_usd
from serve_app.schemas import parse_request

RESULTS = Path(__file__).resolve().parent / "results"
MODEL = "gpt-4.1"
MAX_TOKENS = 40  # the emulator's answers are 40 tokens: each request costs close to its reservation
BODY = {
    "model": MODEL,
    "max_tokens": MAX_TOKENS,
    "messages": [{"role": "user", "content": "Summarise the trade-offs of read replicas in one paragraph."}],
}


def reservation_usd(config_path: Path) -> float:
    """One request's hold, computed by the router's own rule (``Accountant.admit``)."""
    chat = parse_request(BODY)
    return worst_case_usd(load_config(config_path), MODEL, chat.prompt_tokens_upper(), MAX_TOKENS)


def write_config(workdir: Path, allow: float) -> tuple[Path, float]:
    data = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    data["providers"]["meta"] = {"kind": "openai_compatible", "api_key_env": "FUSION_LLAMA_API_KEY"}
    data["deployments"]["provider_overrides"] = {}
    data["ledger"] = {"path": str(workdir / "ledger.db")}
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    budget = allow * reservation_usd(path)
    data["budgets"] = {
        "teams": {"bench": {"limit_usd": budget, "period": "day"}, "metered": {"limit_usd": 1e6}}
    }
    path.write_text(yaml.safe_dump(data))
    return path, budget


async def burst(router: str, key: str, n: int, kill_after: float, ledger_pid: int) -> list[dict[str, Any]]:
    headers = {"authorization": f"Bearer {key}"}

    async def one(client: httpx.AsyncClient) -> dict[str, Any]:
        r = await client.post(f"{router}/v1/chat/completions", json=BODY, headers=headers)
        body = r.json()
        fusion = body.get("fusion", {})
        code = body.get("error", {}).get("code") if r.status_code != 200 else None
        return {"status": r.status_code, "code": code, "id": body.get("id"), **fusion}

    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=n)) as client:
        tasks = [asyncio.create_task(one(client)) for _ in range(n)]
        await asyncio.sleep(kill_after)
        os.kill(ledger_pid, signal.SIGKILL)
        return await asyncio.gather(*tasks)


def settled(db_path: Path) -> dict[str, tuple[float, str | None]]:
    db = sqlite3.connect(db_path)
    try:
        return {
            rid: (cost, team)
            for rid, cost, team in db.execute("SELECT request_id, cost_usd, team FROM spend")
        }
    finally:
        db.close()


def wait_settled(
    db_path: Path, ids: list[str], timeout: float = 120.0
) -> dict[str, tuple[float, str | None]]:
    deadline = time.monotonic() + timeout
    while True:
        rows = settled(db_path)
        if all(i in rows for i in ids) or time.monotonic() > deadline:
            return rows
        time.sleep(0.25)


def plot(result: dict[str, Any], latencies: dict[str, list[float]], path: Path) -> None:
    plt = pyplot()

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    names = ["budget", "spent (disk)", "charged (clients)"]
    values = [result["budget_usd"], result["spent_usd"], result["charged_usd"]]
    a.bar(names, values, color=["#999", "#1f77b4", "#ff7f0e"])
    a.axhline(result["budget_usd"] + result["largest_reservation_usd"], ls="--", c="r", lw=1)
    a.text(
        0.02,
        result["budget_usd"] + result["largest_reservation_usd"],
        " budget + one reservation",
        va="bottom",
    )
    a.set_ylabel("USD")
    a.set_title(
        f"{result['requests']} concurrent requests, ledger killed mid-run: {result['admitted']} admitted"
    )
    latency_cdfs(b, latencies, "what the ledger costs a request")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--allow", type=float, default=10.0, help="the budget in reservations")
    parser.add_argument("--kill-after", type=float, default=0.4, help="seconds into the burst")
    parser.add_argument("--rounds", type=int, default=300, help="sequential requests per key (overhead)")
    parser.add_argument("--out", default=str(RESULTS / "budget.json"))
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="fusion-budget-"))
    config_path, budget = write_config(workdir, args.allow)
    ledger = Ledger(workdir / "ledger.db")
    keys = {team: ledger.keys.create(team, "bench")[0] for team in ("bench", "metered", "free")}
    ledger.close()

    with local_router(latency_scale=1.0, config_path=str(config_path)) as (router, emulator_url):
        import ray

        from deployments.autoscaling import NAMESPACE
        from deployments.ledger import ledger_name

        actor = ray.get_actor(ledger_name("fusion"), namespace=NAMESPACE)
        pid = int(ray.get([actor.pid.remote()], timeout=60)[0])
        responses = asyncio.run(burst(router, keys["bench"], args.requests, args.kill_after, pid))
        new_pid = ray.get([actor.pid.remote()], timeout=120)[0]
        admitted = [r for r in responses if r["status"] == 200]
        rows = wait_settled(workdir / "ledger.db", [r["id"] for r in admitted])
        httpx.put(f"{emulator_url}/admin/latency_scale", json={"scale": 0.0}).raise_for_status()
        keyed = {"budgeted key": keys["metered"], "no budget": keys["free"]}
        latencies = asyncio.run(interleaved(router, keyed, BODY, args.rounds))

    spent = sum(cost for cost, team in rows.values() if team == "bench")
    charged = sum(r["cost_usd"] for r in admitted)
    lost = sum(r["cost_usd"] for r in admitted if r["id"] not in rows) + sum(
        abs(rows[r["id"]][0] - r["cost_usd"]) for r in admitted if r["id"] in rows
    )
    statuses: dict[str, int] = {}
    for r in responses:
        label = "ok" if r["status"] == 200 else f"{r['status']} {r['code']}"
        statuses[label] = statuses.get(label, 0) + 1
    budgeted, free = latencies["budgeted key"], latencies["no budget"]
    result = {
        "budget_usd": budget,
        "admitted": len(admitted),
        "spent_usd": spent,
        "overspend_usd": max(0.0, spent - budget),
        "largest_reservation_usd": max((r["reserved_usd"] for r in admitted), default=0.0),
        "lost_settled_after_kill": lost,
        "requests": args.requests,
        "charged_usd": charged,
        "statuses": statuses,
        "ledger_restarted": new_pid != pid,
        "ledger_cost_per_request": added_cost(budgeted, free, "budgeted", "no_budget"),
        "goals": {
            "overspend_within_one_reservation": max(0.0, spent - budget)
            <= max((r["reserved_usd"] for r in admitted), default=0.0),
            "no_settled_spend_lost": lost == 0,
        },
        "machine": f"{os.cpu_count()} CPUs, emulator and graph on 127.0.0.1",
    }
    write_result(Path(args.out), result, lambda r, path: plot(r, latencies, path))


if __name__ == "__main__":
    main()
