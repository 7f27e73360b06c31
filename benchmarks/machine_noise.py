"""How steady is this machine's CPU, and what does work on its other core cost a process?

    python -m benchmarks.machine_noise [--seconds 30] [--interval 0.25] [--window 3]

The gateways' comparisons (``vs_litellm``, ``config_ab``) read differences of a millisecond from
processes that share two cores. This script measures the floor under them: the same pure-Python
loop, timed on the process's own CPU clock (``time.process_time``: time spent waiting for a core
does not count), every ``--interval`` seconds through three phases of ``--seconds`` each:

- idle: nothing else from this script runs;
- other core busy: a second Python process spins (a bounded loop), as the load client, the
  emulator and a gateway's other processes keep the second core busy during a benchmark;
- idle again.

On a dedicated core the loop's CPU time would be the same to a few percent in every phase and
every window. Writes benchmarks/results/machine_noise.json (per phase: the loop's CPU ms at min,
p50, p90 and max, the median of each ``--window``-second window, and the slowest window's median
over the fastest's) and .png (the loop's CPU time over the run).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks.overhead import percentile
from benchmarks.report import pyplot, write_result

RESULTS = Path(__file__).resolve().parent / "results"
ITERATIONS = 50_000  # about 5 ms of one core here


def loop_cpu_ms(iterations: int = ITERATIONS) -> float:
    """CPU milliseconds this process spends on a fixed loop of ``iterations`` multiply-adds."""
    start = time.process_time()
    total = 0
    for i in range(iterations):
        total += i * i
    return (time.process_time() - start) * 1000


def sample(seconds: float, interval: float) -> list[tuple[float, float]]:
    """(seconds since the phase began, the loop's CPU ms) every ``interval`` for ``seconds``."""
    out: list[tuple[float, float]] = []
    begin = time.monotonic()
    while (now := time.monotonic() - begin) < seconds:
        out.append((round(now, 3), round(loop_cpu_ms(), 3)))
        time.sleep(interval)
    return out


def summarize(samples: list[tuple[float, float]], window: float) -> dict[str, Any]:
    """Spread of the loop's CPU ms over a phase: quantiles, each window's median, and the slowest
    window's median over the fastest's (1.0 on a steady core)."""
    values = [ms for _, ms in samples]
    windows: dict[int, list[float]] = {}
    for t, ms in samples:
        windows.setdefault(int(t // window), []).append(ms)
    medians = [round(percentile(v, 0.5), 2) for _, v in sorted(windows.items())]
    return {
        "samples": len(values),
        "cpu_ms_min": round(min(values), 2),
        "cpu_ms_p50": round(percentile(values, 0.5), 2),
        "cpu_ms_p90": round(percentile(values, 0.9), 2),
        "cpu_ms_max": round(max(values), 2),
        "window_medians_ms": medians,
        "slowest_over_fastest_window": round(max(medians) / min(medians), 2),
    }


@contextmanager
def other_core_busy(seconds: float) -> Iterator[None]:
    """A second Python process spinning for at most ``seconds`` (stopped on leaving)."""
    spin = f"import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"
    process = subprocess.Popen([sys.executable, "-c", spin])
    try:
        yield
    finally:
        process.terminate()
        process.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--interval", type=float, default=0.25)
    parser.add_argument("--window", type=float, default=3.0)
    parser.add_argument("--out", default=str(RESULTS / "machine_noise.json"))
    args = parser.parse_args()
    phases: dict[str, list[tuple[float, float]]] = {}
    phases["idle"] = sample(args.seconds, args.interval)
    with other_core_busy(args.seconds + 5):
        time.sleep(0.5)  # let it start
        phases["other_core_busy"] = sample(args.seconds, args.interval)
    phases["idle_again"] = sample(args.seconds, args.interval)
    result: dict[str, Any] = {
        "loop_iterations": ITERATIONS,
        "seconds_per_phase": args.seconds,
        "interval_s": args.interval,
        "window_s": args.window,
        "phases": {name: summarize(s, args.window) for name, s in phases.items()},
        "series": phases,
    }
    idle = result["phases"]["idle"]["cpu_ms_p50"]
    busy = result["phases"]["other_core_busy"]["cpu_ms_p50"]
    result["other_core_busy_over_idle_p50"] = round(busy / idle, 2)
    write_result(Path(args.out), result, plot)


def plot(result: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(10, 4))
    offset = 0.0
    for name, samples in result["series"].items():
        ax.plot([offset + t for t, _ in samples], [ms for _, ms in samples], ".", ms=3, label=name)
        offset += result["seconds_per_phase"]
    ax.set_xlabel("seconds")
    ax.set_ylabel(f"CPU ms of the same {result['loop_iterations']:,}-step loop")
    ax.set_ylim(bottom=0)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
