"""`sitewatt-aggregator`: serve, and manage sites, keys, tokens and the broker's config.

Every command reads the same TOML config (`--config`, default config/aggregator.toml); `sites`
and `keys` also take `--db`/`--key-file` to point elsewhere. Errors print one line and exit 2
(bad input or config) or 1 (the request could not be done).
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from aggregator.broker_config import AGGREGATOR_USER, write_broker_config
from aggregator.cli_control import register as register_control
from aggregator.cli_tokens import tokens_app
from aggregator.config import AggregatorConfig, load_config
from aggregator.errors import AggregatorError, ConfigError, SiteError
from aggregator.identity import init_key, show_key
from aggregator.sites import SiteRegistry
from aggregator.storage import Storage, open_configured, open_database
from protocols.clock import DEFAULT_TZ, SystemClock

app = typer.Typer(help="sitewatt aggregator: ingest, API, sites and keys.", no_args_is_help=True)
sites_app = typer.Typer(help="Enrol, list, rotate and revoke sites' keys.", no_args_is_help=True)
keys_app = typer.Typer(help="The aggregator's own signing key.", no_args_is_help=True)
app.add_typer(sites_app, name="sites")
app.add_typer(keys_app, name="keys")
app.add_typer(tokens_app, name="tokens")
register_control(app)  # report, dr, policy (aggregator.cli_control)

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

DEFAULT_CONFIG = Path("config/aggregator.toml")
ConfigOpt = Annotated[
    Path, typer.Option("--config", "-c", help="aggregator config (TOML)", show_default=True)
]
DbOpt = Annotated[Path | None, typer.Option("--db", help="database file (overrides database.path)")]


def _config(path: Path, *, required: bool = False) -> AggregatorConfig:
    """The config at `path`; defaults if the default path does not exist (and not required)."""
    if not path.exists() and path == DEFAULT_CONFIG and not required:
        return AggregatorConfig()
    return load_config(path)


@contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except ConfigError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    except SiteError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    except AggregatorError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None


@contextmanager
def _registry(config: Path, db: Path | None) -> Iterator[SiteRegistry]:
    with _errors():
        storage: Storage = (
            open_database(path=db) if db is not None else open_configured(_config(config).database)
        )
        try:
            yield SiteRegistry(storage, SystemClock())
        finally:
            storage.close()


def _when(ms: int | None) -> str:
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


# ---- serve --------------------------------------------------------------------------------


@app.command()
def serve(
    config: ConfigOpt = DEFAULT_CONFIG,
    log_level: Annotated[
        str | None, typer.Option("--log-level", help="debug, info, warning, error")
    ] = None,
    no_http: Annotated[bool, typer.Option("--no-http", help="ingest only, no HTTP API")] = False,
    worker: Annotated[
        str | None,
        typer.Option(
            "--worker",
            help="run as an extra ingest worker NAME of broker.share_group (client id + "
            "'-NAME'; no control loop: the worker started without --worker runs it)",
        ),
    ] = None,
) -> None:
    """Run ingest and the HTTP API until SIGTERM/SIGINT."""
    from aggregator.service import run, tune_gc

    with _errors():
        cfg = _config(config, required=True)
        if worker is not None:
            cfg = cfg.for_worker(worker)
        logging.basicConfig(
            level=(log_level or cfg.log_level).upper(),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        tune_gc()
        asyncio.run(run(cfg, http=not no_http, control=worker is None, clock=cfg.clock.build()))


# ---- sites --------------------------------------------------------------------------------


@sites_app.command("add")
def sites_add(
    site: Annotated[str, typer.Argument(help="site id (A-Z a-z 0-9 . _ -)")],
    public_key: Annotated[
        str, typer.Option("--public-key", help="the site's Ed25519 public key, 64 hex digits")
    ],
    name: Annotated[str, typer.Option(help="display name")] = "",
    region: Annotated[str, typer.Option(help="grid region (emission factors, reports)")] = "",
    tz: Annotated[str, typer.Option(help="IANA time zone of the site")] = DEFAULT_TZ,
    tariff: Annotated[str, typer.Option(help="tariff name")] = "",
    config: ConfigOpt = DEFAULT_CONFIG,
    db: DbOpt = None,
) -> None:
    """Enrol a site with its public key."""
    with _registry(config, db) as reg, _errors():
        info, key = reg.enrol(site, public_key, name=name, region=region, tz=tz, tariff=tariff)
    out.print(f"enrolled {info.site} with key {key.kid}")


@sites_app.command("import")
def sites_import(
    file: Annotated[
        Path,
        typer.Argument(help="CSV (header: site,public_key[,name,region,tz,tariff]) or JSON list"),
    ],
    config: ConfigOpt = DEFAULT_CONFIG,
    db: DbOpt = None,
) -> None:
    """Enrol many sites at once (a fleet roll-out, the fleet simulator)."""
    with _errors():
        rows = read_site_rows(file)
    with _registry(config, db) as reg, _errors():
        for row in rows:
            reg.enrol(
                row["site"],
                row["public_key"],
                name=row.get("name", ""),
                region=row.get("region", ""),
                tz=row.get("tz") or DEFAULT_TZ,
                tariff=row.get("tariff", ""),
            )
    out.print(f"enrolled {len(rows)} site(s) from {file}")


def read_site_rows(file: Path) -> list[dict[str, str]]:
    """Rows of a `sites import` file; ConfigError names the file and the row at fault."""
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read: {exc.strerror or exc}") from exc
    if file.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"{file}: not valid JSON: {exc}") from exc
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise ConfigError(f"{file}: a JSON list of objects is needed")
        rows = [{str(k): str(v) for k, v in r.items()} for r in data]
    else:
        rows = [dict(r) for r in csv.DictReader(io.StringIO(text))]
    for i, row in enumerate(rows, start=1):
        missing = [k for k in ("site", "public_key") if not row.get(k)]
        if missing:
            raise ConfigError(f"{file}: row {i}: missing {', '.join(missing)}")
    return rows


@sites_app.command("list")
def sites_list(config: ConfigOpt = DEFAULT_CONFIG, db: DbOpt = None) -> None:
    """Sites with their keys and presence."""
    with _registry(config, db) as reg, _errors():
        views = reg.list()
    table = Table("site", "name", "region", "tz", "tariff", "online", "last seen", "keys")
    for v in views:
        keys = ", ".join(
            k.kid + ("" if k.active else f" (revoked {_when(k.revoked_ms)})") for k in v.keys
        )
        table.add_row(
            v.info.site,
            v.info.name,
            v.info.region,
            v.info.tz,
            v.info.tariff,
            "yes" if v.state.online else "no",
            _when(v.state.last_seen_ms),
            keys,
        )
    out.print(table)


@sites_app.command("rotate")
def sites_rotate(
    site: str,
    public_key: Annotated[str, typer.Option("--public-key", help="the new key, 64 hex digits")],
    config: ConfigOpt = DEFAULT_CONFIG,
    db: DbOpt = None,
) -> None:
    """Add a new key to a site; the old one stays valid until revoked."""
    with _registry(config, db) as reg, _errors():
        key = reg.add_key(site, public_key)
    out.print(f"added key {key.kid} to {site}; revoke the old one when the agent uses the new one")


@sites_app.command("revoke")
def sites_revoke(
    site: str,
    kid: Annotated[str | None, typer.Option("--kid", help="the key to revoke (16 hex)")] = None,
    all_keys: Annotated[bool, typer.Option("--all", help="revoke every key of the site")] = False,
    config: ConfigOpt = DEFAULT_CONFIG,
    db: DbOpt = None,
) -> None:
    """Revoke one key of a site (or all of them)."""
    if (kid is None) == (not all_keys):
        err.print("[red]error:[/red] give exactly one of --kid KID or --all")
        raise typer.Exit(2)
    with _registry(config, db) as reg, _errors():
        keys = reg.revoke_all(site) if all_keys else [reg.revoke(site, kid or "")]
    for key in keys:
        out.print(f"revoked {key.kid} of {site}")


# ---- keys ---------------------------------------------------------------------------------

KeyFileOpt = Annotated[
    Path | None, typer.Option("--key-file", help="key file (overrides keys.key_file)")
]


@keys_app.command("init")
def keys_init(
    config: ConfigOpt = DEFAULT_CONFIG,
    key_file: KeyFileOpt = None,
    force: Annotated[bool, typer.Option("--force", help="replace an existing key")] = False,
) -> None:
    """Create the aggregator's signing key (mode 0600) and print it for pinning in agents."""
    with _errors():
        path = key_file if key_file is not None else _config(config).keys.key_file
        ident = init_key(path, overwrite=force)
    out.print(f"key file:   {ident.path}")
    out.print(f"public key: {ident.public_key}")
    out.print(f"kid:        {ident.kid}")
    out.print("pin the public key in every agent's config (aggregator_keys)")


