"""Compare control policies offline: the shared planners drive the site physics directly.

No agents, broker or aggregator: each scenario site is a `SiteModel` on a stepped clock, and
every `interval_s` of simulated time the pure planners of `protocols.control` decide for it
(`peak.plan_site`, `dormant.plan_dormant`, the valley recharge `fleet.stagger`), exactly as the
aggregator's loop would from telemetry. Their decisions are applied straight to the physics by
`AgentModel`, a deliberately small model of what the agent does with a command — *not* a copy of
agent code:

- `battery.peak_shave` / `battery.charge` / `battery.auto` set the pack's mode and power limit;
  a peak shave is refused at or below the reserve, as the agent's interlock check does;
- `site.dormant` opens the listed capacity channels (never one the site marks critical), turns
  rectifier ECO on if asked, raises the AC setpoint by the offset (inside 18..32 °C);
  `site.wake` closes them again and restores ECO and the setpoint the site had;
- after every physics step the agent's watch runs: a discharge stops (battery auto) once SOC
  reaches the reserve for the present load while mains is present, and a dormant site wakes at
  once on mains failure, room at the temperature limit, the window's end, or a coverage-load
  rise above 30 %.

The reserve both sides use is `protocols.control.reserve.reserve_soc` with the policy's
backup hours, floor and efficiency (the agent is assumed configured with the same figures).
Leases, acks, retries and command transport are not modelled: every decision lands at once.

Each policy runs on a fresh copy of every site; a no-action twin (battery in auto, breakers
closed, the site's own ECO setting) is the measured baseline. Every control interval becomes a
`protocols.control.report.Interval` (means from the physics' energy totals), so a policy's
report is `report.site_report` over them — the arithmetic the aggregator's reports use — and the
savings against the twin are measured, not estimated. Everything is a pure function of the
scenario, its seed and the policies: two runs give identical figures.
"""

from __future__ import annotations

import csv
import json
import math
import tomllib
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from rich.table import Table

from protocols.clock import local_time
from protocols.control.dormant import (
    Channel,
    ChannelRole,
    DormantDecision,
    DormantMode,
    DormantState,
    Window,
    after_decision,
    plan_dormant,
    resolve_window,
    track_low,
)
from protocols.control.economics import Battery as BatteryEconomics
from protocols.control.economics import Chemistry as EconChemistry
from protocols.control.emissions import EmissionFactor, emission_factor
from protocols.control.errors import ControlConfigError, ControlError
from protocols.control.fleet import RechargeNeed, RechargePlan, RechargeSlot, stagger
from protocols.control.peak import (
    BatteryMode as PlanMode,
)
from protocols.control.peak import (
    Decision,
    FleetDirective,
    SiteState,
    charge_limit_w,
    plan_site,
)
from protocols.control.policy import ControlPolicy, policy_from_mapping
from protocols.control.report import Interval, Report, combine, site_report
from protocols.control.reserve import reserve_soc
from protocols.control.tariff import PERIODS, Period, Segment, Tariff, load_tariffs
from simulators.errors import ScenarioError
from simulators.physics import BatteryMode, SiteModel
from simulators.physics.localtime import LocalHour
from simulators.physics.traffic import TrafficCurve, channel_powers, saving_at
from simulators.scenario import TARIFFS_DIR, FleetScenario, Scenario
from simulators.spec import LoadKind, SiteSpec

DEFAULT_INTERVAL_S = 60.0
"""Control interval: the aggregator's `[control] interval_s` default."""
RECTIFIER_EFFICIENCY = 0.95
"""For the reports' estimated baseline and the dormancy saving (as the aggregator's reports)."""
VALLEY_FILL = 0.8
"""A valley recharge stagger finishes within this share of the valley (aggregator default)."""
HOLD_W = 100.0
"""A staggered site waiting for its slot is held: "charge to the SOC you have" at a token rate
(battery auto would float-charge it at full rate and make the rebound peak the stagger avoids)."""
RENEW_S = 300.0
"""Leased commands (peak shave, charge) are renewed this often: the aggregator's default
`lease_s` × `renew_fraction`. A renewal re-applies the command, through the agent's checks."""
POWER_TOLERANCE_W, POWER_TOLERANCE_PCT = 100.0, 10.0
"""A power change below both is not a change (the aggregator's `power_tolerance_w/_pct`)."""
AC_SETPOINT_BOUNDS = (18.0, 32.0)
"""The agent's default AC setpoint bounds (agent config `interlocks.ac_setpoint_min/max_c`)."""
COVERAGE_RISE_PCT = 30.0
"""The agent's own wake threshold on a coverage-load rise (`interlocks.dormant_load_rise_pct`)."""
BASELINE = "baseline"
"""The run name of the no-action twin."""

_ROLE_OF_KIND: dict[LoadKind, ChannelRole] = {
    LoadKind.TRANSMISSION: ChannelRole.TRANSMISSION,
    LoadKind.BBU: ChannelRole.BBU,
    LoadKind.AAU_ANCHOR: ChannelRole.ANCHOR,
    LoadKind.AAU_CAPACITY: ChannelRole.CAPACITY,
    LoadKind.GATEWAY: ChannelRole.GATEWAY,
}


# -- policies ----------------------------------------------------------------------------------


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _BatteryFigures(_Frozen):
    """A policy file's `[battery]`. The pack's facts (chemistry, capacity, nominal voltage,
    SOH) come from the simulated site; the economics figures and power caps apply."""

    chemistry: str | None = None
    capacity_wh: float | None = Field(None, gt=0)
    nominal_v: float | None = Field(None, gt=0)
    soh_pct: float | None = Field(None, gt=0, le=100)
    cycle_life: float | None = Field(None, gt=0)
    rated_dod: float | None = Field(None, gt=0, le=1)
    price_per_kwh: float | None = Field(None, ge=0)
    round_trip_efficiency: float | None = Field(None, gt=0, le=1)
    max_discharge_w: float | None = Field(None, gt=0)
    max_charge_w: float | None = Field(None, gt=0)


