"""Where does a routed request's time go, at concurrency 1?

    python -m benchmarks.overhead_profile [--requests 300]

Starts the emulator (0 ms model latency) and the full default graph on a local Ray (num_cpus=2),
twice: with Serve's Python proxy, then with its HAProxy ingress and throughput-optimized mode
(``serve_app/serve_modes.py``). Each time it sends sequential ``model: "auto"`` requests and splits
each one's latency with the timings the router reports (``fusion.timings_ms``):

- classifier: the classifier call (``classify_ms``), split into the model's own inference
  (measured in this process on the same prompt, on the ingress's thread count) and the rest (the
  Ray handle hop, or nearly nothing where the idle ingress classifies the prompt itself);
- provider: the winning provider call (``provider_ms``), split into the emulator's HTTP answer
  (measured directly) and the rest (the SDK, and the Ray hop unless the idle ingress calls the SDK
  itself: ``api_providers_when_idle``);
- in the ingress: the rest of the handler (``handler_ms`` minus the two calls: body, validation,
  auth, routing, accounting);
- outside the handler: the client's latency minus ``handler_ms`` (Serve's ingress, HTTP, the
  response's serialisation).

Writes benchmarks/results/overhead_profile.json and overhead_profile.png.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.harness import local_router
from benchmarks.report import pyplot, write_result
from serve_app.serve_modes import apply

RESULTS = Path(__file__).resolve().parent / "results"
PROMPT = "Write a python function to reverse a string."
STAGES = (
    "classifier_inference",
    "classifier_hop",
    "provider_http",
    "provider_hop_and_sdk",
    "ingress_rest",
    "outside_handler",
)


def classifier_inference_ms(rounds: int = 200) -> float:
    """The classifier's pass as the default graph runs it at concurrency 1: in the ingress
    (placement adaptive), on the configured number of ONNX Runtime threads."""
    from deployments.classifier import load_classifier
    from serve_app.config import load_config

    options = load_config(None).deployments.classifier
    classifier = load_classifier(options.engine, options.ingress_threads)
    for _ in range(20):
        classifier.classify_many([PROMPT])
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        classifier.classify_many([PROMPT])
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def sequential(url: str, body: dict[str, Any], n: int) -> tuple[list[float], list[dict[str, float]]]:
    latencies, timings = [], []
    with httpx.Client(timeout=30) as client:
        for i in range(n + 20):
            t0 = time.perf_counter()
            r = client.post(url, json=body)
            ms = (time.perf_counter() - t0) * 1000
            r.raise_for_status()
            if i >= 20:  # warm-up
                latencies.append(ms)
                timings.append(r.json().get("fusion", {}).get("timings_ms", {}))
    return latencies, timings


def profile(n: int, inference_ms: float) -> dict[str, Any]:
    messages = [{"role": "user", "content": PROMPT}]
    with local_router(0.0) as (router, emulator_url):
        direct, _ = sequential(
            f"{emulator_url}/openai/v1/chat/completions", {"model": "gpt-4o-mini", "messages": messages}, n
        )
        total, timings = sequential(
            f"{router}/v1/chat/completions", {"model": "auto", "messages": messages}, n
        )

    def med(key: str) -> float:
        return statistics.median(t.get(key, 0.0) for t in timings)

    handler, classify, provider = med("handler_ms"), med("classify_ms"), med("provider_ms")
    client, emulator = statistics.median(total), statistics.median(direct)
    stages = {
        "classifier_inference": inference_ms,
        "classifier_hop": classify - inference_ms,
        "provider_http": emulator,
        "provider_hop_and_sdk": provider - emulator,
        "ingress_rest": handler - classify - provider,
        "outside_handler": client - handler,
    }
    return {
        "client_p50_ms": round(client, 2),
        "direct_p50_ms": round(emulator, 2),
        "overhead_p50_ms": round(client - emulator, 2),
        "handler_p50_ms": round(handler, 2),
        "stages_p50_ms": {k: round(v, 2) for k, v in stages.items()},
        "requests": n,
    }


def plot(result: dict[str, Any], path: Path) -> None:
    plt = pyplot()

    modes = list(result["modes"])
    fig, ax = plt.subplots(figsize=(9, 3.8))
    left = [0.0] * len(modes)
    for stage in STAGES:
        widths = [result["modes"][m]["stages_p50_ms"][stage] for m in modes]
        ax.barh(modes, widths, left=left, label=stage.replace("_", " "))
        left = [a + b for a, b in zip(left, widths, strict=True)]
    ax.set_xlabel("ms (medians, concurrency 1, emulator at 0 ms)")
    ax.set_title("Where a routed request's time goes")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--out", default=str(RESULTS / "overhead_profile.json"))
    args = parser.parse_args()
    inference = classifier_inference_ms()
    result: dict[str, Any] = {
        "machine": f"{os.cpu_count()} CPUs; emulator at 0 ms; sequential requests from one Python client",
        "classifier_inference_p50_ms": round(inference, 2),
        "modes": {},
    }
    result["modes"]["serve proxy"] = profile(args.requests, inference)
    apply(haproxy=True, throughput_optimized=True)  # the Ray started next inherits them
    result["modes"]["haproxy + throughput-optimized"] = profile(args.requests, inference)
    write_result(Path(args.out), result, plot)


if __name__ == "__main__":
    main()