@keys_app.command("show")
def keys_show(config: ConfigOpt = DEFAULT_CONFIG, key_file: KeyFileOpt = None) -> None:
    """Print the aggregator's public key and kid."""
    with _errors():
        path = key_file if key_file is not None else _config(config).keys.key_file
        ident = show_key(path)
    out.print(f"public key: {ident.public_key}")
    out.print(f"kid:        {ident.kid}")


# ---- broker-config --------------------------------------------------------------------------


@app.command("broker-config")
def broker_config(
    out_dir: Annotated[Path, typer.Option("--out", help="directory to write into")],
    site: Annotated[
        list[str] | None, typer.Option("--site", help="a site to create credentials for")
    ] = None,
    sites_from_db: Annotated[
        bool, typer.Option("--sites-from-db", help="every site enrolled in the database")
    ] = False,
    tls_generate: Annotated[
        bool, typer.Option("--tls-generate", help="generate a lab CA and server certificate")
    ] = False,
    tls_port: Annotated[int, typer.Option(help="TLS listener port (0: none)")] = 8883,
    hostname: Annotated[
        list[str] | None, typer.Option("--hostname", help="names for the server certificate")
    ] = None,
    plain_loopback_port: Annotated[
        int | None, typer.Option("--plain-loopback-port", help="plain listener on 127.0.0.1")
    ] = None,
    run_as: Annotated[
        str | None, typer.Option("--run-as", help="the user mosquitto runs as (`user` line)")
    ] = None,
    config: ConfigOpt = DEFAULT_CONFIG,
    db: DbOpt = None,
) -> None:
    """Write mosquitto's config, password file and ACL (and lab TLS files)."""
    with _errors():
        cfg = _config(config)
        sites = list(site or [])
        if sites_from_db:
            storage = open_configured(cfg.database, path=db)
            try:
                sites += [s.site for s in storage.list_sites()]
            finally:
                storage.close()
        files = write_broker_config(
            out_dir,
            sites=sites,
            prefix=cfg.broker.prefix,
            aggregator_user=cfg.broker.username or AGGREGATOR_USER,
            tls_port=tls_port or None,
            tls_generate=tls_generate,
            hostnames=tuple(hostname or ("localhost", "127.0.0.1")),
            plain_port=plain_loopback_port,
            run_as=run_as,
        )
    out.print(f"wrote {files.conf}, {files.passwd}, {files.acl}")
    out.print(f"credentials ({len(files.credentials)} users) in {files.out / 'credentials'}")
    if files.ca_file is not None:
        out.print(f"CA for clients: {files.ca_file}")
    user = cfg.broker.username or AGGREGATOR_USER
    out.print(
        f"aggregator: set broker.username = {user!r} and broker.password_file = "
        f"{str(files.credentials[user])!r}; run: mosquitto -c {files.conf}"
    )


def main() -> None:  # pragma: no cover - console entry point
    app()


__all__ = ["app", "main"]