class _ChannelEntry(_Frozen):
    number: int = Field(ge=1, le=64)
    role: ChannelRole
    critical: bool = False
    name: str = ""


class _Emissions(_Frozen):
    set: str = "china-grid"
    year: int = 2022
    region: str = "national"


class _PolicyFile(_Frozen):
    """The aggregator's policy-layer file shape (docs/control.md), read without the aggregator.
    `[scope]` is ignored: here one file is applied to every site of the scenario."""

    scope: dict[str, Any] = Field(default_factory=dict)
    enabled: bool = True
    tariff: str | None = None
    timezone: str | None = None
    peak_shaving: dict[str, Any] = Field(default_factory=dict)
    dormant: dict[str, Any] = Field(default_factory=dict)
    battery: _BatteryFigures = Field(default_factory=_BatteryFigures)
    channels: tuple[_ChannelEntry, ...] = ()
    emissions: _Emissions = Field(default_factory=_Emissions)


@dataclass(frozen=True, slots=True)
class ComparePolicy:
    """One policy to compare: the planners' policy plus what the aggregator's layers add.

    `channels` empty: the breaker's roles come from each simulated site's own channel kinds.
    """

    name: str
    source: str
    control: ControlPolicy
    enabled: bool = True
    battery: _BatteryFigures = field(default_factory=_BatteryFigures)
    channels: tuple[Channel, ...] = ()
    emissions: EmissionFactor = field(default_factory=emission_factor)


def _problems(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(x) for x in e['loc']) or '<root>'}: {e['msg']}" for e in exc.errors()
    )


def policy_from_file_mapping(
    data: Mapping[str, Any], *, name: str, source: str = "<policy>"
) -> ComparePolicy:
    """A policy file's mapping as a `ComparePolicy`; ScenarioError names the source and key."""
    try:
        f = _PolicyFile.model_validate(dict(data))
        planner: dict[str, Any] = {"peak_shaving": f.peak_shaving, "dormant": f.dormant}
        if f.tariff is not None:
            planner["tariff"] = f.tariff
        if f.timezone is not None:
            planner["timezone"] = f.timezone
        control = policy_from_mapping(planner, source=source)
        factor = emission_factor(f.emissions.set, f.emissions.year, f.emissions.region)
    except ValidationError as exc:
        raise ScenarioError(f"{source}: {_problems(exc)}") from None
    except ControlConfigError as exc:  # already names the source
        raise ScenarioError(str(exc)) from None
    except ControlError as exc:
        raise ScenarioError(f"{source}: {exc}") from None
    channels = tuple(Channel(c.number, c.role, c.critical, c.name) for c in f.channels)
    return ComparePolicy(name, source, control, f.enabled, f.battery, channels, factor)


def load_compare_policy(path: str | Path, *, name: str | None = None) -> ComparePolicy:
    """Read a policy file (the aggregator's layer format); its name defaults to the file stem."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ScenarioError(f"{p}: {exc}") from exc
    return policy_from_file_mapping(data, name=name or p.stem, source=str(p))


# -- the scenario's sites ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SitePlan:
    """A scenario site as the offline runner needs it."""

    spec: SiteSpec
    tariff: str | None
    climate: str = ""


def scenario_sites(scenario: Scenario, start: float) -> list[SitePlan]:
    """The scenario's sites with their tariffs (a fleet from its seed, or the one site)."""
    if isinstance(scenario, FleetScenario):
        return [
            SitePlan(s.spec, s.tariff, s.climate) for s in scenario.build_sites(start, port_base=0)
        ]
    return [SitePlan(scenario.site_spec(start), scenario.site.tariff)]


def default_start(scenario: Scenario, now: float) -> float:
    """The scenario's `[sim] start`; for "now", the last local midnight before `now` (a run
    then repeats only within the day: give a fixed start for figures that never change)."""
    if scenario.sim.start != "now":
        return scenario.sim.start_time(now)
    tz = scenario.fleet.tz if isinstance(scenario, FleetScenario) else scenario.site.tz
    d = local_time(now, tz)
    return d.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


def spec_channels(spec: SiteSpec) -> tuple[Channel, ...]:
    """The breaker's channels as the planners see them, from the site's channel kinds."""
    return tuple(
        Channel(i + 1, _ROLE_OF_KIND.get(c.kind, ChannelRole.AUX), c.critical, c.name)
        for i, c in enumerate(spec.breaker.channels)
    )


def hourly_capacity_load(spec: SiteSpec, before: float) -> list[float]:
    """Mean capacity-layer draw per local hour over the day before `before`: the "site history"
    a dormant window is picked from (what the aggregator reads from last week's rollups)."""
    local = LocalHour(spec.tz)
    curve = TrafficCurve(spec.traffic, seed=spec.seed, local=local)
    chans = spec.breaker.channels
    closed = [True] * len(chans)
    sums, counts = [0.0] * 24, [0] * 24
    t = before - 86400.0
    while t < before:
        hour = local.hour(t)
        saving = [saving_at(spec.traffic, hour)] * len(chans)
        powers = channel_powers(chans, closed, curve.at(t), scale=spec.traffic.scale, saving=saving)
        h = int(hour) % 24
        sums[h] += sum(p for p, c in zip(powers, chans, strict=True)
                       if c.kind is LoadKind.AAU_CAPACITY)  # fmt: skip
        counts[h] += 1
        t += 600.0
    return [s / n if n else 0.0 for s, n in zip(sums, counts, strict=True)]


