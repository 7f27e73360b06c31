"""``fusion keys create | list | update | revoke`` and ``fusion budgets``: the ledger's file, opened directly.

Run them where the ledger's SQLite file is (``ledger.path``: the head node on a cluster). A running
router picks the change up within ``auth.refresh_interval_s``; from elsewhere, use the admin
endpoints (``POST /v1/admin/keys`` and friends) with the admin key.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from serve_app.config import FusionConfig, load_config
from serve_app.keys import KeyRecord, check_models
from serve_app.ledger import Ledger

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
    models: Annotated[str | None, typer.Option(help="comma-separated models it may use (unset: all)")] = None,
    config_path: ConfigOption = None,
) -> None:
    """Make a key. It is printed once: only its hash is kept."""
    config, ledger = open_ledger(config_path)
    try:
        allowed = check_models(_split(models), config.models)
        key, record = ledger.keys.create(team, name, budget_usd, period, rpm, allowed, tpm)
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
        budget = f"${r.budget_usd:g}/{r.period}" if r.budget_usd is not None else "-"
        state = "active" if r.active else "revoked " + time.strftime("%Y-%m-%d", time.gmtime(r.revoked_at))
        who = f"{r.key_id}  {r.shown:9} team={r.team:12} name={r.name:16}"
        typer.echo(f"{who} budget={budget:12} {_limits(r)} {state}")


@keys_cli.command("update")
def update(
    key_id: str,
    rpm: Annotated[int | None, typer.Option(help="requests a minute")] = None,
    no_rpm: Annotated[bool, typer.Option("--no-rpm", help="remove the request limit")] = False,
    tpm: Annotated[int | None, typer.Option(help="tokens a minute")] = None,
    no_tpm: Annotated[bool, typer.Option("--no-tpm", help="remove the token limit")] = False,
    models: Annotated[str | None, typer.Option(help="comma-separated models it may use")] = None,
    all_models: Annotated[bool, typer.Option("--all-models", help="let it use every model")] = False,
    config_path: ConfigOption = None,
) -> None:
    """Change a key's limits (a running router applies them within auth.refresh_interval_s)."""
    changes: dict[str, Any] = {}
    pairs = {"rpm": (rpm, no_rpm), "tpm": (tpm, no_tpm), "models": (_split(models), all_models)}
    for field, (value, remove) in pairs.items():
        if value is not None and remove:
            typer.echo(f"error: {field}: give a value or remove it, not both", err=True)
            raise typer.Exit(2)
        if value is not None or remove:
            changes[field] = value
    if not changes:
        typer.echo(
            "error: nothing to change: --rpm/--no-rpm, --tpm/--no-tpm, --models/--all-models", err=True
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
    typer.echo(f"{record.key_id} ({record.team}/{record.name}): {_limits(record)}")


def _split(models: str | None) -> list[str] | None:
    return None if models is None else [m.strip() for m in models.split(",") if m.strip()]


def _limits(r: KeyRecord) -> str:
    rpm = "-" if r.rpm is None else str(r.rpm)
    tpm = "-" if r.tpm is None else str(r.tpm)
    return f"rpm={rpm:7} tpm={tpm:9} models={'all' if r.models is None else ','.join(r.models)}"


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
