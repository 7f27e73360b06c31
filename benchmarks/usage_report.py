"""How long does a usage report take on a busy ledger, and does it hold up budget reservations?

    python -m benchmarks.usage_report [--rows 1000000] [--days 30] [--reservations 300]

Fills a temporary ledger file with ``--rows`` spend rows spread evenly over the last ``--days``
days (8 models, 4 teams, 50 keys: what a gateway settling about 0.4 requests a second for a month
leaves at a million rows), starts the BudgetLedger actor on a local Ray (num_cpus=2) on that file,
and through the actor, as the admin route calls it:

1. times three reports, five times each: the month by day grouped by team and model, the last
   week by hour grouped by model, the last hour by minute;
2. times budget reservations on the same actor (sequential calls from the driver, each released
   at once), alternately with no report running and with the month's report running back to back
   in another thread, four phases of each: a report reads on a worker thread through its own
   read-only connection, so reservations should not wait for it.

Writes benchmarks/results/usage_report.json and usage_report.png (reservation latency CDFs).
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.report import latency_cdfs, pct, pyplot, write_result
from serve_app.config import load_config
from serve_app.ledger import SCHEMA, BudgetsConfig, Charge
from serve_app.usage import UsageQuery

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = ["gpt-4.1", "gpt-4o-mini", "claude-opus-4-5", "claude-sonnet-4-5", "claude-haiku-4-5"]
MODELS += ["gemini-2.5-pro", "llama-3.3-70b-instruct", "llama-3.1-8b-instruct"]
TEAMS = ["research", "search", "support", "platform"]


def fill(path: Path, rows: int, days: int, now: float) -> None:
    """``rows`` settled requests, evenly over the last ``days`` days, in one transaction."""
    rng = random.Random(7)
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(SCHEMA)
    span = days * 86_400
    start = now - span

    def row(i: int) -> tuple[Any, ...]:
        key = rng.randrange(50)
        inp, out = rng.randrange(20, 4000), rng.randrange(10, 800)
        when, cost, cached = start + span * i / rows, inp * 1e-6 + out * 4e-6, rng.randrange(inp // 2 + 1)
        model, team = rng.choice(MODELS), TEAMS[key % 4]
        return (
            f"r{i}",
            when,
            f"k{key}",
            team,
            model,
            "p",
            cost,
            None,
            inp,
            out,
            cached,
            0,
            0,
            "coding",
            "auto",
        )

    with db:
        db.executemany(
            f"INSERT INTO spend VALUES ({', '.join('?' * 15)})",  # the columns in SCHEMA's order
            (row(i) for i in range(rows)),
        )
    db.close()


def reports(now: float, days: int) -> dict[str, UsageQuery]:
    n = int(now)
    return {
        "month_by_day_team_model": UsageQuery(
            start_time=n - days * 86_400, bucket_width="1d", group_by=("team", "model"), limit=31
        ),
        "week_by_hour_model": UsageQuery(
            start_time=n - 7 * 86_400, bucket_width="1h", group_by=("model",), limit=168
        ),
        "hour_by_minute": UsageQuery(start_time=n - 3600, bucket_width="1m"),
    }


def measure(rows: int, days: int, reservations: int) -> dict[str, Any]:
    import ray

    from deployments.ledger import get_or_create

    now = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ledger.db"
        started = time.monotonic()
        fill(path, rows, days, now)
        fill_s = time.monotonic() - started
        base = load_config(None)
        ledger_settings = base.ledger.model_copy(update={"path": str(path), "pin_to_head_node": False})
        budgets = BudgetsConfig.model_validate({"global": {"limit_usd": 1e9, "period": "month"}})
        config = base.model_copy(update={"ledger": ledger_settings, "budgets": budgets})  # holds are written
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            ledger = get_or_create("usage-bench", config)
            ray.get(ledger.pid.remote(), timeout=60)
            report_s: dict[str, list[float]] = {}
            pages: dict[str, Any] = {}
            for name, query in reports(now, days).items():
                for _ in range(5):
                    t = time.perf_counter()
                    pages[name] = ray.get(ledger.usage.remote(query), timeout=300)
                    report_s.setdefault(name, []).append(time.perf_counter() - t)
            month = reports(now, days)["month_by_day_team_model"]
            latencies: dict[str, list[float]] = {"alone": [], "during reports": []}
            done: list[float] = []  # the seconds each report took while reservations ran
            for phase in range(8):
                busy = phase % 2 == 1
                stop = threading.Event()
                worker = threading.Thread(target=_reports, args=(ledger, month, stop, done), daemon=True)
                if busy:
                    worker.start()
                    time.sleep(0.2)
                for i in range(reservations // 4):
                    rid = f"bench-{phase}-{i}"
                    t = time.perf_counter()
                    ray.get(ledger.reserve.remote(rid, 0.001, "k1", "research", 60.0), timeout=60)
                    latencies["during reports" if busy else "alone"].append((time.perf_counter() - t) * 1000)
                    ray.get(ledger.settle.remote([Charge(rid, 0.0)]), timeout=60)
                stop.set()
                if busy:
                    worker.join()
            ray.kill(ledger)
        finally:
            ray.shutdown()
    totals = pages["month_by_day_team_model"]["data"]
    return {
        "rows": rows,
        "days": days,
        "fill_s": round(fill_s, 1),
        "report_s": {
            name: {"median": round(statistics.median(v), 3), "max": round(max(v), 3)}
            for name, v in report_s.items()
        },
        "month_report": {
            "buckets": len(totals),
            "results": sum(len(b["results"]) for b in totals),
            "requests": sum(r["num_model_requests"] for b in totals for r in b["results"]),
        },
        "reservation_ms": {
            name: {"p50": round(pct(v, 0.5), 2), "p99": round(pct(v, 0.99), 2), "n": len(v)}
            for name, v in latencies.items()
        },
        "reports_during_reservations": {"n": len(done), "median_s": round(statistics.median(done), 3)},
        "latencies_ms": {name: [round(x, 3) for x in v] for name, v in latencies.items()},
        "machine": "2 CPUs; BudgetLedger actor on a local Ray; calls from the driver",
    }


def _reports(ledger: Any, query: UsageQuery, stop: threading.Event, done: list[float]) -> None:
    """The report, back to back, until ``stop``."""
    import ray

    while not stop.is_set():
        t = time.perf_counter()
        ray.get(ledger.usage.remote(query), timeout=300)
        done.append(time.perf_counter() - t)


def plot(result: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    latency_cdfs(
        ax, result["latencies_ms"], f"budget reservations on a ledger of {result['rows']:,} spend rows"
    )
    ax.set_xlabel("reservation call latency, ms (driver -> BudgetLedger actor)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--reservations", type=int, default=300, help="per kind (alone, during reports)")
    args = parser.parse_args()
    write_result(RESULTS / "usage_report.json", measure(args.rows, args.days, args.reservations), plot)


if __name__ == "__main__":
    main()