# -- the agent, modelled -----------------------------------------------------------------------


class BatteryCommand(NamedTuple):
    """A battery command as the wire carries it (`protocols.messages` actions)."""

    action: str
    power_w: float = 0.0
    target_soc: float | None = None

    @classmethod
    def of(cls, d: Decision) -> BatteryCommand:
        if d.mode is PlanMode.PEAK_SHAVE:
            return cls("battery.peak_shave", d.discharge_limit_w)
        if d.mode is PlanMode.CHARGE:
            return cls("battery.charge", d.charge_limit_w, d.target_soc)
        return cls("battery.auto")

    @classmethod
    def hold(cls, soc: float) -> BatteryCommand:
        """Charge to the SOC it has at a token rate (rounded down: never a top-up)."""
        return cls("battery.charge", HOLD_W, math.floor(soc * 10) / 10)

    def differs(self, other: BatteryCommand | None) -> bool:
        """The aggregator's "only changes are sent": another action, a power off by more than
        100 W and 10 %, or a target off by a point or more."""
        if other is None or other.action != self.action:
            return True
        dp = abs(self.power_w - other.power_w)
        if dp > POWER_TOLERANCE_W and dp > POWER_TOLERANCE_PCT / 100.0 * max(other.power_w, 1.0):
            return True
        if self.target_soc is None or other.target_soc is None:
            return self.target_soc != other.target_soc
        return abs(self.target_soc - other.target_soc) >= 1.0


@dataclass
class _DormantHold:
    until: float | None
    coverage_at_entry_w: float
    channels: tuple[int, ...]
    eco_before: bool
    setpoint_before: float
    capacity_before_w: float


@dataclass
class AgentModel:
    """What the agent does with a decision, and its own watch after every physics step.

    A model of the agent's rules (DESIGN.md "Interlocks"), kept small on purpose.
    """

    model: SiteModel
    backup_hours: float
    floor_pct: float
    efficiency: float
    capacity_wh: float
    coverage: tuple[int, ...]
    capacity: tuple[int, ...]
    hold: _DormantHold | None = None
    wakes: list[tuple[float, str]] = field(default_factory=list)
    refused: Counter[str] = field(default_factory=Counter)
    reserve_stops: int = 0

    def reserve(self) -> float:
        return reserve_soc(
            self.model.dc_load_w,
            self.capacity_wh,
            backup_hours=self.backup_hours,
            floor_pct=self.floor_pct,
            efficiency=self.efficiency,
            soh_pct=max(1e-6, min(100.0, self.model.battery.soh)),
        )

    def channel_w(self, numbers: Sequence[int]) -> float:
        chans = self.model.breaker.channels
        return sum(chans[n - 1].power_w for n in numbers if 0 < n <= len(chans))

    # commands
    def battery(self, cmd: BatteryCommand) -> None:
        b = self.model.battery
        if cmd.action == "battery.peak_shave":
            if not self.model.mains or b.soc <= self.reserve():
                self.refused["battery.peak_shave"] += 1
                return
            b.mode = BatteryMode.DISCHARGE
            b.discharge_power_limit_w = cmd.power_w
        elif cmd.action == "battery.charge":
            assert cmd.target_soc is not None
            b.mode = BatteryMode.CHARGE
            b.charge_power_limit_w = cmd.power_w
            b.target_soc = cmd.target_soc
        else:
            b.mode = BatteryMode.AUTO

    def dormant(self, d: DormantDecision, now: float) -> bool:
        """Apply a dormant/awake decision; whether the site is dormant afterwards."""
        m = self.model
        if d.mode is DormantMode.AWAKE:
            if self.hold is not None:
                self.wake(now, d.code)
            return False
        if self.hold is not None:
            return True  # a renewal
        limit = m.aircon.spec.alarm_temp_c
        if not m.mains or m.aircon.room_c >= limit or (d.until is not None and d.until <= now):
            self.refused["site.dormant"] += 1
            return False
        critical = {i + 1 for i, c in enumerate(m.breaker.channels) if c.spec.critical}
        opened = tuple(n for n in d.channels if 0 < n <= len(m.breaker.channels)
                       and n not in critical)  # fmt: skip
        self.hold = _DormantHold(
            d.until,
            self.channel_w(self.coverage),
            opened,
            m.rectifier.eco_enable,
            m.aircon.setpoint_c,
            self.channel_w(self.capacity),
        )
        for n in opened:
            m.breaker.command(n - 1, False)
        if d.rectifier_eco:
            m.rectifier.eco_enable = True
        if d.ac_offset_c > 0:
            lo, hi = AC_SETPOINT_BOUNDS
            m.aircon.setpoint_c = max(lo, min(hi, m.aircon.setpoint_c + d.ac_offset_c))
        return True

    def wake(self, now: float, reason: str) -> None:
        """Back to normal: channels closed, ECO and the AC setpoint as the site had them.

        (The real agent's Wake writes ECO off; restoring the site's own setting keeps a
        comparison from charging dormancy for ECO a site runs anyway.)"""
        hold, m = self.hold, self.model
        if hold is None:
            return
        for n in hold.channels:
            m.breaker.command(n - 1, True)
        m.rectifier.eco_enable = hold.eco_before
        m.aircon.setpoint_c = hold.setpoint_before
        self.hold = None
        self.wakes.append((now, reason))

    def dormancy_saved_w(self) -> float:
        """Grid-side power dormancy removes now: the capacity channels' draw before entry less
        now, through the rectifier (ECO and AC gains not counted, as the aggregator's reports)."""
        if self.hold is None:
            return 0.0
        return max(0.0, self.hold.capacity_before_w - self.channel_w(self.capacity)) / (
            RECTIFIER_EFFICIENCY
        )

    def watch(self, now: float) -> None:
        """The agent's own rules after a physics step, whatever it was told."""
        m, b = self.model, self.model.battery
        if b.mode is BatteryMode.DISCHARGE and m.mains and b.soc <= self.reserve():
            b.mode = BatteryMode.AUTO
            self.reserve_stops += 1
        hold = self.hold
        if hold is None:
            return
        if not m.mains:
            self.wake(now, "mains_failure")
        elif m.aircon.room_c >= m.aircon.spec.alarm_temp_c:
            self.wake(now, "room_hot")
        elif hold.until is not None and now >= hold.until:
            self.wake(now, "window_end")
        elif hold.coverage_at_entry_w > 0:
            rise = 100.0 * (self.channel_w(self.coverage) / hold.coverage_at_entry_w - 1.0)
            if rise > COVERAGE_RISE_PCT:
                self.wake(now, "load_rise")


