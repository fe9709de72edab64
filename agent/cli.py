"""`sitewatt-agent`: what a field technician runs on a site gateway.

    sitewatt-agent keys init --key-file /etc/sitewatt/site.key    # once: the site's identity
    sitewatt-agent check --config /etc/sitewatt/site.toml         # before leaving the site
    sitewatt-agent scan --host 192.168.1.20 --port 502            # which unit ids answer
    sitewatt-agent run --config /etc/sitewatt/site.toml           # what systemd runs
    sitewatt-agent status --config /etc/sitewatt/site.toml        # while it runs

Exit codes: 0 all good, 1 something is wrong (a device, the broker, the aggregator), 2 the
config or key is invalid. The only module that sets up logging and signal handlers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from agent.audit import AuditLog
from agent.config import SiteConfig, load_config
from agent.errors import AgentError, ConfigError, DeviceError, LinkError
from agent.modbus_bus import ModbusBus, SerialSettings, probe_units
from agent.mqtt_link import LinkSettings, MqttLink
from agent.poller import Poller, load_device_profiles
from agent.runtime import Agent, link_settings
from protocols import envelope, messages
from protocols.clock import SystemClock
from protocols.errors import EnvelopeError, KeyFileError, MessageError, ProtocolError
from protocols.keys import (
    generate_key,
    kid_hex,
    load_private_key,
    load_public_key_hex,
    public_key_hex,
    save_private_key,
)
from protocols.profiles import Table
from protocols.topics import Topics
from protocols.types import Quality, Reading

if TYPE_CHECKING:
    from rich.console import Console

app = typer.Typer(
    help="sitewatt edge agent: poll a site's equipment, publish signed telemetry, run commands.",
    no_args_is_help=True,
    add_completion=False,
)
keys_app = typer.Typer(help="The site's Ed25519 signing key.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@cache
def _console(stderr: bool) -> Console:
    """rich is imported on first output: `run` prints nothing unless it fails to start, and
    rich's ~50 modules are ~2 MB of the gateway's memory (docs/benchmarks.md, figure 2)."""
    from rich.console import Console

    return Console(stderr=stderr)


def out() -> Console:
    return _console(False)


def err() -> Console:
    return _console(True)


ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="Site config (TOML).")]


def _load(config: Path) -> SiteConfig:
    try:
        return load_config(config)
    except ConfigError as exc:
        err().print(f"[red]config invalid[/red] {exc}")
        raise typer.Exit(2) from None


# -- keys -----------------------------------------------------------------------------------------


@keys_app.command("init")
def keys_init(
    key_file: Annotated[Path, typer.Option(help="Where to write the private key (mode 0600).")],
    force: Annotated[bool, typer.Option(help="Replace an existing key (cuts the site off).")] = (
        False
    ),
) -> None:
    """Create the site's key; print the public key and kid to enrol at the aggregator."""
    key = generate_key()
    try:
        key_file.parent.mkdir(parents=True, exist_ok=True)
        save_private_key(key, key_file, overwrite=force)
    except (KeyFileError, OSError) as exc:
        err().print(f"[red]cannot create key:[/red] {exc}")
        raise typer.Exit(2) from None
    out().print(f"key file    {key_file}")
    out().print(f"public key  {public_key_hex(key)}")
    out().print(f"kid         {kid_hex(key)}")


@keys_app.command("show")
def keys_show(
    key_file: Annotated[Path | None, typer.Option(help="The private key file.")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Or: the site config.")] = (
        None
    ),
) -> None:
    """Print the public key (hex) and kid of the site key (and the pinned aggregator keys)."""
    pinned: tuple[str, ...] = ()
    if key_file is None:
        if config is None:
            err().print("give --key-file or --config")
            raise typer.Exit(2)
        cfg = _load(config)
        key_file, pinned = cfg.site.key_file, cfg.site.pinned_keys()
    try:
        key = load_private_key(key_file)
    except KeyFileError as exc:
        err().print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    out().print(f"key file    {key_file}")
    out().print(f"public key  {public_key_hex(key)}")
    out().print(f"kid         {kid_hex(key)}")
    for h in pinned:
        out().print(f"aggregator  {h}  kid {kid_hex(load_public_key_hex(h))}")


# -- check ----------------------------------------------------------------------------------------


