"""``fusion keys create | list | update | revoke``, ``fusion budgets`` and ``fusion usage``: the
ledger's file, opened directly.

Run them where the ledger's SQLite file is (``ledger.path``: the head node on a cluster). A running
router picks the change up within ``auth.refresh_interval_s``; from elsewhere, use the admin
endpoints (``POST /v1/admin/keys`` and friends) with the admin key.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from pydantic import ValidationError

from serve_app.config import FusionConfig, load_config
from serve_app.keys import KeyRecord, check_models
from serve_app.ledger import Ledger
from serve_app.spend_rollup import UsageRangeError
from serve_app.usage import WIDTH_S, UsageQuery, read_usage

keys_cli = typer.Typer(no_args_is_help=True, help="Client API keys: create, list, update, revoke.")

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML config (default: $FUSION_CONFIG or the packaged one)"),
]


def open_ledger(config_path: Path | None) -> tuple[FusionConfig, Ledger]:
    config = load_config(config_path)
    return config, Ledger(config.ledger.path, config.budgets.budgets(), config.ledger.synchronous)


@keys_cli.command("create")
def create(
    team: Annotated[str, typer.Option(help="the team the key belongs to (team budgets apply)")],
    name: Annotated[str, typer.Option(help="what the key is for")],
    budget_usd: Annotated[float | None, typer.Option(help="the key's own budget, USD per period")] = None,
    period: Annotated[Literal["day", "month"] | None, typer.Option(help="the budget's period")] = None,
    rpm: Annotated[int | None, typer.Option(help="requests a minute (unset: no limit)")] = None,
    tpm: Annotated[
        int | None, typer.Option(help="tokens a minute, prompt and answer (unset: no limit)")
    ] = None,
    max_parallel: Annotated[
        int | None, typer.Option(help="requests in flight at once (unset: no limit)")
    ] = None,
    models: Annotated[str | None, typer.Option(help="comma-separated models it may use (unset: all)")] = None,
    expires: Annotated[str | None, typer.Option(help=EXPIRES_HELP + " (unset: never)")] = None,
    config_path: ConfigOption = None,
) -> None:
    """Make a key. It is printed once: only its hash is kept."""
    expires_at = None if expires is None else _until(expires, time.time())
    config, ledger = open_ledger(config_path)
    try:
        allowed = check_models(_split(models), config.models)
        key, record = ledger.keys.create(
            team, name, budget_usd, period, rpm, allowed, tpm, expires_at, max_parallel
        )
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    finally:
        ledger.close()
    typer.echo(f"key_id: {record.key_id}  team: {record.team}  name: {record.name}")
    typer.echo(f"key:    {key}")
    typer.echo("Store it now: it cannot be shown again.", err=True)


@keys_cli.command("list")
def list_keys(
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
    config_path: ConfigOption = None,
) -> None:
    """Every key's record (never the key)."""
    _, ledger = open_ledger(config_path)
    records = ledger.keys.list()
    ledger.close()
    for r in records:
        if as_json:
            typer.echo(json.dumps(r.public()))
            continue
        budget = _budget(r)
        state = "active" if r.active else "revoked " + time.strftime("%Y-%m-%d", time.gmtime(r.revoked_at))
        if r.active and r.expires_at is not None:
            state = _expiry(r)
        if r.previous_key_until is not None:
            state += time.strftime(", old key until %Y-%m-%d %H:%M UTC", time.gmtime(r.previous_key_until))
        who = f"{r.key_id}  {r.shown:9} team={r.team:12} name={r.name:16}"
        typer.echo(f"{who} budget={budget:12} {_limits(r)} {state}")