# -- one site under one policy -----------------------------------------------------------------


@dataclass
class OfflineSite:
    """A site's physics, the agent model, the planners' memory and what was recorded."""

    plan: SitePlan
    model: SiteModel
    tariff: Tariff
    policy: ComparePolicy | None  # None: the no-action twin
    channels: tuple[Channel, ...]
    window: Window
    agent: AgentModel
    mode: PlanMode = PlanMode.AUTO
    sent: BatteryCommand | None = None  # the battery command in force, as the loop knows it
    sent_at: float = -math.inf
    commands: int = 0  # battery commands sent (changes and renewals)
    dstate: DormantState = field(default_factory=DormantState)
    outages: list[float] = field(default_factory=list)
    intervals: list[Interval] = field(default_factory=list)
    codes: Counter[str] = field(default_factory=Counter)
    min_margin_discharging: float = math.inf  # SOC − reserve while discharging on mains
    min_margin_mains: float = math.inf  # SOC − reserve at any time on mains
    min_soc: float = math.inf
    peak_import_w: float = 0.0

    @property
    def site(self) -> str:
        return self.plan.spec.id

    @property
    def capacity_wh(self) -> float:
        return self.agent.capacity_wh

    def peak_state(self, now: float) -> SiteState:
        b, m = self.model.battery, self.model
        facts = self.policy.battery if self.policy is not None else _BatteryFigures()
        economics = BatteryEconomics(
            chemistry=EconChemistry(b.spec.chemistry.value),
            soh_pct=max(1e-6, min(100.0, b.soh)),
            temperature_c=b.temp_c,
            cycle_life=facts.cycle_life,
            rated_dod=facts.rated_dod,
            price_per_kwh=facts.price_per_kwh,
            round_trip_efficiency=facts.round_trip_efficiency,
        )
        v = b.voltage if b.voltage > 0 else b.nominal_v
        max_dis = b.discharge_limit_a * v
        max_ch = b.charge_limit_a * v
        if facts.max_discharge_w is not None:
            max_dis = min(max_dis, facts.max_discharge_w)
        if facts.max_charge_w is not None:
            max_ch = min(max_ch, facts.max_charge_w)
        window_s = (
            self.policy.control.peak_shaving.instability_window_h * 3600.0 if self.policy else 0
        )
        return SiteState(
            soc_pct=b.soc,
            capacity_wh=self.capacity_wh,
            load_w=m.dc_load_w,
            battery=economics,
            mains_present=m.mains,
            outages_recent=sum(1 for t in self.outages if now - t < window_s),
            max_discharge_w=max_dis,
            max_charge_w=max_ch,
            mode=self.mode,
        )

    def decide(self, now: float, slot: RechargeSlot | None) -> None:
        """One control round: both planners, then the agent applies what they say."""
        pol = self.policy
        if pol is None or not pol.enabled:
            return
        ctl = pol.control
        st = self.peak_state(now)
        directive = None
        if slot is not None:
            directive = FleetDirective(charge_not_before=slot.start, charge_limit_w=slot.charge_w)
        d = plan_site(st, ctl.peak_shaving, self.tariff, now, directive=directive)
        self.mode = d.mode
        self.codes[f"battery.{d.code}"] += 1
        held = (
            d.code == "staggered" and st.soc_pct > d.reserve_soc + ctl.peak_shaving.start_margin_pct
        )
        cmd = BatteryCommand.hold(st.soc_pct) if held else BatteryCommand.of(d)
        leased = cmd.action != "battery.auto"
        # The first round sends no default: the site is in auto already.
        first_auto = self.sent is None and not leased
        if not first_auto and (
            cmd.differs(self.sent) or (leased and now - self.sent_at >= RENEW_S)
        ):
            self.agent.battery(cmd)
            self.sent, self.sent_at = cmd, now
            self.commands += 1

        cap_w = self.agent.channel_w(self.agent.capacity)
        cov_w = self.agent.channel_w(self.agent.coverage)
        dpol = ctl.dormant
        dstate = replace(
            self.dstate,
            mains_present=self.model.mains,
            room_temp_c=self.model.aircon.room_c,
            capacity_load_w=cap_w,
            coverage_load_w=cov_w,
            low_since=track_low(self.dstate.low_since, cap_w, dpol.load_threshold_w, now),
            dormant=self.agent.hold is not None,
        )
        dd = plan_dormant(
            dstate,
            dpol,
            now,
            channels=self.channels,
            window=self.window,
            tz=self.plan.spec.tz,
        )
        self.codes[f"dormant.{dd.code}"] += 1
        dormant = self.agent.dormant(dd, now)
        applied = (
            dd if dormant or dd.mode is DormantMode.AWAKE else replace(dd, mode=DormantMode.AWAKE)
        )
        self.dstate = after_decision(dstate, applied, now)

    def advance(self, t: float, step_s: float) -> None:
        """Step the physics to `t`, the agent's watch after every step; record one interval."""
        m, a = self.model, self.agent
        tot = m.totals
        t0, imp0, dc0 = m.t, tot.import_kwh, tot.dc_load_kwh
        ch0, dis0 = tot.batt_charge_kwh, tot.batt_discharge_kwh
        soc0, res0 = m.battery.soc, a.reserve()
        dormant0, mains0 = a.hold is not None, m.mains
        saved0 = a.dormancy_saved_w()
        while m.t < t - 1e-9:
            was = m.mains
            m.advance_to(min(t, m.t + step_s), max_step=step_s)
            if was and not m.mains:
                self.outages.append(m.t)
            if self.policy is not None:
                a.watch(m.t)
            self.peak_import_w = max(self.peak_import_w, m.grid_import_w)
            self.min_soc = min(self.min_soc, m.battery.soc)
            if m.mains:
                margin = m.battery.soc - a.reserve()
                self.min_margin_mains = min(self.min_margin_mains, margin)
                if m.battery.power_w < 0:
                    self.min_margin_discharging = min(self.min_margin_discharging, margin)
        h = (t - t0) / 3600.0
        if h <= 0:
            return
        self.intervals.append(
            Interval(
                t0,
                t,
                grid_w=(tot.import_kwh - imp0) * 1000.0 / h,
                dc_load_w=(tot.dc_load_kwh - dc0) * 1000.0 / h,
                battery_w=((tot.batt_charge_kwh - ch0) - (tot.batt_discharge_kwh - dis0))
                * 1000.0
                / h,
                dormant=dormant0,
                dormancy_saved_w=saved0,
                mains_present=mains0 and m.mains,
                soc_pct=soc0,
                reserve_soc_pct=res0,
            )
        )


