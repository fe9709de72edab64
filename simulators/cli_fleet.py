"""`sitewatt-sim fleet | demo | scenario | fleet-host`: whole fleets with real agents and the
real aggregator, each in its own processes (see `simulators.fleet`).

Registered on `simulators.cli.app` (imported at the bottom of that module).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import logging
import os
import resource
import signal
import subprocess
import sys
import webbrowser
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from protocols.clock import local_time
from simulators.cli import app, console
from simulators.errors import SimulatorError
from simulators.fleet import (
    DEFAULT_HTTP_PORT,
    DEFAULT_SCENARIO,
    FleetFigures,
    FleetOptions,
    FleetRunner,
    console_script,
    default_demo_start,
)
from simulators.fleet_figures import figures_dict, summary_lines
from simulators.fleet_run import Inject, load_run, parse_inject_option

BrokerOpt = Annotated[
    str, typer.Option(help="auto (mosquitto if installed), mosquitto, embedded, or HOST:PORT")
]
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
WorkdirOpt = Annotated[
    Path | None, typer.Option(help="where configs, keys, databases and logs go (default: temp)")
]


def _lift_fd_limit() -> None:
    """Hundreds of sites hold thousands of sockets and files; children inherit the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _injects(values: list[str] | None) -> tuple[Inject, ...]:
    return tuple(parse_inject_option(v) for v in values or ())


def fleet_view(runner: FleetRunner, f: FleetFigures, *, token: str | None = None) -> Group:
    plan = runner.plan
    n = 0 if plan is None else len(plan.sites)
    speed = 0.0 if plan is None else plan.speed
    when = local_time(f.sim_time).strftime("%a %Y-%m-%d %H:%M") if f.sim_time else "—"
    head = Text.assemble(
        ("sitewatt fleet  ", "bold"),
        f"{n} sites at {speed:g}x · simulated {when} · dashboard {runner.dashboard_url}",
    )
    t = Table(show_header=False, pad_edge=False, box=None)
    t.add_column(style="cyan", no_wrap=True)
    t.add_column()
    online_style = "green" if f.online == n and n else "yellow"
    t.add_row("sites online", Text(f"{f.online} / {n}", style=online_style))
    t.add_row("readings stored", f"{f.readings_stored:,} ({f.readings_per_s:,.0f}/s)")
    t.add_row("telecom load", f"{f.load_kw:,.1f} kW")
    t.add_row("grid import", f"{f.grid_kw:,.1f} kW")
    t.add_row("battery SOC (mean)", "—" if f.soc_avg is None else f"{f.soc_avg:.1f} %")
    t.add_row("modes", ", ".join(f"{k} {v}" for k, v in sorted(f.modes.items())) or "—")
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(f.alarms_by_kind.items()))
    t.add_row("active alarms", f"{f.alarms_active}" + (f" ({kinds})" if kinds else ""))
    cpu = ", ".join(f"{k} {v:.0f}%" for k, v in sorted(f.cpu_pct.items()))
    t.add_row("CPU (% of a core)", cpu or "—")
    rss = ", ".join(f"{k} {v:.0f}" for k, v in sorted(f.rss_mb.items()))
    t.add_row("memory (MB)", rss or "—")
    t.add_row("injections", f"{f.injections_done} / {f.injections_total}  {f.last_event}")
    if token:
        t.add_row("operator token", token)
    return Group(head, t, Text("Ctrl-C stops everything", style="dim"))


