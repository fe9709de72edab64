"""The offline runner: the aggregator's loop core and the shared planners driving the
simulators' site physics on a stepped clock, with no network — how a tester compares policies.

Each round (`interval_s` of simulated time): read each `SiteModel` into the planner inputs the
aggregator would build from telemetry, run `plan_round`, apply the intents as the agent would
(with its reserve interlock and its wake-on-mains-failure), ack them, then step the physics to the
next round in short steps. Energy between rounds comes from the physics' flow totals, so the
report intervals are exact means.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aggregator.control.core import Ack, FleetMemory, Intent, bind_sent, plan_round
from aggregator.control.events import DrEvent
from aggregator.control.inputs import Measured, SiteInputs
from aggregator.control.policies import SitePolicy
from aggregator.control.settings import ControlSettings
from protocols.control.dormant import Window, resolve_window
from protocols.control.report import Interval
from protocols.control.reserve import reserve_soc
from protocols.control.tariff import Tariff
from simulators.physics import BatteryMode, SiteModel


@dataclass
class SimSite:
    model: SiteModel
    policy: SitePolicy
    tariff: Tariff
    region: str = "east"
    controlled: bool = True
    intervals: list[Interval] = field(default_factory=list)
    actions: list[tuple[float, str, dict[str, Any]]] = field(default_factory=list)
    min_margin_discharging: float = float("inf")  # SOC − reserve while discharging on mains
    ac_default_c: float = 0.0

    def __post_init__(self) -> None:
        self.ac_default_c = self.model.aircon.setpoint_c

    @property
    def capacity_wh(self) -> float:
        b = self.model.battery
        return b.spec.capacity_ah * b.nominal_v

    def reserve(self) -> float:
        p = self.policy.peak_shaving
        return reserve_soc(
            self.model.dc_load_w,
            self.capacity_wh,
            backup_hours=p.backup_hours,
            floor_pct=p.floor_pct,
            efficiency=p.efficiency,
            soh_pct=self.model.battery.soh,
        )

    def dormant(self) -> bool:
        numbers = set(self.policy.channel_numbers(*_capacity()))
        return any(not ch.closed for i, ch in enumerate(self.model.breaker.channels)
                   if i + 1 in numbers)  # fmt: skip

    def measured(self) -> Measured:
        m, b = self.model, self.model.battery
        return Measured(
            newest_ms=int(m.t * 1000),
            soc_pct=b.soc,
            soh_pct=b.soh,
            capacity_wh=self.capacity_wh,
            battery_v=b.voltage,
            battery_w=b.power_w,
            battery_temp_c=b.temp_c,
            max_charge_w=b.charge_limit_a * b.voltage,
            max_discharge_w=b.discharge_limit_a * b.voltage,
            dc_load_w=m.dc_load_w,
            import_w=m.grid_import_w,
            mains_present=m.mains,
            room_temp_c=m.aircon.room_c,
            channel_w={i + 1: ch.power_w for i, ch in enumerate(m.breaker.channels)},
        )

    # -- the agent's side --------------------------------------------------------------------
    def apply(self, action: str, params: dict[str, Any]) -> None:
        b, m = self.model.battery, self.model
        self.actions.append((m.t, action, dict(params)))
        if action == "battery.peak_shave":
            b.mode = BatteryMode.DISCHARGE
            b.discharge_power_limit_w = params["discharge_limit_w"]
        elif action == "battery.charge":
            b.mode = BatteryMode.CHARGE
            b.charge_power_limit_w = params["charge_limit_w"]
            b.target_soc = params["target_soc"]
        elif action == "battery.auto":
            b.mode = BatteryMode.AUTO
        elif action == "site.dormant":
            for n in params["channels"]:
                m.breaker.command(n - 1, False)
            m.rectifier.eco_enable = params["rectifier_eco"]
            m.aircon.setpoint_c = self.ac_default_c + params["ac_offset_c"]
        elif action == "site.wake":
            self.wake()

    def wake(self) -> None:
        m = self.model
        for i, ch in enumerate(m.breaker.channels):
            if not ch.closed or ch.pending is False:
                m.breaker.command(i, True)
        m.rectifier.eco_enable = False
        m.aircon.setpoint_c = self.ac_default_c

    def interlocks(self) -> None:
        """The agent's own rules: stop a discharge at the reserve; wake on mains failure."""
        b = self.model.battery
        if b.mode is BatteryMode.DISCHARGE and b.soc <= self.reserve():
            b.mode = BatteryMode.AUTO
        if not self.model.mains and self.dormant():
            self.wake()

    def advance(self, t: float, step_s: float) -> None:
        m = self.model
        tot = m.totals
        t0, imp0, dc0 = m.t, tot.import_kwh, tot.dc_load_kwh
        ch0, dis0 = tot.batt_charge_kwh, tot.batt_discharge_kwh
        soc0, res0, dormant0, mains0 = m.battery.soc, self.reserve(), self.dormant(), m.mains
        while m.t < t - 1e-9:
            m.advance_to(min(t, m.t + step_s), max_step=step_s)
            self.interlocks()
            bp = m.battery.power_w
            if bp < 0 and m.mains:
                self.min_margin_discharging = min(
                    self.min_margin_discharging, m.battery.soc - self.reserve()
                )
        h = (t - t0) / 3600
        self.intervals.append(
            Interval(
                t0,
                t,
                grid_w=(tot.import_kwh - imp0) * 1000 / h,
                dc_load_w=(tot.dc_load_kwh - dc0) * 1000 / h,
                battery_w=((tot.batt_charge_kwh - ch0) - (tot.batt_discharge_kwh - dis0))
                * 1000
                / h,
                dormant=dormant0,
                mains_present=mains0 and m.mains,
                soc_pct=soc0,
                reserve_soc_pct=res0,
            )
        )


def _capacity() -> tuple[Any, ...]:
    from protocols.control.dormant import ChannelRole

    return (ChannelRole.CAPACITY,)


@dataclass
class OfflineFleet:
    sites: dict[str, SimSite]
    settings: ControlSettings
    events: list[DrEvent] = field(default_factory=list)
    memory: FleetMemory = field(default_factory=FleetMemory)
    acks: dict[str, Ack] = field(default_factory=dict)
    intents: list[tuple[float, Intent]] = field(default_factory=list)
    imports: list[tuple[float, float]] = field(default_factory=list)  # (t, fleet import W)
    n: int = 0

    def inputs(self) -> list[SiteInputs]:
        out = []
        for name, s in self.sites.items():
            if not s.controlled:
                continue
            window: Window = resolve_window(s.policy.dormant, None)
            out.append(SiteInputs(name, s.policy, s.tariff, s.measured(), window, s.region,
                                  s.model.spec.tz))  # fmt: skip
        return out

    def round(self, now: float) -> None:
        rnd = plan_round(self.inputs(), self.events, self.memory, self.acks, now, self.settings)
        memory = rnd.memory
        for intent in rnd.intents:
            self.n += 1
            cid = f"c{self.n}"
            memory = bind_sent(memory, intent, cid, now)
            self.sites[intent.site].apply(intent.action, dict(intent.params))
            self.acks[cid] = Ack("applied")
            self.intents.append((now, intent))
        self.memory = memory

    def run(self, start: float, end: float, *, step_s: float = 20.0) -> None:
        t = start
        dt = self.settings.interval_s
        while t < end - 1e-9:
            self.round(t)
            self.imports.append((t, sum(s.model.grid_import_w for s in self.sites.values())))
            nxt = min(end, t + dt)
            for s in self.sites.values():
                s.advance(nxt, step_s)
            t = nxt