def build_site(
    plan: SitePlan,
    policy: ComparePolicy | None,
    tariffs: Mapping[str, Tariff],
    start: float,
) -> OfflineSite:
    """A fresh site at `start` under `policy` (None: the twin)."""
    spec = plan.spec
    name = plan.tariff or (policy.control.tariff if policy is not None else None)
    if name is None:
        raise ScenarioError(f"site {spec.id}: no tariff (scenario or policy `tariff`)")
    try:
        tariff = tariffs[name]
    except KeyError:
        raise ScenarioError(
            f"site {spec.id}: unknown tariff {name!r} (known: {', '.join(sorted(tariffs))})"
        ) from None
    channels = (policy.channels if policy is not None else ()) or spec_channels(spec)
    model = SiteModel(spec, start=start)
    nominal = model.battery.nominal_v
    peak = policy.control.peak_shaving if policy is not None else None
    by_role = {r: tuple(c.number for c in channels if c.role is r) for r in ChannelRole}
    agent = AgentModel(
        model,
        backup_hours=peak.backup_hours if peak else 3.0,
        floor_pct=peak.floor_pct if peak else 10.0,
        efficiency=peak.efficiency if peak else 0.95,
        capacity_wh=spec.battery.capacity_ah * nominal,
        coverage=by_role[ChannelRole.ANCHOR],
        capacity=by_role[ChannelRole.CAPACITY],
    )
    dpol = policy.control.dormant if policy is not None else None
    window = (
        resolve_window(dpol, hourly_capacity_load(spec, start))
        if dpol is not None
        else Window(0.0, 0.0)
    )
    return OfflineSite(plan, model, tariff, policy, channels, window, agent)


# -- a fleet under one policy ------------------------------------------------------------------


def valley_start(tariff: Tariff, now: float) -> float:
    """When the valley containing `now` began (segments split at midnight joined)."""
    start = tariff.segment_at(now).start
    for _ in range(3):
        before = tariff.segment_at(start - 1.0)
        if before.period is not Period.VALLEY:
            break
        start = before.start
    return start


@dataclass
class OfflineRun:
    """Every site of a scenario under one policy (or none), on one stepped clock."""

    name: str
    sites: list[OfflineSite]
    plans: dict[str, RechargePlan] = field(default_factory=dict)
    fleet_peak_w: float = 0.0
    _segments: dict[str, tuple[Segment, str | None]] = field(default_factory=dict)

    def _valley(self, tariff: Tariff, now: float) -> tuple[Segment, str | None]:
        """The tariff's segment at `now` and its valley key (None outside a valley), cached
        until the segment ends (tariff look-ups are the costly part of a round)."""
        got = self._segments.get(tariff.name)
        if got is None or not got[0].start <= now < got[0].end:
            seg = tariff.segment_at(now)
            key = (
                f"{tariff.name}:{valley_start(tariff, now):.0f}"
                if seg.period is Period.VALLEY
                else None
            )
            got = (seg, key)
            self._segments[tariff.name] = got
        return got

    def _stagger(self, now: float) -> None:
        """At the first round of each valley (per tariff), stagger the sites needing a
        recharge under a ceiling that spreads their energy over the valley (`fleet.stagger`)."""
        groups: dict[str, list[tuple[OfflineSite, RechargeNeed]]] = {}
        ends: dict[str, float] = {}
        for s in self.sites:
            if s.policy is None or not s.policy.enabled:
                continue
            seg, key = self._valley(s.tariff, now)
            if key is None or key in self.plans:
                continue
            ends[key] = seg.end
            groups.setdefault(key, [])
            p = s.policy.control.peak_shaving
            st = s.peak_state(now)
            if st.soc_pct >= p.target_soc - p.charge_hysteresis_pct:
                continue
            need = (p.target_soc - st.soc_pct) / 100.0 * st.capacity_wh * st.battery.soh_pct / 100
            rate = charge_limit_w(st, p)
            if need > 0 and rate > 0:
                groups[key].append((s, RechargeNeed(s.site, need, rate)))
        for key, members in groups.items():
            needs = [n for _, n in members]
            if not needs:
                self.plans[key] = RechargePlan((), 1.0, ends[key], ())
                continue
            hours = max((ends[key] - now) / 3600.0 * VALLEY_FILL, 1e-6)
            ceiling = max(
                max(n.max_charge_w for n in needs), sum(n.energy_wh for n in needs) / hours
            )
            self.plans[key] = stagger(needs, now, ceiling, deadline=ends[key])

    def _slot(self, site: str, now: float) -> RechargeSlot | None:
        for plan in self.plans.values():
            slot = plan.slot_for(site)
            if slot is not None and slot.end > now:
                return slot
        return None

    def round(self, now: float) -> None:
        self._stagger(now)
        for s in self.sites:
            s.decide(now, self._slot(s.site, now))

    def run(
        self,
        start: float,
        end: float,
        *,
        interval_s: float = DEFAULT_INTERVAL_S,
        step_s: float = 30.0,
        progress: Callable[[float], None] | None = None,
    ) -> None:
        t = start
        step = min(step_s, interval_s)
        while t < end - 1e-9:
            self.round(t)
            nxt = min(end, t + interval_s)
            fleet_w = 0.0
            for s in self.sites:
                s.advance(nxt, step)
                fleet_w += s.intervals[-1].grid_w if s.intervals else 0.0
            self.fleet_peak_w = max(self.fleet_peak_w, fleet_w)
            t = nxt
            if progress is not None:
                progress((t - start) / (end - start))


