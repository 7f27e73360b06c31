"""What every benchmark script does with its result: write the JSON, print it, draw the plot."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only backend (no display here)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_result(
    out: Path, result: dict[str, Any], plot: Callable[[dict[str, Any], Path], None] | None = None
) -> None:
    """``out`` (JSON), the same on stdout, and ``plot(result, out.png)`` when given."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    if plot is not None:
        plot(result, out.with_suffix(".png"))


def pct(values: list[float], q: float) -> float:
    """The nearest-rank ``q`` quantile of ``values`` (the key-accounting benchmarks' p99)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def added_cost(
    with_ms: list[float], without_ms: list[float], with_name: str, without_name: str
) -> dict[str, Any]:
    """What a key's accounting costs a request: p50 and p99 of the requests made with it and
    without it (interleaved), and the differences."""
    return {
        "rounds": len(with_ms),
        f"{with_name}_p50_ms": statistics.median(with_ms),
        f"{with_name}_p99_ms": pct(with_ms, 0.99),
        f"{without_name}_p50_ms": statistics.median(without_ms),
        f"{without_name}_p99_ms": pct(without_ms, 0.99),
        "added_p50_ms": statistics.median(with_ms) - statistics.median(without_ms),
        "added_p99_ms": pct(with_ms, 0.99) - pct(without_ms, 0.99),
    }


def latency_cdfs(ax: Any, latencies: dict[str, list[float]], title: str) -> None:
    """One CDF per named list of latencies (ms) on ``ax``."""
    for name, values in latencies.items():
        ordered = sorted(values)
        ax.plot(ordered, [i / len(ordered) for i in range(len(ordered))], label=name)
    ax.set_xlabel("request latency, ms (emulator at zero latency)")
    ax.set_ylabel("CDF")
    ax.set_title(title)
    ax.legend()