@keys_cli.command("update")
def update(
    key_id: str,
    rpm: Annotated[int | None, typer.Option(help="requests a minute")] = None,
    no_rpm: Annotated[bool, typer.Option("--no-rpm", help="remove the request limit")] = False,
    tpm: Annotated[int | None, typer.Option(help="tokens a minute")] = None,
    no_tpm: Annotated[bool, typer.Option("--no-tpm", help="remove the token limit")] = False,
    max_parallel: Annotated[int | None, typer.Option(help="requests in flight at once")] = None,
    no_max_parallel: Annotated[
        bool, typer.Option("--no-max-parallel", help="remove the limit on requests in flight")
    ] = False,
    models: Annotated[str | None, typer.Option(help="comma-separated models it may use")] = None,
    all_models: Annotated[bool, typer.Option("--all-models", help="let it use every model")] = False,
    expires: Annotated[str | None, typer.Option(help=EXPIRES_HELP + "; a past time expires it now")] = None,
    no_expiry: Annotated[bool, typer.Option("--no-expiry", help="let it never expire")] = False,
    budget_usd: Annotated[
        float | None, typer.Option(help="its own budget, USD per period (with --period)")
    ] = None,
    period: Annotated[Literal["day", "month"] | None, typer.Option(help="the budget's period")] = None,
    no_budget: Annotated[bool, typer.Option("--no-budget", help="remove its own budget")] = False,
    config_path: ConfigOption = None,
) -> None:
    """Change a key's limits (a running router applies them within auth.refresh_interval_s). A new
    budget counts what the key already spent in its period."""
    changes: dict[str, Any] = {}
    if (budget_usd is None) != (period is None) or (no_budget and budget_usd is not None):
        typer.echo("error: give --budget-usd with --period, or --no-budget", err=True)
        raise typer.Exit(2)
    if budget_usd is not None or no_budget:
        changes.update(budget_usd=budget_usd, period=period)
    expires_at = None if expires is None else _until(expires, time.time())
    pairs = {
        "rpm": (rpm, no_rpm),
        "tpm": (tpm, no_tpm),
        "max_parallel_requests": (max_parallel, no_max_parallel),
        "models": (_split(models), all_models),
        "expires_at": (expires_at, no_expiry),
    }
    for field, (value, remove) in pairs.items():
        if value is not None and remove:
            typer.echo(f"error: {field}: give a value or remove it, not both", err=True)
            raise typer.Exit(2)
        if value is not None or remove:
            changes[field] = value
    if not changes:
        typer.echo(
            "error: nothing to change: --rpm/--no-rpm, --tpm/--no-tpm, --max-parallel/--no-max-parallel, "
            "--models/--all-models, "
            "--expires/--no-expiry, --budget-usd with --period/--no-budget",
            err=True,
        )
        raise typer.Exit(2)
    config, ledger = open_ledger(config_path)
    try:
        if "models" in changes:
            changes["models"] = check_models(changes["models"], config.models)
        record = ledger.keys.update(key_id, changes)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    finally:
        ledger.close()
    if record is None:
        typer.echo(f"error: no key with id {key_id}", err=True)
        raise typer.Exit(1)
    expiry = "" if record.expires_at is None else " " + _expiry(record)
    typer.echo(
        f"{record.key_id} ({record.team}/{record.name}): budget={_budget(record)} {_limits(record)}{expiry}"
    )


EXPIRES_HELP = "when it stops working: 30d, 12h or 90m from now, an ISO date or time (UTC), or Unix seconds"


def _span_s(text: str) -> int | None:
    """The seconds in a span such as ``30d``, ``12h`` or ``90m``; None when ``text`` is not one."""
    units = {"d": 86_400, "h": 3600, "m": 60}
    if text[-1:] in units and text[:-1].isdigit():
        return int(text[:-1]) * units[text[-1]]
    return None


def _until(text: str, now: float) -> float:
    """``keys --expires``: a span from now (``30d``) or a moment (``_moment``)."""
    span = _span_s(text)
    return now + span if span is not None else float(_moment(text))


def _expiry(r: KeyRecord) -> str:
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(r.expires_at))
    return ("expired " if r.expired(time.time()) else "active, expires ") + when


def _budget(r: KeyRecord) -> str:
    return f"${r.budget_usd:g}/{r.period}" if r.budget_usd is not None else "-"


def _split(models: str | None) -> list[str] | None:
    return None if models is None else [m.strip() for m in models.split(",") if m.strip()]


def _limits(r: KeyRecord) -> str:
    rpm = "-" if r.rpm is None else str(r.rpm)
    tpm = "-" if r.tpm is None else str(r.tpm)
    parallel = "-" if r.max_parallel_requests is None else str(r.max_parallel_requests)
    models = "all" if r.models is None else ",".join(r.models)
    return f"rpm={rpm:7} tpm={tpm:9} parallel={parallel:5} models={models}"


@keys_cli.command("rotate")
def rotate(
    key_id: str,
    grace: Annotated[str, typer.Option(help="how long the old key keeps working: 0, 90m, 12h or 7d")] = "0",
    config_path: ConfigOption = None,
) -> None:
    """Give a key a new secret; its id, limits, budget and spend stay. Printed once."""
    grace_s = 0 if grace == "0" else _span_s(grace)
    if grace_s is None:
        typer.echo("error: --grace: give 0, 90m, 12h or 7d", err=True)
        raise typer.Exit(2)
    _, ledger = open_ledger(config_path)
    try:
        rotated = ledger.keys.rotate(key_id, grace_s)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    finally:
        ledger.close()
    if rotated is None:
        typer.echo(f"error: no key with id {key_id}", err=True)
        raise typer.Exit(1)
    key, record = rotated
    ends = time.strftime("at %Y-%m-%d %H:%M UTC", time.gmtime(time.time() + grace_s)) if grace_s else "now"
    typer.echo(f"key_id: {record.key_id}  team: {record.team}  name: {record.name}")
    typer.echo(f"key:    {key}")
    typer.echo(f"The old key stops working {ends}. Store the new one now.", err=True)