async def run_fleet(
    runner: FleetRunner,
    *,
    on_ready: Callable[[FleetRunner], None] = lambda _: None,
    show_token: bool = False,
    record: list[FleetFigures] | None = None,
) -> FleetFigures:
    """Prepare, start and watch the fleet until Ctrl-C/SIGTERM or the duration's end; then stop
    every process it started, whatever happened."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in STOP_SIGNALS:  # SIGHUP too: a closed terminal still stops the fleet in order
        loop.add_signal_handler(sig, stop.set)
    last = FleetFigures()
    try:
        with console.status("preparing…") as status:

            def progress(msg: str) -> None:
                status.update(msg)
                console.log(msg)

            await _or_stop(asyncio.to_thread(runner.prepare, progress), stop)
            await _or_stop(runner.start(progress), stop)
        if stop.is_set():
            return last
        on_ready(runner)
        token = runner.tokens.get("operator") if show_token else None
        if console.is_terminal:
            with Live(fleet_view(runner, last, token=token), console=console) as live:

                def show(f: FleetFigures) -> None:
                    live.update(fleet_view(runner, f, token=token))
                    if record is not None:
                        record.append(f)

                last = await runner.watch(stop, show)
        else:
            beat = [0]

            def show(f: FleetFigures) -> None:
                if record is not None:
                    record.append(f)
                beat[0] += 1
                if beat[0] % 5 == 1:
                    when = local_time(f.sim_time).strftime("%Y-%m-%d %H:%M")
                    console.print(f"[{when}] " + " | ".join(_summary(runner, f)))

            last = await runner.watch(stop, show)
        return last
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)
        console.print("stopping: agents, simulators, aggregator, broker …")
        await asyncio.to_thread(runner.shutdown)
        console.print(f"stopped; work directory {runner.workdir}")


async def _or_stop(job: Awaitable[None], stop: asyncio.Event) -> None:
    """Await `job` unless `stop` is set first (then cancel it)."""
    task = asyncio.ensure_future(job)
    waiter = asyncio.ensure_future(stop.wait())
    done, _ = await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if task not in done:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, SimulatorError):
            await task
        return
    task.result()


def _go(runner_options: FleetOptions, **kw: object) -> tuple[FleetRunner, FleetFigures]:
    _lift_fd_limit()
    logging.basicConfig(level=logging.WARNING)
    try:
        runner = FleetRunner(runner_options)
    except SimulatorError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    try:
        last = asyncio.run(run_fleet(runner, **kw))  # type: ignore[arg-type]
    except SimulatorError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    return runner, last


@app.command()
def fleet(
    sites: Annotated[int | None, typer.Option(help="number of sites (default: the scenario's)")] = (
        None
    ),
    speed: Annotated[float | None, typer.Option(help="simulated seconds per wall second")] = None,
    duration: Annotated[
        float | None, typer.Option(help="stop after this many simulated hours")
    ] = None,
    scenario: Annotated[Path, typer.Option(help="fleet scenario TOML")] = DEFAULT_SCENARIO,
    broker: BrokerOpt = "auto",
    aggregator: Annotated[
        str, typer.Option(help="'start' (the fleet's own) or the URL of a running aggregator")
    ] = "start",
    admin_token: Annotated[
        str | None, typer.Option(help="with an aggregator URL: an admin token to enrol sites")
    ] = None,
    aggregator_key: Annotated[
        str | None, typer.Option(help="with an aggregator URL: its public key (hex or file)")
    ] = None,
    workdir: WorkdirOpt = None,
    http_port: Annotated[int, typer.Option(help="aggregator HTTP port (0: free)")] = (
        DEFAULT_HTTP_PORT
    ),
    start: Annotated[str | None, typer.Option(help="simulated start (ISO-8601)")] = None,
    control: Annotated[
        bool | None, typer.Option(help="peak shaving and dormancy on (default: scenario's)")
    ] = None,
    poll_s: Annotated[float | None, typer.Option(help="agents' poll interval (sim s)")] = None,
    inject: Annotated[
        list[str] | None,
        typer.Option(help="KIND:key=value,… e.g. outage:region=mountain,after_h=1,duration_h=1"),
    ] = None,
    sites_per_process: Annotated[int, typer.Option(help="agents per agent process")] = 250,
    agent_db_dir: Annotated[
        Path | None,
        typer.Option(help="agents' SQLite files (default: tmpfs, removed at the end)"),
    ] = None,
) -> None:
    """N simulated sites with one real agent each (many per process), a broker and the
    aggregator; live fleet figures; Ctrl-C stops everything."""
    try:
        injects = _injects(inject)
    except SimulatorError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    options = FleetOptions(
        scenario=scenario,
        sites=sites,
        speed=speed,
        start=start,
        duration_h=duration,
        broker=broker,
        aggregator=aggregator,
        admin_token=admin_token,
        aggregator_key=aggregator_key,
        workdir=workdir,
        http_port=http_port,
        control=control,
        poll_s=poll_s,
        injects=injects,
        sites_per_agent_process=sites_per_process,
        agent_db_dir=agent_db_dir,
    )
    runner, last = _go(options, show_token=True, on_ready=_banner)
    for line in _summary(runner, last):
        console.print(line)


def _summary(runner: FleetRunner, f: FleetFigures) -> list[str]:
    return summary_lines(f, speed=0.0 if runner.plan is None else runner.plan.speed)


def _banner(runner: FleetRunner) -> None:
    plan = runner.plan
    assert plan is not None
    control = (
        f"the aggregator at {runner.url} (its own policies)"
        if runner.external
        else f"peak shaving and dormancy {'on' if runner.control else 'off'}"
    )
    console.print(
        f"sitewatt: {len(plan.sites)} simulated sites at {plan.speed:g}x, "
        f"broker {runner.broker_kind} on {runner.broker_addr[0]}:{runner.broker_addr[1]}, "
        + control
    )
    console.print(f"dashboard: {runner.dashboard_url}", soft_wrap=True)
    console.print(f"operator token: {runner.tokens['operator']}", soft_wrap=True)
    console.print(f"work directory: {runner.workdir}", soft_wrap=True)


@app.command()
def demo(
    sites: Annotated[int, typer.Option(help="number of sites")] = 20,
    speed: Annotated[float, typer.Option(help="simulated seconds per wall second")] = 60.0,
    broker: BrokerOpt = "auto",
    http_port: Annotated[int, typer.Option(help="HTTP port (taken: a free one)")] = (
        DEFAULT_HTTP_PORT
    ),
    workdir: WorkdirOpt = None,
    browser: Annotated[bool, typer.Option(help="open the dashboard in a browser")] = True,
    duration: Annotated[
        float | None, typer.Option(help="stop after this many simulated hours")
    ] = None,
) -> None:
    """The one-command demo (`make demo`): aggregator, broker and 20 simulated sites at 60x with
    peak shaving and dormancy on; prints the dashboard URL and an operator token."""

    def ready(runner: FleetRunner) -> None:
        _banner(runner)
        # Only where a graphical browser can open: on a bare console `webbrowser` could start a
        # text browser in the very terminal that shows the fleet.
        graphical = sys.platform == "darwin" or any(
            os.environ.get(v) for v in ("DISPLAY", "WAYLAND_DISPLAY")
        )
        if browser and graphical:
            with contextlib.suppress(webbrowser.Error):
                webbrowser.open(runner.dashboard_url)

    options = FleetOptions(
        sites=sites,
        speed=speed,
        start=default_demo_start(),
        duration_h=duration,
        broker=broker,
        workdir=workdir,
        http_port=http_port,
        control=True,
    )
    _go(options, show_token=True, on_ready=ready)


@app.command("scenario")
def scenario_cmd(
    file: Annotated[Path, typer.Argument(help="fleet scenario TOML (config/scenarios/…)")],
    out: Annotated[Path, typer.Option(help="where the report goes")],
    speed: Annotated[float | None, typer.Option(help="override the scenario's speed")] = None,
    sites: Annotated[int | None, typer.Option(help="override the number of sites")] = None,
    duration: Annotated[
        float | None, typer.Option(help="simulated hours (default: the file's [run], else 24)")
    ] = None,
    broker: BrokerOpt = "auto",
    workdir: WorkdirOpt = None,
) -> None:
    """Run a simulated fleet for a simulated period with the real agents and aggregator, then
    print and write the report."""
    try:
        run = load_run(file)
    except SimulatorError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    hours = duration if duration is not None else (run.run.duration_h or 24.0)
    options = FleetOptions(
        scenario=file,
        sites=sites,
        speed=speed,
        duration_h=hours,
        broker=broker,
        workdir=workdir,
        http_port=0,
    )
    record: list[FleetFigures] = []
    runner, last = _go(options, record=record)
    write_report(runner, last, record, out)


def write_report(
    runner: FleetRunner, last: FleetFigures, record: list[FleetFigures], out: Path
) -> None:
    """The fleet's own figures (CSV over time, summary JSON) and the aggregator's report."""
    out.mkdir(parents=True, exist_ok=True)
    plan = runner.plan
    assert plan is not None
    with open(out / "fleet-figures.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["sim_time", "online", "load_kw", "grid_kw", "soc_avg", "alarms", "readings"])
        for f in record:
            soc = "" if f.soc_avg is None else f"{f.soc_avg:.2f}"
            w.writerow([
                local_time(f.sim_time).isoformat(timespec="seconds"), f.online,
                f"{f.load_kw:.3f}", f"{f.grid_kw:.3f}", soc, f.alarms_active, f.readings_stored,
            ])  # fmt: skip
    t0 = plan.start
    t1 = record[-1].sim_time if record else plan.start
    summary = {
        "sites": len(plan.sites),
        "speed": plan.speed,
        "from": local_time(t0).isoformat(),
        "to": local_time(t1).isoformat(),
        "final": figures_dict(last),
        "timings": runner.timings,
    }
    (out / "fleet-summary.json").write_text(json.dumps(summary, indent=1))
    agg_cfg = runner.workdir / "aggregator" / "aggregator.toml"
    cmd = [
        console_script("sitewatt-aggregator"),
        "report",
        "--from",
        local_time(t0).isoformat(),
        "--to",
        local_time(t1).isoformat(),
        "--out",
        str(out),
        "--config",
        str(agg_cfg),
    ]
    has_report = (
        subprocess.run(
            [cmd[0], "report", "--help"], capture_output=True, check=False, timeout=60
        ).returncode
        == 0
    )
    if has_report:
        done = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=600)
        sys.stdout.write(done.stdout)
        if done.returncode != 0:
            console.print(f"[red]aggregator report failed:[/red] {done.stderr.strip()}")
    else:
        console.print(
            "[yellow]`sitewatt-aggregator report` is not available yet: wrote the fleet's own "
            "figures only[/yellow]"
        )
    for line in _summary(runner, last):
        console.print(line)
    console.print(f"report in {out}")


@app.command("fleet-host")
def fleet_host(
    manifest: Annotated[Path, typer.Option(help="the sites of this process (JSON)")],
    control_port: Annotated[int, typer.Option(help="control endpoint port (0: free)")] = 0,
    status_file: Annotated[Path | None, typer.Option(help="JSON status, every few s")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """One simulator process of a fleet (started by `sitewatt-sim fleet`)."""
    from simulators.fleet_host import serve

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING)
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    _lift_fd_limit()
    data = json.loads(manifest.read_text())

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(data, stop, control_port=control_port, status_file=status_file)

    asyncio.run(main())


__all__ = ["fleet_view", "run_fleet", "write_report"]