# -- comparison --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SiteResult:
    """One site under one policy: its report and the figures the report does not hold."""

    site: str
    chemistry: str
    tariff: str
    climate: str
    capacity_kwh: float
    report: Report
    twin: Report | None
    min_margin_discharging: float | None
    min_margin_mains: float | None
    min_soc: float
    peak_import_w: float
    reserve_stops: int
    battery_commands: int
    wakes: tuple[tuple[float, str], ...]
    codes: Mapping[str, int]

    @property
    def moved_kwh(self) -> float:
        """Battery output in peak periods on mains: the report's `moved_kwh`."""
        return self.report.moved_kwh

    def row(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "site": self.site,
            "chemistry": self.chemistry,
            "tariff": self.tariff,
            "climate": self.climate,
            "capacity_kwh": round(self.capacity_kwh, 3),
        }
        out |= _report_row(self.report, self.twin)
        out |= {
            "min_margin_discharging_pct": _opt(self.min_margin_discharging),
            "min_margin_mains_pct": _opt(self.min_margin_mains),
            "min_soc_pct": round(self.min_soc, 3),
            "peak_import_w": round(self.peak_import_w, 1),
            "reserve_stops": self.reserve_stops,
            "battery_commands": self.battery_commands,
            "wakes": len(self.wakes),
            "shave_rounds": self.codes.get("battery.shave", 0),
        }
        return out


def _opt(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else round(v, 3)


_ESTIMATED = ("baseline_kwh", "baseline_cost", "savings_cost", "savings_kwh", "savings_kgco2")


def _report_row(r: Report, twin: Report | None) -> dict[str, Any]:
    """The report's figures; its own estimated baseline and savings renamed `*_est_*`, and
    `savings_*` measured against the twin (empty without one)."""
    out: dict[str, Any] = {}
    for k, v in r.as_dict().items():
        if k in ("start", "end"):
            continue
        out[k.replace("baseline_", "baseline_est_").replace("savings_", "savings_est_")
            if k in _ESTIMATED else k] = v  # fmt: skip
    money, kwh = (twin.cost - r.cost, twin.grid_kwh - r.grid_kwh) if twin else (None, None)
    out |= {
        "twin_kwh": twin.grid_kwh if twin else None,
        "twin_cost": twin.cost if twin else None,
        "savings_cost": money,
        "savings_kwh": kwh,
        "savings_kgco2": None if kwh is None else kwh * r.emission_factor.kg_per_kwh,
    }
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in out.items()}


@dataclass(frozen=True, slots=True)
class PolicyResult:
    name: str
    source: str
    sites: tuple[SiteResult, ...]
    total: Report
    twin_total: Report | None
    fleet_peak_w: float

    @property
    def moved_kwh(self) -> float:
        return self.total.moved_kwh

    def total_row(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "site": "TOTAL",
            "chemistry": "",
            "tariff": "",
            "climate": "",
            "capacity_kwh": round(sum(s.capacity_kwh for s in self.sites), 3),
        }
        out |= _report_row(self.total, self.twin_total)
        margins = [s.min_margin_discharging for s in self.sites]
        mains = [s.min_margin_mains for s in self.sites]
        out |= {
            "min_margin_discharging_pct": _opt(min((m for m in margins if m is not None),
                                                   default=None)),
            "min_margin_mains_pct": _opt(min((m for m in mains if m is not None), default=None)),
            "min_soc_pct": round(min(s.min_soc for s in self.sites), 3),
            "peak_import_w": round(self.fleet_peak_w, 1),
            "reserve_stops": sum(s.reserve_stops for s in self.sites),
            "battery_commands": sum(s.battery_commands for s in self.sites),
            "wakes": sum(len(s.wakes) for s in self.sites),
            "shave_rounds": sum(s.codes.get("battery.shave", 0) for s in self.sites),
        }  # fmt: skip
        return out


@dataclass(frozen=True, slots=True)
class Comparison:
    scenario: str
    start: float
    end: float
    interval_s: float
    step_s: float
    policies: tuple[PolicyResult, ...]
    baseline: PolicyResult | None


