"""`sitewatt-aggregator tokens create|list|revoke`: API bearer tokens.

Included by `aggregator.cli` with `app.add_typer(tokens_app, name="tokens")`. The token is
printed once, on stdout alone (so `TOKEN=$(sitewatt-aggregator tokens create --role viewer)`
works); the database keeps only its hash.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from aggregator.auth import generate_token, hash_token, parse_role
from aggregator.config import load_config
from aggregator.errors import AggregatorError
from aggregator.storage import Storage, open_configured, open_database
from protocols.clock import SystemClock, now_ms

tokens_app = typer.Typer(help="API bearer tokens (roles: viewer, operator, admin).")

err = Console(stderr=True)

ConfigOpt = Annotated[
    Path,
    typer.Option("--config", "-c", help="aggregator config (TOML)", show_default=True),
]
DbOpt = Annotated[
    Path | None,
    typer.Option("--db", help="database file (overrides the config's database.path)"),
]


def _open(config: Path, db: Path | None) -> Storage:
    try:
        if db is not None:
            return open_database(path=db)
        return open_configured(load_config(config).database)
    except AggregatorError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


def _when(ms: int | None) -> str:
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


@tokens_app.command("create")
def create(
    role: Annotated[str, typer.Option("--role", "-r", help="viewer, operator or admin")],
    name: Annotated[str, typer.Option("--name", "-n", help="who or what holds it")] = "",
    config: ConfigOpt = Path("config/aggregator.toml"),
    db: DbOpt = None,
) -> None:
    """Create a token and print it once."""
    try:
        parsed = parse_role(role)
    except ValueError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    storage = _open(config, db)
    try:
        token = generate_token()
        record = storage.add_token(name, parsed.value, hash_token(token), now_ms(SystemClock()))
    finally:
        storage.close()
    err.print(
        f"token {record.id} ({parsed.value}{', ' + name if name else ''}) created; "
        "it is shown only now:"
    )
    typer.echo(token)


@tokens_app.command("list")
def list_tokens(config: ConfigOpt = Path("config/aggregator.toml"), db: DbOpt = None) -> None:
    """List tokens (never the tokens themselves)."""
    storage = _open(config, db)
    try:
        records = storage.list_tokens()
    finally:
        storage.close()
    table = Table("id", "name", "role", "created", "revoked")
    for t in records:
        table.add_row(str(t.id), t.name, t.role, _when(t.created_ms), _when(t.revoked_ms))
    Console().print(table)


@tokens_app.command("revoke")
def revoke(
    token_id: Annotated[int, typer.Argument(help="the token's id (see `tokens list`)")],
    config: ConfigOpt = Path("config/aggregator.toml"),
    db: DbOpt = None,
) -> None:
    """Revoke a token: it stops working at once."""
    storage = _open(config, db)
    try:
        done = storage.revoke_token(token_id, now_ms(SystemClock()))
    finally:
        storage.close()
    if not done:
        err.print(f"[red]error:[/red] no active token {token_id}")
        raise typer.Exit(1)
    err.print(f"token {token_id} revoked")


__all__ = ["tokens_app"]
