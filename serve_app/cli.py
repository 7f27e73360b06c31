"""``fusion-router``: run the router, run the provider emulator, check a configuration, manage keys."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from serve_app.cli_keys import budgets, keys_cli, usage
from serve_app.config import ConfigError, FusionConfig, load_config

cli = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Fusion Router: a multi-provider LLM router."
)
cli.add_typer(keys_cli, name="keys")
cli.command("budgets")(budgets)
cli.command("usage")(usage)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML config (default: $FUSION_CONFIG or the packaged one)"),
]


def _load(config_path: Path | None) -> FusionConfig:
    try:
        return load_config(config_path)
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None


def _emulated(config: FusionConfig) -> list[str]:
    used = {m.provider for m in config.models.values()}
    return sorted(p for p in used if config.providers[p].mode(os.environ) == "emulated")


def _prepare_local_models(config: FusionConfig) -> None:
    """Convert the self-hosted model once before deploying, so that replicas start from the cache."""
    from deployments.providers.llama_models import resolve_model_dir

    used = {m.provider for m in config.models.values()}
    for name in sorted(used):
        local = config.providers[name].local
        if local is not None:
            typer.echo(
                f"Provider {name}: self-hosted {local.model} on {local.engine} (preparing the weights)."
            )
            resolve_model_dir(local.model)


@cli.command()
def check_config(config_path: ConfigOption = None) -> None:
    """Validate a configuration and print what it routes to."""
    config = _load(config_path)
    for task, row in config.routing.table.items():
        typer.echo(
            f"{task.value:17} primary={row.primary} fallback={row.fallback} "
            f"cost_sensitive={row.cost_sensitive}"
        )
    emulated = _emulated(config)
    typer.echo(f"providers without a key (served by the emulator): {', '.join(emulated) or 'none'}")


@cli.command()
def classify(
    input_path: Annotated[
        Path, typer.Option("--input", "-i", help='JSONL file, one {"prompt": ...} per line')
    ],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="JSONL out (default: stdout)")] = None,
    engine: Annotated[str, typer.Option(help="embedding (trained heads) or keyword")] = "embedding",
    batch_size: Annotated[int, typer.Option(min=1, help="prompts per batch")] = 64,
) -> None:
    """Classify prompts: one {"task_type", "probabilities", "complexity"} object per input line.

    A line that is not a JSON object with a string "prompt" gets {"error": ..., "line": N} instead,
    and the exit status is 1.
    """
    import json

    from deployments.classifier import load_classifier

    if engine not in ("embedding", "keyword"):
        typer.echo(f"--engine must be embedding or keyword, not {engine!r}", err=True)
        raise typer.Exit(2)
    try:
        lines = input_path.read_text().split("\n")
    except OSError as exc:
        typer.echo(f"cannot read {input_path}: {exc.strerror}", err=True)
        raise typer.Exit(2) from None
    results: list[dict[str, object]] = []
    prompts: list[tuple[int, str]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            results.append({"line": number, "error": f"not JSON: {exc.msg}"})
            continue
        prompt = obj.get("prompt") if isinstance(obj, dict) else None
        if not isinstance(prompt, str):
            results.append({"line": number, "error": 'expected an object with a string "prompt"'})
            continue
        prompts.append((number, prompt))
        results.append({"line": number})
    classifier = load_classifier(engine)
    by_line: dict[int, dict[str, object]] = {}
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        for (number, _), c in zip(chunk, classifier.classify_many([p for _, p in chunk]), strict=True):
            by_line[number] = {
                "task_type": c.task_type,
                "probabilities": c.probabilities,
                "complexity": c.complexity,
            }
    out_lines = []
    failed = False
    for r in results:
        number = int(str(r["line"]))
        if "error" in r:
            failed = True
            out_lines.append(json.dumps(r))
        else:
            out_lines.append(json.dumps(by_line[number]))
    text = "\n".join(out_lines) + ("\n" if out_lines else "")
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text)
    if failed:
        raise typer.Exit(1)


@cli.command()
def forecast(
    trace: Annotated[Path, typer.Option("--trace", help="CSV (with a header) or JSONL of arrivals")],
    timestamp_field: Annotated[
        str, typer.Option("--timestamp-field", help="arrival time: epoch seconds or ISO 8601")
    ],
    weight_field: Annotated[
        str | None,
        typer.Option("--weight-field", help="sum this field per step (e.g. tokens) instead of counting"),
    ] = None,
    step_s: Annotated[float, typer.Option(min=0.001, help="seconds per step")] = 60.0,
    horizon_s: Annotated[
        float, typer.Option(min=0.001, help="how far ahead (decision lag + cold start)")
    ] = 120.0,
    season_s: Annotated[
        float, typer.Option(min=0.001, help="seasonal period, used when the trace spans two of them")
    ] = 86400.0,
    cycle_s: Annotated[
        float,
        typer.Option(min=0, help="the hourly cycle's variants run beside the plain forecast (0: none)"),
    ] = 3600.0,
) -> None:
    """Evaluate the demand forecaster on a trace, as benchmarks/forecast.py does on the shared data:
    settings chosen on the second quarter, scored on the second half against last-value and
    seasonal-naive. Prints one JSON object."""
    import json

    from predictors.forecast_eval import evaluate_trace

    try:
        figures = evaluate_trace(trace, timestamp_field, step_s, horizon_s, season_s, weight_field, cycle_s)
    except OSError as exc:
        typer.echo(f"cannot read {trace}: {exc.strerror}", err=True)
        raise typer.Exit(2) from None
    except (ValueError, KeyError) as exc:
        typer.echo(f"cannot evaluate {trace}: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps(figures, indent=2))


@cli.command()
def emulator(
    host: Annotated[str, typer.Option(help="bind address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 8100,
    latency_scale: Annotated[float, typer.Option(help="multiplies every emulated delay (0 = instant)")] = 1.0,
) -> None:
    """Run the provider emulator (OpenAI, Anthropic and Gemini wire protocols) in the foreground."""
    from serve_app.emulator.server import serve_forever

    typer.echo(
        f"provider emulator on http://{host}:{port} (latency x{latency_scale}); admin API under /admin"
    )
    serve_forever(host, port, latency_scale)


@cli.command()
def run(
    config_path: ConfigOption = None,
    emulator_port: Annotated[
        int, typer.Option(help="port of the emulator started for providers without keys")
    ] = 8100,
    latency_scale: Annotated[float, typer.Option(help="emulator delay multiplier")] = 1.0,
    num_cpus: Annotated[int | None, typer.Option(help="CPUs for the local Ray (default: all)")] = None,
    haproxy: Annotated[
        bool, typer.Option(help="HAProxy ingress straight to the replicas (their ports on every interface)")
    ] = False,
    throughput_optimized: Annotated[bool, typer.Option(help="Ray Serve's throughput-optimized mode")] = False,
) -> None:
    """Start a local Ray, the provider emulator (for providers without API keys) and the router."""
    from serve_app.serve_modes import apply

    config = _load(config_path)
    apply(haproxy, throughput_optimized)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    emulated = _emulated(config)
    emulator_proc: subprocess.Popen[bytes] | None = None
    emulator_url = config.emulator_url()
    if emulated:
        emulator_url = f"http://127.0.0.1:{emulator_port}"
        typer.echo(
            f"No API key for: {', '.join(emulated)}. These providers are served by the built-in "
            f"provider emulator at {emulator_url}."
        )
        emulator_proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "serve_app.cli",
                "emulator",
                "--port",
                str(emulator_port),
                "--latency-scale",
                str(latency_scale),
            ],
        )
        from serve_app.emulator.server import wait_healthy

        wait_healthy(emulator_url, 30)
    os.environ["FUSION_EMULATOR_URL"] = emulator_url
    _prepare_local_models(config)

    import ray
    from ray import serve

    from serve_app.app import AppArgs, build_app

    try:
        ctx = ray.init(num_cpus=num_cpus, include_dashboard=None, logging_level=logging.WARNING)
        serve.start(http_options={"host": config.server.host, "port": config.server.port})
        serve.run(
            build_app(
                AppArgs(config_path=str(config_path) if config_path else None, emulator_url=emulator_url)
            ),
            name="fusion",
            route_prefix="/",
        )
        base = f"http://{config.server.host}:{config.server.port}"
        typer.echo(f'Fusion Router is serving on {base}/v1 (OpenAI-compatible; try model "auto").')
        typer.echo(f"Ray dashboard: {ctx.dashboard_url or 'not available'}. Ctrl-C stops.")
        stop = False

        def _stop(*_: object) -> None:
            nonlocal stop
            stop = True

        signal.signal(signal.SIGTERM, _stop)
        while not stop:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        typer.echo("shutting down")
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
            if emulator_proc is not None:
                emulator_proc.terminate()
                emulator_proc.wait(timeout=10)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