@dataclass
class CheckReport:
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    readings: dict[str, list[Reading]] = field(default_factory=dict)
    errors: dict[str, str | None] = field(default_factory=dict)
    broker: str = "not checked"
    aggregator: str = "not checked"


async def run_check(cfg: SiteConfig, *, broker_wait_s: float = 5.0) -> CheckReport:
    """Reach every device once, then the broker and the aggregator's retained state."""
    report = CheckReport()
    try:
        load_private_key(cfg.site.key_file)
    except KeyFileError as exc:
        report.problems.append(f"site key: {exc}")
    try:
        profiles = load_device_profiles(cfg)
    except ConfigError as exc:
        report.problems.extend(exc.problems)
        return report
    poller = Poller(cfg, profiles, lambda _: None, SystemClock())
    try:
        for dev_id in poller.devices:
            result = await poller.poll_once(dev_id, report=False)
            report.readings[dev_id] = result.readings
            report.errors[dev_id] = result.error
            if not result.answered:
                report.problems.append(f"device {dev_id}: no answer ({result.error})")
                continue
            unreadable = (Quality.COMM_ERROR, Quality.BAD_VALUE)
            bad = [r for r in result.readings if r.quality in unreadable]
            if bad:
                why = result.error or "bad value"
                report.problems.append(f"device {dev_id}: {len(bad)} point(s) unreadable ({why})")
            odd = [r.point for r in result.readings if r.quality is Quality.OUT_OF_RANGE]
            if odd:
                report.warnings.append(f"device {dev_id}: out of range: {', '.join(odd)}")
    finally:
        await poller.stop()
    await _check_broker(cfg, report, broker_wait_s)
    return report


async def _check_broker(cfg: SiteConfig, report: CheckReport, wait_s: float) -> None:
    base = link_settings(cfg)
    settings = LinkSettings(
        host=base.host,
        port=base.port,
        client_id=f"{cfg.client_id}-check",  # never take over the running agent's session
        username=base.username,
        password=base.password,
        tls=base.tls,
        ca_file=base.ca_file,
        cert_file=base.cert_file,
        key_file=base.key_file,
        keepalive_s=base.keepalive_s,
        clean_session=True,
        connect_timeout_s=wait_s,
    )
    topics = Topics(cfg.broker.topic_prefix)
    ring = envelope.Keyring(load_public_key_hex(h) for h in cfg.site.pinned_keys())
    try:
        link = MqttLink(settings)
        await link.connect()
    except (LinkError, ConfigError) as exc:
        report.broker = f"unreachable: {exc}"
        report.problems.append(f"broker {cfg.broker.host}:{cfg.broker.port}: {exc}")
        return
    report.broker = f"ok ({cfg.broker.host}:{cfg.broker.port}{', TLS' if settings.tls else ''})"
    try:
        topic = topics.aggregator_state()
        await link.subscribe([topic])
        try:
            msg = await asyncio.wait_for(link.incoming.get(), wait_s)
        except TimeoutError:
            report.aggregator = "no retained state (never seen)"
            report.problems.append("aggregator: no state on " + topic)
            return
        try:
            opened = envelope.unseal(msg.payload, msg.topic, ring)
            state = messages.decode(opened.payload)
        except (EnvelopeError, MessageError) as exc:
            report.aggregator = f"state does not verify: {exc}"
            report.problems.append(f"aggregator: state does not verify against pinned keys: {exc}")
            return
        if not isinstance(state, messages.AggregatorState):
            report.aggregator = "not an aggregator state"
            report.problems.append("aggregator: unexpected message on its state topic")
        elif state.online:
            report.aggregator = f"online (kid {opened.kid.hex()})"
        else:
            report.aggregator = "offline"
            report.problems.append("aggregator: its retained state says offline")
    finally:
        await link.disconnect()