@keys_cli.command("revoke")
def revoke(key_id: str, config_path: ConfigOption = None) -> None:
    """Revoke a key by its id (requests with it get 401 within auth.refresh_interval_s)."""
    _, ledger = open_ledger(config_path)
    record = ledger.keys.revoke(key_id)
    ledger.close()
    if record is None:
        typer.echo(f"error: no key with id {key_id}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {record.key_id} ({record.team}/{record.name})")


def budgets(config_path: ConfigOption = None) -> None:
    """Each budget: its period's spend, what is held for requests in flight, and what is left."""
    _, ledger = open_ledger(config_path)
    rows = ledger.status()
    ledger.close()
    if not rows:
        typer.echo("no budgets configured")
    for row in rows:
        typer.echo(
            f"{row['scope']:24} {row['period']:5} limit=${row['limit_usd']:.4f} "
            f"spent=${row['spent_usd']:.4f} held=${row['reserved_usd']:.4f} left=${row['remaining_usd']:.4f}"
        )


def _when(text: str, now: float) -> int:
    """``usage --since/--until``: a span ago (``7d``) or a moment (``_moment``)."""
    span = _span_s(text)
    return int(now) - span if span is not None else _moment(text)


def _moment(text: str) -> int:
    """Unix seconds from Unix seconds, or an ISO date or time (UTC unless it names its zone)."""
    if text.isascii() and text.isdigit():
        return int(text)
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r}: give 7d, 12h, 30m, an ISO date or Unix seconds") from None
    return int((parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)).timestamp())


def usage(
    since: Annotated[
        str, typer.Option(help="start: 7d, 12h, 30m ago, an ISO date (UTC) or Unix seconds")
    ] = "7d",
    until: Annotated[str | None, typer.Option(help="end, exclusive (default: now)")] = None,
    bucket: Annotated[Literal["1m", "1h", "1d"], typer.Option(help="bucket width")] = "1d",
    group_by: Annotated[
        str | None, typer.Option(help="comma-separated: model, provider, team, key_id, task_type, policy")
    ] = None,
    models: Annotated[str | None, typer.Option(help="only these models (comma-separated)")] = None,
    teams: Annotated[str | None, typer.Option(help="only these teams (comma-separated)")] = None,
    key_ids: Annotated[str | None, typer.Option(help="only these keys (comma-separated)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON bucket per line")] = False,
    config_path: ConfigOption = None,
) -> None:
    """Requests, tokens and cost per time bucket, from the ledger's spend (empty buckets left out).
    --since and --until are widened to whole buckets: --since 7d is the last 7 days and today."""
    config = load_config(config_path)
    now = time.time()
    width = WIDTH_S[bucket]
    start = _when(since, now)
    params: dict[str, Any] = {"start_time": start - start % width, "bucket_width": bucket}
    if until is not None:
        end = _when(until, now)
        params["end_time"] = end + (-end) % width
    for name, value in (("group_by", group_by), ("models", models), ("teams", teams), ("key_ids", key_ids)):
        if value is not None:
            params[name] = _split(value)
    try:
        query = UsageQuery.model_validate(params)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        typer.echo(f"error: {where + ': ' if where else ''}{first['msg']}", err=True)
        raise typer.Exit(2) from None
    if not Path(config.ledger.path).expanduser().exists():
        typer.echo(f"error: no ledger file at {config.ledger.path}", err=True)
        raise typer.Exit(1)
    while True:
        try:
            page = read_usage(config.ledger.path, query, now)
        except UsageRangeError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        for b in page["data"]:
            if not b["results"]:
                continue
            if as_json:
                typer.echo(json.dumps(b))
                continue
            day = time.strftime(
                "%Y-%m-%d %H:%M" if bucket != "1d" else "%Y-%m-%d", time.gmtime(b["start_time"])
            )
            for r in b["results"]:
                groups = " ".join(f"{g}={'-' if r[g] is None else r[g]}" for g in query.group_by)
                typer.echo(
                    f"{day}  {groups + '  ' if groups else ''}requests={r['num_model_requests']} "
                    f"input={r['input_tokens']} (cached {r['input_cached_tokens']}) "
                    f"output={r['output_tokens']} (reasoning {r['reasoning_tokens']}) "
                    f"cost=${r['cost_usd']:.6f}"
                )
        if not page["has_more"]:
            break
        query = query.model_copy(update={"page": page["next_page"]})