def _site_result(s: OfflineSite, start: float, end: float, twin: OfflineSite | None,
                 factor: EmissionFactor) -> SiteResult:  # fmt: skip
    rep = site_report(
        s.intervals, s.tariff, start=start, end=end, emission_factor=factor,
        rectifier_efficiency=RECTIFIER_EFFICIENCY,
    )  # fmt: skip
    twin_rep = (
        site_report(twin.intervals, twin.tariff, start=start, end=end, emission_factor=factor,
                    rectifier_efficiency=RECTIFIER_EFFICIENCY)
        if twin is not None
        else None
    )  # fmt: skip
    spec = s.plan.spec
    return SiteResult(
        site=s.site,
        chemistry=spec.battery.chemistry.value,
        tariff=s.tariff.name,
        climate=s.plan.climate,
        capacity_kwh=s.capacity_wh / 1000.0,
        report=rep,
        twin=twin_rep,
        min_margin_discharging=None if math.isinf(s.min_margin_discharging)
        else s.min_margin_discharging,
        min_margin_mains=None if math.isinf(s.min_margin_mains) else s.min_margin_mains,
        min_soc=s.min_soc,
        peak_import_w=s.peak_import_w,
        reserve_stops=s.agent.reserve_stops,
        battery_commands=s.commands,
        wakes=tuple(s.agent.wakes),
        codes=dict(s.codes),
    )  # fmt: skip


def _policy_result(run: OfflineRun, source: str, start: float, end: float,
                   twin: OfflineRun | None, factor: EmissionFactor) -> PolicyResult:  # fmt: skip
    twins = {s.site: s for s in twin.sites} if twin is not None else {}
    sites = tuple(_site_result(s, start, end, twins.get(s.site), factor) for s in run.sites)
    total = _combine([s.report for s in sites])
    twin_total = (
        _combine([s.twin for s in sites if s.twin is not None]) if twin is not None else None
    )
    return PolicyResult(run.name, source, sites, total, twin_total, run.fleet_peak_w)


def _combine(reports: Sequence[Report]) -> Report:
    """Sum site reports; sites on tariffs in different currencies cannot be summed."""
    try:
        return combine(reports)
    except ControlError as exc:
        raise ScenarioError(f"cannot total the fleet: {exc}") from None


def unique_names(policies: Sequence[ComparePolicy]) -> list[ComparePolicy]:
    """Policies with distinct names (a repeated stem gets -2, -3…), never `baseline`."""
    seen: Counter[str] = Counter()
    out = []
    for p in policies:
        base = p.name if p.name != BASELINE else f"{BASELINE}-policy"
        seen[base] += 1
        name = base if seen[base] == 1 else f"{base}-{seen[base]}"
        out.append(replace(p, name=name))
    return out


Progress = Callable[[str, float], None]


def compare_sites(
    plans: Sequence[SitePlan],
    policies: Sequence[ComparePolicy],
    *,
    start: float,
    days: float = 1.0,
    baseline: bool = True,
    interval_s: float = DEFAULT_INTERVAL_S,
    step_s: float = 30.0,
    tariffs: Mapping[str, Tariff] | None = None,
    name: str = "",
    progress: Progress | None = None,
) -> Comparison:
    """Run `plans` once per policy (and once untouched if `baseline`) from `start`."""
    if days <= 0:
        raise ScenarioError(f"days must be > 0, got {days}")
    if interval_s <= 0 or step_s <= 0:
        raise ScenarioError(f"interval and step must be > 0 s, got {interval_s}, {step_s}")
    tariffs = tariffs if tariffs is not None else load_tariffs(TARIFFS_DIR)
    end = start + days * 86400.0
    named = unique_names(policies)

    def go(run_name: str, policy: ComparePolicy | None) -> OfflineRun:
        run = OfflineRun(run_name, [build_site(p, policy, tariffs, start) for p in plans])
        tick = (lambda f: progress(run_name, f)) if progress is not None else None
        run.run(start, end, interval_s=interval_s, step_s=step_s, progress=tick)
        return run

    twin = go(BASELINE, None) if baseline else None
    results = []
    for p in named:
        run = go(p.name, p)
        results.append(_policy_result(run, p.source, start, end, twin, p.emissions))
    base_result = None
    if twin is not None:
        factor = named[0].emissions if named else emission_factor()
        base_result = _policy_result(twin, "no action", start, end, None, factor)
    step = min(step_s, interval_s)
    return Comparison(name, start, end, interval_s, step, tuple(results), base_result)


def run_compare(
    scenario: Scenario,
    policies: Sequence[ComparePolicy],
    *,
    start: float,
    days: float = 1.0,
    baseline: bool = True,
    interval_s: float = DEFAULT_INTERVAL_S,
    step_s: float | None = None,
    tariffs: Mapping[str, Tariff] | None = None,
    scenario_name: str = "",
    progress: Progress | None = None,
) -> Comparison:
    """`compare_sites` over a scenario's sites; the physics step defaults to the scenario's."""
    return compare_sites(
        scenario_sites(scenario, start),
        policies,
        start=start,
        days=days,
        baseline=baseline,
        interval_s=interval_s,
        step_s=step_s if step_s is not None else scenario.sim.step_s,
        tariffs=tariffs,
        name=scenario_name,
        progress=progress,
    )


# -- output ------------------------------------------------------------------------------------


def rows(c: Comparison) -> list[dict[str, Any]]:
    """Flat rows (per policy: each site, then TOTAL), for CSV."""
    out: list[dict[str, Any]] = []
    runs = ([c.baseline] if c.baseline is not None else []) + list(c.policies)
    for r in runs:
        for row in [*(s.row() for s in r.sites), r.total_row()]:
            out.append({"policy": r.name, **row})
    return out


