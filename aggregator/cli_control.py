"""`sitewatt-aggregator report | dr create|list|cancel | policy show`.

`register(app)` adds them to the main CLI (aggregator.cli). They read the same config as
`serve` (`--config`; `[control]` gives the policies and tariffs directories) and its database.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from aggregator.config import AggregatorConfig, load_config
from aggregator.control.context import ControlContext
from aggregator.control.events import DrStore, new_event
from aggregator.control.settings import settings_from_config
from aggregator.errors import AggregatorError, ConfigError
from aggregator.reports import build_report, write_report
from aggregator.storage import Storage, open_configured
from protocols.clock import SystemClock, now_ms, parse_time

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

DEFAULT_CONFIG = Path("config/aggregator.toml")
ConfigOpt = Annotated[
    Path, typer.Option("--config", "-c", help="aggregator config (TOML)", show_default=True)
]
DbOpt = Annotated[Path | None, typer.Option("--db", help="database file (overrides database.path)")]

dr_app = typer.Typer(help="Demand-response events: cap a fleet's or group's grid import.",
                     no_args_is_help=True)  # fmt: skip
policy_app = typer.Typer(help="Control policies per site, group and fleet.", no_args_is_help=True)


def _config(path: Path) -> AggregatorConfig:
    if not path.exists() and path == DEFAULT_CONFIG:
        return AggregatorConfig()
    return load_config(path)


@contextmanager
def _session(config: Path, db: Path | None) -> Iterator[tuple[Storage, ControlContext]]:
    """Storage and control context, with errors printed as one line (exit 2: bad input)."""
    storage: Storage | None = None
    try:
        cfg = _config(config)
        storage = open_configured(cfg.database, path=db)
        yield storage, ControlContext.load(settings_from_config(cfg), storage)
    except ConfigError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    except AggregatorError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    finally:
        if storage is not None:
            storage.close()


def _time(text: str, name: str) -> float:
    try:
        return parse_time(int(text) / 1000 if text.lstrip("-").isdigit() else text)
    except ValueError:
        raise ConfigError(f"--{name}: {text!r} is neither Unix ms nor an ISO-8601 time") from None


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def report(
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="directory for CSV, JSON, PNGs")],
    from_: Annotated[str, typer.Option("--from", help="ISO-8601 (naive = UTC) or Unix ms")],
    to: Annotated[str, typer.Option("--to", help="ISO-8601 (naive = UTC) or Unix ms")],
    site: Annotated[str | None, typer.Option("--site", help="one site")] = None,
    group: Annotated[str | None, typer.Option("--group", help="a region or named group")] = None,
    charts: Annotated[bool, typer.Option("--charts/--no-charts", help="write PNG charts")] = True,
    config: ConfigOpt = DEFAULT_CONFIG,
    db: DbOpt = None,
) -> None:
    """Energy, cost and CO2 report (CSV + JSON + PNG charts) for a site, a group or the fleet."""
    with _session(config, db) as (storage, ctx):
        if site is not None and group is not None:
            raise ConfigError("give --site or --group, not both")
        start, end = _time(from_, "from"), _time(to, "to")
        rs = build_report(storage, ctx, start, end, site=site, group=group, keep_series=charts)
        files = write_report(rs, ctx, out_dir, charts=charts)
        total = rs.total() if site is None else rs.sites[site].as_dict() if rs.sites else None
        table = Table(title=f"{rs.scope} {site or group or 'fleet'}: {_when(start)} → {_when(end)}")
        for col in ("site", "grid kWh", "cost", "baseline cost", "saved", "saved kgCO2",
                    "moved kWh", "dormant h", "violations"):  # fmt: skip
            table.add_column(col, justify="left" if col == "site" else "right")
        for name, r in sorted(rs.sites.items()):
            table.add_row(name, f"{r.grid_kwh:.2f}", f"{r.cost:.2f}", f"{r.baseline_cost:.2f}",
                          f"{r.savings_cost:.2f}", f"{r.savings_kgco2:.2f}", f"{r.moved_kwh:.2f}",
                          f"{r.dormant_hours:.1f}", str(r.reserve_violations))  # fmt: skip
        out.print(table)
        if total is not None:
            out.print(
                f"total: {total['grid_kwh']:.2f} kWh, cost {total['cost']:.2f} {total['currency']}"
                f", saved {total['savings_cost']:.2f} {total['currency']}, "
                f"{total['savings_kwh']:.2f} kWh, {total['savings_kgco2']:.2f} kgCO2 "
                f"({total['emission_factor']}), reserve violations {total['reserve_violations']}"
            )
        for site_name, problem in sorted(rs.problems.items()):
            err.print(f"[yellow]skipped {site_name}:[/yellow] {problem}")
        out.print(f"wrote {len(files)} files to {out_dir}")


@dr_app.command("create")
def dr_create(
    cap_kw: Annotated[float, typer.Option("--cap-kw", help="import cap (kW)")],
    start: Annotated[str, typer.Option("--start", help="ISO-8601 or Unix ms")],
    end: Annotated[str, typer.Option("--end", help="ISO-8601 or Unix ms")],
    group: Annotated[str | None, typer.Option("--group", help="region or named group")] = None,
    recharge_ceiling_kw: Annotated[float | None, typer.Option("--recharge-ceiling-kw")] = None,
    note: Annotated[str, typer.Option("--note")] = "",
    config: ConfigOpt = DEFAULT_CONFIG,
    db: DbOpt = None,
) -> None:
    """Cap the fleet's (or a group's) grid import at CAP from START to END."""
    with _session(config, db) as (storage, ctx):
        if group is not None and not ctx.members(group, storage.list_sites()):
            raise ConfigError(f"--group: no site is in {group!r}")
        clock = SystemClock()
        event = new_event(
            cap_w=cap_kw * 1000,
            start=_time(start, "start"),
            end=_time(end, "end"),
            group=group,
            recharge_ceiling_w=None if recharge_ceiling_kw is None else recharge_ceiling_kw * 1000,
            created_by="cli",
            created_ms=now_ms(clock),
            note=note,
        )
        DrStore(storage).add(event, now=clock.now())
        out.print(event.id)


@dr_app.command("list")
def dr_list(config: ConfigOpt = DEFAULT_CONFIG, db: DbOpt = None) -> None:
    """Demand-response events, oldest first."""
    with _session(config, db) as (storage, _):
        now = SystemClock().now()
        table = Table()
        for col in ("id", "scope", "cap kW", "start", "end", "state", "by"):
            table.add_column(col)
        for e in DrStore(storage).events():
            table.add_row(e.id, e.group or "fleet", f"{e.cap_w / 1000:g}", _when(e.start),
                          _when(e.end), e.state(now), e.created_by)  # fmt: skip
        out.print(table)


@dr_app.command("cancel")
def dr_cancel(
    event_id: Annotated[str, typer.Argument(help="the event's id")],
    config: ConfigOpt = DEFAULT_CONFIG,
    db: DbOpt = None,
) -> None:
    """Cancel an event (a running one ends now and its recharge is staggered)."""
    with _session(config, db) as (storage, _):
        e = DrStore(storage).cancel(event_id, now_ms=now_ms(SystemClock()))
        out.print(f"{e.id} {e.state(SystemClock().now())}")


@policy_app.command("show")
def policy_show(
    site: Annotated[str | None, typer.Option("--site", help="resolve one site's policy")] = None,
    config: ConfigOpt = DEFAULT_CONFIG,
    db: DbOpt = None,
) -> None:
    """The policy layers in force, or one site's resolved policy (JSON)."""
    with _session(config, db) as (storage, ctx):
        if site is None:
            table = Table()
            for col in ("scope", "source", "members"):
                table.add_column(col)
            for layer in ctx.book.layers:
                table.add_row(layer.scope, layer.source, ", ".join(layer.sites))
            out.print(table)
            return
        info = storage.get_site(site)
        layers = ", ".join(x.scope for x in ctx.book.layers_for(info)) or "defaults"
        err.print(f"site {site}: layers {layers}")
        out.print_json(ctx.book.resolve(info).model_dump_json())


def register(app: typer.Typer) -> None:
    """Add `report`, `dr` and `policy` to the main CLI."""
    app.command("report")(report)
    app.add_typer(dr_app, name="dr")
    app.add_typer(policy_app, name="policy")


__all__ = ["dr_app", "policy_app", "register", "report"]