def _fmt(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


@app.command()
def check(
    config: ConfigOpt,
    broker_wait: Annotated[float, typer.Option(help="Seconds to wait for the broker.")] = 5.0,
) -> None:
    """Validate the config, read every point of every device once, check broker and aggregator."""
    cfg = _load(config)
    report = asyncio.run(run_check(cfg, broker_wait_s=broker_wait))
    colours = {
        Quality.GOOD: "green",
        Quality.OUT_OF_RANGE: "yellow",
        Quality.SENSOR_MISSING: "yellow",
        Quality.STALE: "yellow",
    }
    from rich.table import Table as RichTable

    table = RichTable(title=f"site {cfg.site_id}: devices")
    for col in ("device", "point", "value", "unit", "quality", "error"):
        table.add_column(col)
    profiles_units = {}
    with contextlib.suppress(ConfigError):
        for dev_id, prof in load_device_profiles(cfg).items():
            profiles_units[dev_id] = {p.name: p.unit for p in prof.points}
    for dev_id, readings in report.readings.items():
        units = profiles_units.get(dev_id, {})
        error = report.errors.get(dev_id) or ""
        for r in readings:
            colour = colours.get(r.quality, "red")
            table.add_row(
                dev_id,
                r.point,
                _fmt(r.value),
                units.get(r.point, ""),
                f"[{colour}]{r.quality.label}[/{colour}]",
                error if r.quality is not Quality.GOOD else "",
            )
    out().print(table)
    out().print(f"broker      {report.broker}")
    out().print(f"aggregator  {report.aggregator}")
    for w in report.warnings:
        out().print(f"[yellow]warning[/yellow] {w}")
    for p in report.problems:
        out().print(f"[red]problem[/red] {p}")
    if report.problems:
        out().print(f"[red]{len(report.problems)} problem(s)[/red]")
        raise typer.Exit(1)
    out().print("[green]all good[/green]")


# -- scan -----------------------------------------------------------------------------------------


def _units(spec: str) -> list[int]:
    units: list[int] = []
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        units.extend(range(int(lo), int(hi or lo) + 1))
    return [u for u in units if 0 <= u <= 247]


@app.command()
def scan(
    host: Annotated[str | None, typer.Option(help="Modbus TCP host.")] = None,
    port: Annotated[int, typer.Option(help="Modbus TCP port.")] = 502,
    serial: Annotated[str | None, typer.Option(help="Serial port (RTU), e.g. /dev/ttyUSB0.")] = (
        None
    ),
    baud: Annotated[int, typer.Option(help="Serial baud rate.")] = 9600,
    parity: Annotated[str, typer.Option(help="Serial parity: N, E or O.")] = "N",
    units: Annotated[str, typer.Option(help="Unit ids to try, e.g. 1-247 or 1,2,10-20.")] = (
        "1-247"
    ),
    address: Annotated[int, typer.Option(help="Holding register to read.")] = 0,
    timeout: Annotated[float, typer.Option(help="Seconds to wait per unit.")] = 0.3,
) -> None:
    """Find which unit ids answer on a TCP endpoint or a serial line."""
    if (host is None) == (serial is None):
        err().print("give --host (Modbus TCP) or --serial (Modbus RTU)")
        raise typer.Exit(2)

    async def go() -> dict[int, str]:
        if serial is not None:
            bus = ModbusBus(f"rtu:{serial}", serial=SerialSettings(serial, baud, parity.upper()))
        else:
            bus = ModbusBus(f"tcp:{host}:{port}", host=host, port=port)
        async with bus:
            return await probe_units(
                bus, _units(units), timeout=timeout, table=Table.HOLDING, address=address
            )

    try:
        found = asyncio.run(go())
    except DeviceError as exc:
        err().print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    from rich.table import Table as RichTable

    table = RichTable(title=f"units answering on {serial or f'{host}:{port}'}")
    table.add_column("unit id")
    table.add_column("answer")
    for unit, answer in found.items():
        table.add_row(str(unit), answer)
    out().print(table)
    if not found:
        out().print("[red]no unit answered[/red]")
        raise typer.Exit(1)


# -- run ------------------------------------------------------------------------------------------


@app.command()
def run(
    config: ConfigOpt,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING, ERROR.")] = "INFO",
) -> None:
    """Run the agent until SIGTERM/SIGINT, then flush and exit cleanly."""
    logging.basicConfig(
        level=getattr(logging, log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # we log device errors ourselves
    cfg = _load(config)

    async def main() -> None:
        try:
            agent = Agent(cfg, cfg.clock.build())
        except (AgentError, ProtocolError) as exc:
            err().print(f"[red]cannot start:[/red] {exc}")
            raise typer.Exit(2) from None
        loop = asyncio.get_running_loop()
        stopping = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
        await agent.start()
        logging.getLogger("agent").info(
            "site %s running: %d device(s), broker %s:%d",
            cfg.site_id,
            len(agent.poller.devices),
            cfg.broker.host,
            cfg.broker.port,
        )
        await stopping.wait()
        logging.getLogger("agent").info("stopping")
        await agent.stop()

    asyncio.run(main())


@app.command("fleet-host")
def fleet_host(
    config: Annotated[
        list[Path] | None, typer.Option("--config", "-c", help="A site config (repeatable).")
    ] = None,
    configs: Annotated[
        Path | None, typer.Option(help="A directory: every */site.toml (or *.toml) in it.")
    ] = None,
    config_list: Annotated[
        Path | None, typer.Option(help="A file listing one site config path per line.")
    ] = None,
    status_file: Annotated[
        Path | None, typer.Option(help="Write a JSON status here every few seconds.")
    ] = None,
    start_spread: Annotated[float, typer.Option(help="Wall seconds to spread starts over.")] = (
        2.0
    ),
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING, ERROR.")] = "WARNING",
) -> None:
    """Run many sites' agents in one process and one event loop (the fleet simulator's way)."""
    import resource

    from agent.fleet_host import FleetHost, serve

    logging.basicConfig(
        level=getattr(logging, log_level.upper(), logging.WARNING),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    paths = list(config or [])
    if configs is not None:
        found = sorted(configs.glob("*/site.toml")) or sorted(configs.glob("*.toml"))
        paths.extend(found)
    if config_list is not None:
        lines = config_list.read_text(encoding="utf-8").splitlines()
        paths.extend(Path(x.strip()) for x in lines if x.strip())
    if not paths:
        err().print("no site configs: give --config, --configs or --config-list")
        raise typer.Exit(2)
    cfgs = [_load(p) for p in paths]
    # Each agent holds a few sockets and SQLite files: lift the soft descriptor limit.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    async def main() -> None:
        host = FleetHost(cfgs, start_spread_s=start_spread)
        try:
            host.build()
        except (AgentError, ProtocolError) as exc:
            err().print(f"[red]cannot start:[/red] {exc}")
            raise typer.Exit(2) from None
        loop = asyncio.get_running_loop()
        stopping = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
        await serve(host, stopping, status_file=status_file)

    asyncio.run(main())


# -- status ---------------------------------------------------------------------------------------


def _ago(ms: int | None) -> str:
    if ms is None:
        return "never"
    age = time.time() - ms / 1000
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000))
    return f"{stamp} ({age:.0f} s ago)"


@app.command()
def status(config: ConfigOpt) -> None:
    """Outbox depth and age, drops, last publish/receipt, last command — from the database."""
    from agent.outbox import read_stats  # the delivery half's reader (read-only connection)

    cfg = _load(config)
    db = cfg.outbox.path
    if not db.exists():
        err().print(f"[red]no database at {db}[/red] (has the agent run yet?)")
        raise typer.Exit(1)
    try:
        stats = read_stats(db)
    except AgentError as exc:
        err().print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    audit = AuditLog(db, read_only=True)
    try:
        last = audit.last()
        last_seq = audit.get_state("last_seq", 0)
        leases = audit.get_state("leases", [])
        chain = audit.verify()
    finally:
        audit.close()
    from rich.table import Table as RichTable

    table = RichTable(title=f"site {cfg.site_id}", show_header=False)
    table.add_column("what")
    table.add_column("value")
    table.add_row("outbox depth", f"{stats.depth} readings ({stats.batches} batches unreceipted)")
    table.add_row("oldest held", _ago(stats.oldest_t))
    table.add_row("dropped", str(stats.dropped_total))
    table.add_row("last batch seq", str(stats.last_seq))
    table.add_row("last publish", _ago(stats.last_publish_ms))
    table.add_row("last receipt", _ago(stats.last_receipt_ms))
    table.add_row("database", f"{stats.db_bytes / 1e6:.1f} MB")
    if last is None:
        table.add_row("last command", "none")
    else:
        what = f"{last.action} ({last.source}, seq {last.seq}) → {last.status}"
        if last.reason:
            what += f": {last.reason}"
        table.add_row("last command", f"{what} at {_ago(last.t)}")
    table.add_row("last accepted seq", str(last_seq))
    table.add_row("leases", ", ".join(x["key"] for x in leases) or "none")
    table.add_row("audit chain", "ok" if chain.ok else f"[red]BROKEN: {chain.problem}[/red]")
    out().print(table)


__all__ = ["app", "run_check"]