def as_json(c: Comparison) -> dict[str, Any]:
    def run(r: PolicyResult) -> dict[str, Any]:
        return {
            "name": r.name,
            "source": r.source,
            "total": r.total_row(),
            "sites": [
                {**s.row(), "wake_events": [[t, why] for t, why in s.wakes],
                 "decisions": dict(sorted(s.codes.items()))}
                for s in r.sites
            ],
        }  # fmt: skip

    return {
        "scenario": c.scenario,
        "start": c.start,
        "end": c.end,
        "days": (c.end - c.start) / 86400.0,
        "interval_s": c.interval_s,
        "step_s": c.step_s,
        "savings_against": "baseline twin (simulated, no action)"
        if c.baseline is not None
        else "the report's estimated no-action baseline",
        "baseline": run(c.baseline) if c.baseline is not None else None,
        "policies": [run(r) for r in c.policies],
    }


def write_outputs(c: Comparison, out: Path) -> tuple[Path, Path]:
    """compare.csv (one row per policy × site plus each policy's TOTAL) and compare.json."""
    out.mkdir(parents=True, exist_ok=True)
    table = rows(c)
    fields: list[str] = []
    for r in table:
        fields += [k for k in r if k not in fields]
    csv_path = out / "compare.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows(table)
    json_path = out / "compare.json"
    json_path.write_text(json.dumps(as_json(c), indent=2) + "\n", encoding="utf-8")
    return csv_path, json_path


def _f(v: float | None, digits: int = 1) -> str:
    return "—" if v is None else f"{v:,.{digits}f}"


def _saved(rep: Report, twin: Report | None) -> tuple[float, float]:
    """(money, kWh) saved: against the twin when there is one, else the report's estimate."""
    if twin is not None:
        return twin.cost - rep.cost, twin.grid_kwh - rep.grid_kwh
    return rep.savings_cost, rep.savings_kwh


def policy_table(r: PolicyResult, c: Comparison) -> Table:
    """One policy: a row per site and the fleet total."""
    factor = r.total.emission_factor
    day0 = local_time(c.start).strftime("%Y-%m-%d %H:%M")
    against = "the no-action twin" if r.twin_total is not None else "the estimated baseline"
    table = Table(
        title=f"{r.name} ({r.source}): {len(r.sites)} sites, {(c.end - c.start) / 86400:g} d "
        f"from {day0}",
        caption=f"saved: against {against}; kgCO2 at {factor.label}; moved: battery output in "
        "peak periods on mains; margin: min SOC − reserve while discharging on mains",
    )
    used = [p for p in PERIODS if r.total.grid_kwh_by_period[p] > 0]
    cur = r.total.currency
    table.add_column("site")
    table.add_column("chem")
    for name in (*(f"{p.value} kWh" for p in used), f"cost {cur}", f"saved {cur}", "saved kWh",
                 "saved kgCO2", "moved kWh", "dormant h", "viol.", "margin %"):  # fmt: skip
        table.add_column(name, justify="right")

    def add(label: str, chem: str, rep: Report, twin: Report | None, margin: float | None,
            style: str | None = None) -> None:  # fmt: skip
        money, kwh = _saved(rep, twin)
        viol = str(rep.reserve_violations)
        table.add_row(
            label,
            chem,
            *(_f(rep.grid_kwh_by_period[p]) for p in used),
            _f(rep.cost, 2),
            _f(money, 2),
            _f(kwh),
            _f(kwh * factor.kg_per_kwh),
            _f(rep.moved_kwh),
            _f(rep.dormant_hours),
            viol if rep.reserve_violations == 0 else f"[red]{viol}[/red]",
            _f(margin),
            style=style,
        )

    for s in r.sites:
        chem = "LFP" if s.chemistry == "lfp" else "PbA"
        add(s.site, chem, s.report, s.twin, s.min_margin_discharging)
    margins = [s.min_margin_discharging for s in r.sites if s.min_margin_discharging is not None]
    add("TOTAL", "", r.total, r.twin_total, min(margins, default=None), "bold")
    return table


def summary_table(c: Comparison) -> Table:
    """One row per run: the fleet's figures side by side."""
    table = Table(title="policies compared: fleet totals")
    for name in ("policy", "grid kWh", "cost", "saved", "saved kWh", "saved kgCO2",
                 "moved kWh", "dormant h", "fleet peak kW", "violations"):  # fmt: skip
        table.add_column(name, justify="left" if name == "policy" else "right")
    runs = ([c.baseline] if c.baseline is not None else []) + list(c.policies)
    for r in runs:
        t = r.total
        money, kwh = (0.0, 0.0) if r is c.baseline else _saved(t, r.twin_total)
        table.add_row(
            r.name,
            _f(t.grid_kwh),
            f"{t.cost:,.2f} {t.currency}",
            _f(money, 2),
            _f(kwh),
            _f(kwh * t.emission_factor.kg_per_kwh),
            _f(r.moved_kwh),
            _f(t.dormant_hours),
            _f(r.fleet_peak_w / 1000.0, 2),
            str(t.reserve_violations),
        )
    return table


__all__ = [
    "BASELINE",
    "DEFAULT_INTERVAL_S",
    "AgentModel",
    "BatteryCommand",
    "ComparePolicy",
    "Comparison",
    "OfflineRun",
    "OfflineSite",
    "PolicyResult",
    "SitePlan",
    "SiteResult",
    "as_json",
    "build_site",
    "compare_sites",
    "default_start",
    "hourly_capacity_load",
    "load_compare_policy",
    "policy_from_file_mapping",
    "policy_table",
    "rows",
    "run_compare",
    "scenario_sites",
    "spec_channels",
    "summary_table",
    "unique_names",
    "write_outputs",
]
