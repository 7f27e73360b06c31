"""``fusion keys create | list | limit | revoke`` and ``fusion budgets``: the ledger's file, opened directly.

Run them where the ledger's SQLite file is (``ledger.path``: the head node on a cluster). A running
router picks the change up within ``auth.refresh_interval_s``; from elsewhere, use the admin
endpoints (``POST /v1/admin/keys`` and friends) with the admin key.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Literal

import typer

from serve_app.config import FusionConfig, load_config
from serve_app.ledger import Ledger

keys_cli = typer.Typer(no_args_is_help=True, help="Client API keys: create, list, limit, revoke.")

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
    config_path: ConfigOption = None,
) -> None:
    """Make a key. It is printed once: only its hash is kept."""
    _, ledger = open_ledger(config_path)
    try:
        key, record = ledger.keys.create(team, name, budget_usd, period, rpm)
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
        rpm = "-" if r.rpm is None else str(r.rpm)
        typer.echo(
            f"{r.key_id}  {r.shown:9} team={r.team:12} name={r.name:16} budget={budget:12} "
            f"rpm={rpm:7} {state}"
        )


@keys_cli.command("limit")
def limit(
    key_id: str,
    rpm: Annotated[int | None, typer.Option(help="requests a minute; leave out to remove the limit")] = None,
    config_path: ConfigOption = None,
) -> None:
    """Set or remove a key's rate limit (a running router applies it within auth.refresh_interval_s)."""
    _, ledger = open_ledger(config_path)
    try:
        record = ledger.keys.set_rpm(key_id, rpm)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    finally:
        ledger.close()
    if record is None:
        typer.echo(f"error: no key with id {key_id}", err=True)
        raise typer.Exit(1)
    typer.echo(f"{record.key_id} ({record.team}/{record.name}): rpm={'-' if rpm is None else rpm}")


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
