"""One site under one policy: its physics, the agent model, the planners' memory and what was
recorded every control interval."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from protocols.control.dormant import (
    Channel,
    ChannelRole,
    DormantMode,
    DormantState,
    Window,
    after_decision,
    capacity_threshold_w,
    plan_dormant,
    resolve_window,
    track_low,
)
from protocols.control.economics import Battery as BatteryEconomics
from protocols.control.economics import Chemistry as EconChemistry
from protocols.control.fleet import RechargeSlot
from protocols.control.peak import BatteryMode as PlanMode
from protocols.control.peak import FleetDirective, SiteState, plan_site
from protocols.control.report import Interval
from protocols.control.tariff import Tariff
from simulators.errors import ScenarioError
from simulators.offline.agent import AgentModel, BatteryCommand
from simulators.offline.plans import SitePlan, hourly_capacity_load, spec_channels
from simulators.offline.policies import BatteryFigures, ComparePolicy
from simulators.physics import SiteModel

RENEW_S = 300.0
"""Leased commands (peak shave, charge) are renewed this often: the aggregator's default
`lease_s` × `renew_fraction`. A renewal re-applies the command, through the agent's checks."""


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
        facts = self.policy.battery if self.policy is not None else BatteryFigures()
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
        cmd = BatteryCommand.of(d)  # a hold is the planner's (`BatteryMode.HOLD`), mapped there
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
            low_since=track_low(
                self.dstate.low_since, cap_w, capacity_threshold_w(dpol, self.channels), now
            ),
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


__all__ = [
    "RENEW_S",
    "OfflineSite",
    "build_site",
]
