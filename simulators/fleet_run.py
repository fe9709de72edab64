"""How a fleet run goes: its length, the agents' polling, and what is injected across the fleet.

A fleet scenario file (`kind = "fleet"`, see `simulators.scenario`) may carry two more sections
that only the fleet simulator reads:

    [run]
    duration_h = 24          # simulated hours, then stop (default: until Ctrl-C)
    poll_s = 60              # agents' poll interval, simulated seconds (default: from speed)
    control = true           # peak shaving and dormancy on at the aggregator
    report = true            # `scenario`: write the aggregator's report at the end

    [[inject]]               # a mains outage on every site of a region
    kind = "outage"
    region = "mountain"      # a site's region is its climate's name; omit for the whole fleet
    share = 1.0              # the part of those sites hit (drawn from `seed`)
    after_h = 2.0            # or at = "2025-07-01T14:00:00+08:00"
    duration_h = 1.0

    [[inject]]
    kind = "device_fault"    # a Modbus fault on a share of the sites' devices
    device = "battery"
    fault = "timeout"        # a simulators.modbus.faults.FaultKind
    share = 0.2
    after_h = 3.0
    duration_h = 0.5

    [[inject]]
    kind = "broker_restart"  # the broker stops and comes back (with its persistence)
    after_h = 4.0
    down_s = 5.0             # wall seconds down

`--inject KIND:key=value,…` on the command line adds more of the same. Everything here is pure:
`schedule()` turns injections into timed actions that the fleet runner carries out.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from protocols.validation import validation_problems
from simulators.errors import ScenarioError
from simulators.modbus.faults import FaultKind
from simulators.scenario import FleetScenario, Targeted, Timed, parse_scenario, targets


class _Cfg(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RunCfg(_Cfg):
    duration_h: float | None = Field(None, gt=0.0, le=24 * 366)
    poll_s: float | None = Field(None, gt=0.0, le=3600.0)
    control: bool = True
    report: bool = True


class OutageInject(Targeted):
    kind: Literal["outage"] = "outage"
    duration_h: float = Field(gt=0.0)


class DeviceFaultInject(Targeted):
    kind: Literal["device_fault"] = "device_fault"
    device: Literal["rectifier", "battery", "aircon", "breaker", "meter"]
    fault: FaultKind
    duration_h: float = Field(gt=0.0)
    latency_ms: float = Field(500.0, ge=0.0, le=60_000.0)


class BrokerRestartInject(Timed):
    kind: Literal["broker_restart"] = "broker_restart"
    down_s: float = Field(3.0, ge=0.0, le=600.0)


Inject = Annotated[
    OutageInject | DeviceFaultInject | BrokerRestartInject, Field(discriminator="kind")
]
_INJECT = TypeAdapter(Inject)


@dataclass(frozen=True)
class FleetRun:
    """A fleet scenario plus what only a fleet run needs."""

    scenario: FleetScenario
    run: RunCfg
    injects: tuple[Inject, ...]


def parse_run(data: Mapping[str, Any], *, source: str = "<memory>") -> FleetRun:
    body = dict(data)
    run_raw = body.pop("run", {})
    inject_raw = body.pop("inject", [])
    scenario = parse_scenario(body, source=source)
    if not isinstance(scenario, FleetScenario):
        raise ScenarioError(f"{source}: kind: a fleet scenario is needed here (kind = 'fleet')")
    try:
        run = RunCfg.model_validate(run_raw)
    except ValidationError as exc:
        raise ScenarioError(_format(source, "run", exc)) from None
    injects = []
    for i, raw in enumerate(inject_raw):
        try:
            injects.append(_INJECT.validate_python(raw))
        except ValidationError as exc:
            raise ScenarioError(_format(source, f"inject[{i}]", exc)) from None
    return FleetRun(scenario, run, tuple(injects))


def _format(source: str, where: str, exc: ValidationError) -> str:
    problems = validation_problems(exc, root="", within=where, drop_suffix="Inject")
    return "\n".join(f"{source}: {p}" for p in problems)


def load_run(path: str | Path) -> FleetRun:
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScenarioError(f"{p}: cannot read ({exc.strerror})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{p}: not valid TOML: {exc}") from exc
    return parse_run(data, source=str(p))


def parse_inject_option(text: str) -> Inject:
    """`KIND:key=value,key=value` (the CLI's --inject) as an injection."""
    kind, _, rest = text.partition(":")
    raw: dict[str, Any] = {"kind": kind.strip()}
    for item in filter(None, (x.strip() for x in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise ScenarioError(f"--inject {text!r}: {item!r} is not key=value")
        raw[key.strip()] = value.strip()
    try:
        return _INJECT.validate_python(raw)
    except ValidationError as exc:
        raise ScenarioError(_format("--inject", kind, exc)) from None


# -- the schedule -------------------------------------------------------------------------------


@dataclass(frozen=True)
class MainsAction:
    """Force mains off at these sites (present=False), or hand them back to their scenario."""

    t: float
    sites: tuple[str, ...]
    present: bool | None


@dataclass(frozen=True)
class FaultAction:
    t: float
    devices: tuple[str, ...]  # "site/kind"
    fault: FaultKind
    duration_s: float  # simulated seconds
    latency_ms: float


@dataclass(frozen=True)
class BrokerAction:
    t: float
    down_s: float


Action = MainsAction | FaultAction | BrokerAction


def schedule(
    injects: Iterable[Inject], sites: Sequence[tuple[str, str]], *, start: float
) -> list[Action]:
    """Every action of the injections, in time order (ties keep injection order)."""
    out: list[Action] = []
    for inj in injects:
        t = inj.when(start)
        if isinstance(inj, OutageInject):
            hit = targets(sites, region=inj.region, share=inj.share, seed=inj.seed)
            out.append(MainsAction(t, hit, False))
            out.append(MainsAction(t + inj.duration_h * 3600.0, hit, None))
        elif isinstance(inj, DeviceFaultInject):
            hit = targets(sites, region=inj.region, share=inj.share, seed=inj.seed)
            devices = tuple(f"{s}/{inj.device}" for s in hit)
            out.append(FaultAction(t, devices, inj.fault, inj.duration_h * 3600.0, inj.latency_ms))
        else:
            out.append(BrokerAction(t, inj.down_s))
    return sorted(out, key=lambda a: a.t)


__all__ = [
    "Action",
    "BrokerAction",
    "BrokerRestartInject",
    "DeviceFaultInject",
    "FaultAction",
    "FleetRun",
    "Inject",
    "MainsAction",
    "OutageInject",
    "RunCfg",
    "load_run",
    "parse_inject_option",
    "parse_run",
    "schedule",
    "targets",
]
