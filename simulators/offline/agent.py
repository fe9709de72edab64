"""The agent, modelled: what it does with a command, and its own watch after every physics step.

A model of the agent's rules (DESIGN.md "Interlocks"), not a copy of agent code."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from protocols.control.dormant import DormantDecision, DormantMode
from protocols.control.peak import HOLD_CHARGE_W, Decision, hold_target
from protocols.control.peak import BatteryMode as PlanMode
from protocols.control.reserve import reserve_soc
from simulators.physics import BatteryMode, SiteModel

RECTIFIER_EFFICIENCY = 0.95
"""For the reports' estimated baseline and the dormancy saving (as the aggregator's reports)."""
HOLD_W = HOLD_CHARGE_W
"""A held battery (`BatteryMode.HOLD`: after shaving until the valley, or waiting for its
stagger slot) is told "charge to the SOC you have" at a token rate, as the wire carries it
(battery auto would float-charge it at full rate: the rebound peak)."""
POWER_TOLERANCE_W, POWER_TOLERANCE_PCT = 100.0, 10.0
"""A power change below both is not a change (the aggregator's `power_tolerance_w/_pct`)."""
AC_SETPOINT_BOUNDS = (18.0, 32.0)
"""The agent's default AC setpoint bounds (agent config `interlocks.ac_setpoint_min/max_c`)."""
COVERAGE_RISE_PCT = 30.0
"""The agent's own wake threshold on a coverage-load rise (`interlocks.dormant_load_rise_pct`)."""


class BatteryCommand(NamedTuple):
    """A battery command as the wire carries it (`protocols.messages` actions)."""

    action: str
    power_w: float = 0.0
    target_soc: float | None = None

    @classmethod
    def of(cls, d: Decision) -> BatteryCommand:
        if d.mode is PlanMode.PEAK_SHAVE:
            return cls("battery.peak_shave", d.discharge_limit_w)
        if d.mode in (PlanMode.CHARGE, PlanMode.HOLD):
            return cls("battery.charge", d.charge_limit_w, d.target_soc)
        return cls("battery.auto")

    @classmethod
    def hold(cls, soc: float) -> BatteryCommand:
        """Charge to the SOC it has at a token rate (rounded down: never a top-up)."""
        return cls("battery.charge", HOLD_W, hold_target(soc))

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


__all__ = [
    "AC_SETPOINT_BOUNDS",
    "COVERAGE_RISE_PCT",
    "HOLD_W",
    "POWER_TOLERANCE_PCT",
    "POWER_TOLERANCE_W",
    "RECTIFIER_EFFICIENCY",
    "AgentModel",
    "BatteryCommand",
]
