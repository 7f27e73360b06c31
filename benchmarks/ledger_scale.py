"""Do the ledger's budgets, reports and settlements stay fast as its spend grows, and does
retention bound its file?

    python -m benchmarks.ledger_scale [--rows 100000 1000000 3000000] [--days 30] [--retention-days 7]

For each size, fills a temporary ledger file with that many spend rows spread evenly over the
last ``--days`` days (``benchmarks/usage_report.py``'s fill: 8 models, 4 teams, 50 keys), the way
a file written before the hourly totals looks, then, on one thread of this process (what the
BudgetLedger actor runs):

1. opens it as the ledger: the first open builds the hourly totals from the rows;
2. times the cold spend sums a restarted ledger makes, for the month: the global budget, one
   team's, and 50 keys' one after another, from the totals and, as before them, from the rows;
3. times three usage reports (the month by day per team and model, the week by hour per model,
   the hour by minute) on the file and on a copy without the totals (every bucket from the rows);
4. times settlements of new requests, one at a time and in batches of 20, with the totals kept
   and with their update switched off (the ledger as it was);
5. drops the rows older than ``--retention-days`` in the actor's chunks, timing each chunk (the
   longest a reservation can wait for retention), and checks that the budgets and the month's
   daily report are unchanged.

Writes benchmarks/results/ledger_scale.json and ledger_scale.png.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from benchmarks.report import pct, pyplot, write_result
from benchmarks.usage_report import MODELS, TEAMS, fill, reports
from deployments.ledger import PRUNE_CHUNK
from serve_app import spend_rollup
from serve_app.ledger import Budget, Charge, Ledger, period_start
from serve_app.usage import UsageQuery, read_usage

RESULTS = Path(__file__).resolve().parent / "results"
KEYS = [f"k{i}" for i in range(50)]


def _median_s(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _rows_sum(db: sqlite3.Connection, start: float, column: str | None, value: str | None) -> float:
    """A budget's spend as the ledger summed it before the totals: over the period's rows."""
    sql = "SELECT COALESCE(SUM(cost_usd), 0) FROM spend WHERE settled_at >= ?"
    args: tuple[Any, ...] = (start,)
    if column is not None:
        sql, args = sql + f" AND {column} = ?", (start, value)
    return float(db.execute(sql, args).fetchone()[0])


def _budget_sums(ledger: Ledger, now: float) -> dict[str, dict[str, float | bool]]:
    start = period_start("month", now)
    db = ledger.db
    cases: dict[str, tuple[Callable[[], Any], Callable[[], Any]]] = {
        "global": (
            lambda: spend_rollup.spent_since(db, start),
            lambda: _rows_sum(db, start, None, None),
        ),
        "one_team": (
            lambda: spend_rollup.spent_since(db, start, team="research"),
            lambda: _rows_sum(db, start, "team", "research"),
        ),
        "fifty_keys": (
            lambda: [spend_rollup.spent_since(db, start, key_id=k) for k in KEYS],
            lambda: [_rows_sum(db, start, "key_id", k) for k in KEYS],
        ),
    }
    out: dict[str, dict[str, float | bool]] = {}
    for name, (totals, rows) in cases.items():
        a, b = totals(), rows()
        pairs = zip(a, b, strict=True) if isinstance(a, list) else [(a, b)]
        out[name] = {
            "totals_ms": round(_median_s(totals, 5) * 1000, 3),
            "rows_ms": round(_median_s(rows, 3) * 1000, 3),
            "same_sums": all(abs(x - y) <= 1e-9 * max(1.0, y) for x, y in pairs),
        }
    return out


def _reports(path: Path, rows_only: Path, now: float, days: int) -> dict[str, dict[str, float | bool]]:
    out: dict[str, dict[str, float | bool]] = {}
    for name, query in reports(now, days).items():
        got = read_usage(path, query, now)
        want = read_usage(rows_only, query, now)
        out[name] = {
            "totals_s": round(_median_s(partial(read_usage, path, query, now), 3), 4),
            "rows_s": round(_median_s(partial(read_usage, rows_only, query, now), 3), 4),
            "same_answer": _flat(got) == _flat(want),
        }
    return out


def _flat(page: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [
        (b["start_time"], *(round(v, 6) if isinstance(v, float) else v for v in r.values()))
        for b in page["data"]
        for r in b["results"]
    ]


def _settle_us(ledger: Ledger, batch: int, n: int, tag: str) -> dict[str, float]:
    rng = random.Random(batch)
    per_batch = []
    for b in range(n // batch):
        charges = []
        for j in range(batch):
            k = rng.randrange(50)
            charges.append(
                Charge(f"{tag}-{batch}-{b}-{j}", 0.001, f"k{k}", TEAMS[k % 4], rng.choice(MODELS), "p")
            )
        t = time.perf_counter()
        ledger.settle(charges)
        per_batch.append(time.perf_counter() - t)
    return {
        "per_charge_us": round(sum(per_batch) / n * 1e6, 1),
        "batch_p50_ms": round(pct(per_batch, 0.5) * 1000, 3),
        "batch_p99_ms": round(pct(per_batch, 0.99) * 1000, 3),
    }


def _settlements(ledger: Ledger, n: int) -> dict[str, dict[str, float]]:
    out = {}
    add = spend_rollup.add
    for batch in (1, 20):
        out[f"batch_{batch}_with_totals"] = _settle_us(ledger, batch, n, "with")
        spend_rollup.add = lambda *a, **k: None  # the ledger as it was
        try:
            out[f"batch_{batch}_rows_only"] = _settle_us(ledger, batch, n, "without")
        finally:
            spend_rollup.add = add
    return out


def _retention(ledger: Ledger, now: float, days: int, retention_days: float) -> dict[str, Any]:
    first_hour = (int(now) - days * 86_400) // 3600 * 3600  # whole hours: the rows before will be gone
    month = UsageQuery(start_time=first_hour, bucket_width="1d", group_by=("team",), limit=31)
    before_report = _flat(read_usage(ledger.path, month, now))
    start = period_start("month", now)
    before_keys = [spend_rollup.spent_since(ledger.db, start, key_id=k) for k in KEYS]
    rows_before = ledger.db.execute("SELECT COUNT(*) FROM spend").fetchone()[0]
    chunks = []
    while True:
        t = time.perf_counter()
        n = ledger.prune(retention_days * 86_400, PRUNE_CHUNK)
        chunks.append(time.perf_counter() - t)
        if n < PRUNE_CHUNK:
            break
    rows_after = ledger.db.execute("SELECT COUNT(*) FROM spend").fetchone()[0]
    page_size = ledger.db.execute("PRAGMA page_size").fetchone()[0]
    free_pages = ledger.db.execute("PRAGMA freelist_count").fetchone()[0]
    after_keys = [spend_rollup.spent_since(ledger.db, start, key_id=k) for k in KEYS]
    return {
        "retention_days": retention_days,
        "rows_before": rows_before,
        "rows_after": rows_after,
        "chunks": len(chunks),
        "chunk_rows": PRUNE_CHUNK,
        "chunk_ms": {
            "p50": round(pct(chunks, 0.5) * 1000, 2),
            "p99": round(pct(chunks, 0.99) * 1000, 2),
            "max": round(max(chunks) * 1000, 2),
        },
        "total_s": round(sum(chunks), 2),
        "freed_mb_reusable": round(free_pages * page_size / 1e6, 1),
        "budgets_unchanged": after_keys == before_keys,
        "daily_report_unchanged": _flat(read_usage(ledger.path, month, now)) == before_report,
    }


def measure_one(rows: int, days: int, retention_days: float, settlements: int) -> dict[str, Any]:
    now = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ledger.db"
        t = time.perf_counter()
        fill(path, rows, days, now)
        fill_s = time.perf_counter() - t
        rows_only = Path(tmp) / "rows_only.db"
        shutil.copy(path, rows_only)
        file_mb = path.stat().st_size / 1e6
        t = time.perf_counter()
        ledger = Ledger(path, [Budget("global", 1e9, "month")])
        open_s = time.perf_counter() - t
        totals_rows = ledger.db.execute("SELECT COUNT(*) FROM spend_hourly").fetchone()[0]
        ledger.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        result = {
            "rows": rows,
            "days": days,
            "fill_s": round(fill_s, 1),
            "file_mb_rows_only": round(file_mb, 1),
            "file_mb_with_totals": round(path.stat().st_size / 1e6, 1),
            "first_open_builds_totals_s": round(open_s, 2),
            "hourly_total_rows": totals_rows,
            "budget_sums_cold": _budget_sums(ledger, now),
            "reports": _reports(path, rows_only, now, days),
            "settle": _settlements(ledger, settlements),
            "retention": _retention(ledger, now, days, retention_days),
        }
        ledger.close()
    return result


def plot(result: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    sizes = [r["rows"] for r in result["sizes"]]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, style in (("fifty_keys", "o"), ("global", "s")):
        for source, line in (("rows_ms", "--"), ("totals_ms", "-")):
            ys = [r["budget_sums_cold"][name][source] for r in result["sizes"]]
            axes[0].plot(sizes, ys, line + style, label=f"{name.replace('_', ' ')}, {source[:-3]}")
    axes[0].set_title("cold monthly budget sums (a restarted ledger)")
    for name, style in (("month_by_day_team_model", "o"), ("week_by_hour_model", "s")):
        for source, line in (("rows_s", "--"), ("totals_s", "-")):
            ys = [r["reports"][name][source] * 1000 for r in result["sizes"]]
            axes[1].plot(sizes, ys, line + style, label=f"{name.replace('_', ' ')}, {source[:-2]}")
    axes[1].set_title("usage reports")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"spend rows in the ledger ({result['days']} days)")
        ax.set_ylabel("ms")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000, 3_000_000])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--retention-days", type=float, default=7.0)
    parser.add_argument("--settlements", type=int, default=4000, help="per case")
    args = parser.parse_args()
    result = {
        "days": args.days,
        "sizes": [measure_one(n, args.days, args.retention_days, args.settlements) for n in args.rows],
        "machine": "2 CPUs; the ledger core in one process, one thread (what the BudgetLedger actor runs)",
    }
    write_result(RESULTS / "ledger_scale.json", result, plot)


if __name__ == "__main__":
    main()
