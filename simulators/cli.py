"""`sitewatt-sim`: run simulated sites and poke at them.

Each command is a function registered on `app`; add a command by writing another
`@app.command()` function here (or in its own module, imported at the bottom).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.live import Live

from protocols.clock import parse_time
from simulators.control import ControlServer, request
from simulators.errors import SimulatorError
from simulators.host import SimHost
from simulators.launch import build_site_host
from simulators.modbus.faults import FaultKind
from simulators.scenario import load_site_scenario
from simulators.summary import endpoints_table, site_table

app = typer.Typer(
    name="sitewatt-sim",
    help="Simulated telecom-site equipment behind real Modbus servers.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
DEFAULT_SITE = Path("config/sim-site.toml")


def _fail(exc: Exception) -> typer.Exit:
    console.print(f"[red]error:[/red] {exc}")
    return typer.Exit(code=2)


async def _run_until_signal(
    host: SimHost, control: ControlServer | None, *, live: bool, duration_s: float | None
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await host.start()
    if control is not None:
        await control.start()
    try:
        console.print(endpoints_table(host))
        if control is not None:
            console.print(
                f"control: {control.bind}:{control.port} (sitewatt-sim fault --control …)"
            )
        end = None if duration_s is None else host.clock.now() + duration_s
        ctx = Live(site_table(host), console=console, refresh_per_second=2) if live else None
        with ctx if ctx is not None else contextlib.nullcontext():
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=1.0)
                if ctx is not None:
                    ctx.update(site_table(host))
                else:
                    console.print(site_table(host))
                if end is not None and host.clock.now() >= end:
                    break
    finally:
        if control is not None:
            await control.stop()
        await host.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        console.print("stopped")


@app.command()
def site(
    config: Annotated[
        Path, typer.Option("--config", "-c", help="site scenario TOML")
    ] = DEFAULT_SITE,
    speed: Annotated[float | None, typer.Option(help="simulated seconds per wall second")] = None,
    start: Annotated[str | None, typer.Option(help="simulated start, ISO-8601 or 'now'")] = None,
    port_base: Annotated[int | None, typer.Option(help="first port (0: free ports)")] = None,
    host: Annotated[str | None, typer.Option(help="listen address")] = None,
    control_port: Annotated[
        int | None, typer.Option(help="control endpoint port (0: free)")
    ] = None,
    no_control: Annotated[bool, typer.Option(help="do not open the control endpoint")] = False,
    duration_h: Annotated[
        float | None, typer.Option(help="stop after this many simulated hours")
    ] = None,
    live: Annotated[bool, typer.Option(help="live summary (--no-live: print each second)")] = True,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run one site's devices (rectifier, battery, aircon, breaker, meter) over Modbus TCP."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING)
    try:
        scenario = load_site_scenario(config)
        t0 = None if start in (None, "now") else parse_time(start)
        sim_host = build_site_host(scenario, start=t0, speed=speed, host=host, port_base=port_base)
    except (SimulatorError, ValueError) as exc:
        raise _fail(exc) from None
    cport = scenario.sim.control_port if control_port is None else control_port
    control = None if no_control or cport is None else ControlServer(sim_host, port=cport)
    try:
        asyncio.run(
            _run_until_signal(
                sim_host,
                control,
                live=live,
                duration_s=None if duration_h is None else duration_h * 3600,
            )
        )
    except OSError as exc:
        raise _fail(exc) from None


@app.command()
def fault(
    device: Annotated[str, typer.Option("--device", "-d", help="device (kind, or site/kind)")],
    kind: Annotated[FaultKind, typer.Option("--kind", "-k")],
    control: Annotated[str, typer.Option(help="control endpoint HOST:PORT")] = "127.0.0.1:15019",
    for_s: Annotated[float, typer.Option("--for", help="wall-clock seconds")] = 30.0,
    latency_ms: Annotated[float, typer.Option(help="for --kind latency")] = 500.0,
    code: Annotated[int, typer.Option(help="exception code for --kind exception")] = 4,
) -> None:
    """Inject a fault into a running simulator's device."""
    try:
        answer = request(
            control,
            {
                "op": "fault",
                "device": device,
                "kind": kind.value,
                "for_s": for_s,
                "latency_ms": latency_ms,
                "code": code,
            },
        )
    except SimulatorError as exc:
        raise _fail(exc) from None
    if not answer.get("ok"):
        raise _fail(SimulatorError(answer.get("error", "failed")))
    console.print(f"{answer['device']}: {answer['fault']} for {for_s:g} s")


@app.command()
def status(
    control: Annotated[str, typer.Option(help="control endpoint HOST:PORT")] = "127.0.0.1:15019",
) -> None:
    """Print a running simulator's status as JSON."""
    try:
        answer = request(control, {"op": "status"})
    except SimulatorError as exc:
        raise _fail(exc) from None
    console.print_json(json.dumps(answer))


@app.command()
def compare(
    scenario: Annotated[Path, typer.Option(help="scenario TOML (fleet or site)")],
    policy: Annotated[list[Path], typer.Option(help="policy TOML to compare (repeat the option)")],
    baseline: Annotated[
        bool, typer.Option(help="also run a no-action twin and measure savings against it")
    ] = True,
    days: Annotated[float, typer.Option(help="simulated days")] = 1.0,
    out: Annotated[
        Path | None, typer.Option(help="write compare.csv and compare.json here")
    ] = None,
    start: Annotated[str | None, typer.Option(help="simulated start, ISO-8601")] = None,
    interval_s: Annotated[float, typer.Option(help="control interval (simulated s)")] = 60.0,
    step_s: Annotated[
        float | None, typer.Option(help="physics step (default: the scenario's)")
    ] = None,
) -> None:
    """Compare control policies offline: the shared planners drive the site physics directly,
    no network (see simulators/offline.py and docs/control.md)."""
    # Imported here: the offline runner (and the planners) are only needed by this command.
    import time

    from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

    from protocols.errors import ProtocolError
    from simulators import offline
    from simulators.scenario import load_scenario

    try:
        sc = load_scenario(scenario)
        policies = [offline.load_compare_policy(p) for p in policy]
        t0 = parse_time(start) if start is not None else offline.default_start(sc, time.time())
    except (SimulatorError, ValueError) as exc:
        raise _fail(exc) from None
    tasks: dict[str, TaskID] = {}
    columns = (TextColumn("{task.description:<24}"), BarColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:

        def tick(name: str, done: float) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(name, total=1.0)
            bar.update(tasks[name], completed=done)

        try:
            result = offline.run_compare(
                sc,
                policies,
                start=t0,
                days=days,
                baseline=baseline,
                interval_s=interval_s,
                step_s=step_s,
                scenario_name=str(scenario),
                progress=tick,
            )
        except (SimulatorError, ProtocolError) as exc:
            raise _fail(exc) from None
    for r in result.policies:
        console.print(offline.policy_table(r, result))
    console.print(offline.summary_table(result))
    violations = sum(r.total.reserve_violations for r in result.policies)
    if violations:
        console.print(f"[red]{violations} reserve violation(s): see the tables[/red]")
    if out is not None:
        csv_path, json_path = offline.write_outputs(result, out)
        console.print(f"wrote {csv_path} and {json_path}")


from simulators import cli_fleet  # noqa: E402, F401  (registers fleet, demo, scenario, fleet-host)

if __name__ == "__main__":
    app()
