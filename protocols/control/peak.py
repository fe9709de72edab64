"""The peak-shaving planner: from a site's state, its policy, the tariff and the time, the
battery mode the site should be in, with the reason.

Rules, in order (the first that applies decides):

1. policy disabled → auto.
2. mains absent → auto: the battery is already carrying the site; the BMS and the agent's
   interlock own it now.
3. outage forecast, or `outage_threshold` outages within the policy's instability window →
   recharge to `recovery_soc` (auto once there): a battery emptied for money must not meet
   an outage.
4. a fleet directive (demand response) asks for discharge → peak_shave at the directive's
   power, bounded by load and battery limit, down to the reserve (economics do not apply: the
   event is paid for separately).
5. economics do not pay (chemistry, SOH, cycle life, temperature vs the day's spread) → auto.
6. peak or critical peak → peak_shave with discharge limit min(load, battery limit, policy
   limit), only above the reserve SOC; once shaving, stop at the reserve (+ `hold_margin_pct`
   + `RESERVE_TOLERANCE_PCT` when `hold_until_valley`, so the pack can be held after the peak
   rather than restored); to start, the SOC must be `start_margin_pct` above that (no chatter
   at the boundary). Once it cannot shave
   (at the reserve, no load) the battery is *held* where it is, not left in auto — auto
   float-charges at full rate, at the peak price — unless the backup is short (SOC more than
   `RESERVE_TOLERANCE_PCT` under the reserve, because the load rose): then it is *restored*.
7. valley → charge to `target_soc` at min(policy C-rate × capacity, policy limit, battery
   limit), unless a fleet directive holds the start back (the battery is held: down to the
   reserve, where the backup is intact, then restored) or lowers the rate (stagger).
8. any other period (flat) with the pack short of its valley target (SOC < target −
   hysteresis), cycling paying and a valley in the day → **hold until the valley**
   (`hold_until_valley`): no discharge, no recharge at the flat price, no full-rate float
   right after a peak — the rebound peak a fleet would otherwise make as all its shaved packs
   float-charge at once. Held only while SOC ≥ reserve + `hold_margin_pct`; below it the
   backup comes first: *restore* now, at `restore_c_rate`, to reserve + margin + hysteresis,
   then hold again. The flat stretch between two peaks (Sichuan 12–15) is held too: a flat
   recharge for the next peak would earn at most peak − flat/η − wear (≈ 0.26 CNY/kWh there,
   less elsewhere) and is exactly the rebound.
9. otherwise (charged, no valley in the tariff) → auto.

`BatteryMode.HOLD` maps to the wire as `battery.charge` to the present SOC (rounded down to
0.1 %) at a token `HOLD_CHARGE_W`: the wire has no "hold"; a charge whose target is already
reached draws nothing, and unlike auto it does not float the pack. Every shell maps it the
same way through `Decision.params()`.

The agent enforces the reserve independently (the same `reserve_soc`), so a stale or wrong
decision cannot eat the backup; this planner simply never asks for it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator

from protocols.control.economics import Battery, Verdict, worth_cycling
from protocols.control.reserve import (
    DEFAULT_BACKUP_HOURS,
    DEFAULT_EFFICIENCY,
    DEFAULT_FLOOR_PCT,
    reserve_soc,
)
from protocols.control.tariff import PEAK_PERIODS, Period, Tariff
from protocols.messages import BatteryAuto, Charge, PeakShave


class BatteryMode(StrEnum):
    AUTO = "auto"
    PEAK_SHAVE = "peak_shave"
    CHARGE = "charge"
    HOLD = "hold"  # stay where it is: no discharge, no recharge (a charge to the present SOC)


HOLD_CHARGE_W = 100.0
"""The token charge limit of a hold (`battery.charge` to the present SOC)."""
RESERVE_TOLERANCE_PCT = 0.5
"""SOC this far under the reserve is still "at" it (the agent stops a discharge after the step
that crosses it; the reports' violation tolerance is the same)."""


def hold_target(soc_pct: float) -> float:
    """A hold's target: the present SOC rounded down to 0.1 %, so it never asks for a top-up."""
    return max(0.0, min(100.0, math.floor(soc_pct * 10) / 10))


class PeakPolicy(BaseModel):
    """Peak-shaving policy for one site or group. Defaults are what docs/control.md lists."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    backup_hours: float = Field(DEFAULT_BACKUP_HOURS, ge=0, le=48)
    floor_pct: float = Field(DEFAULT_FLOOR_PCT, ge=0, le=100)
    efficiency: float = Field(DEFAULT_EFFICIENCY, gt=0, le=1)
    target_soc: float = Field(95.0, gt=0, le=100)
    recovery_soc: float = Field(100.0, gt=0, le=100)
    charge_c_rate: float = Field(0.3, gt=0, le=2)
    charge_limit_w: float | None = Field(None, gt=0)
    max_discharge_w: float | None = Field(None, gt=0)
    min_spread: float = Field(0.0, ge=0)
    min_margin: float = Field(0.0, ge=0)
    start_margin_pct: float = Field(2.0, ge=0, le=50)
    charge_hysteresis_pct: float = Field(3.0, ge=0, le=50)
    shave_periods: frozenset[Period] = PEAK_PERIODS
    instability_window_h: float = Field(24.0, gt=0)
    outage_threshold: int = Field(1, ge=1)
    hold_until_valley: bool = True
    hold_margin_pct: float = Field(2.0, ge=0, le=50)
    shave_stop_margin_pct: float = Field(5.0, ge=0, le=50)
    restore_c_rate: float = Field(0.1, gt=0, le=2)

    @model_validator(mode="after")
    def _check(self) -> PeakPolicy:
        if self.target_soc <= self.floor_pct:
            raise ValueError(f"target_soc {self.target_soc} must be above floor {self.floor_pct}")
        if Period.VALLEY in self.shave_periods:
            raise ValueError("shave_periods must not include the valley")
        if self.hold_until_valley and self.shave_stop_margin_pct < self.hold_margin_pct:
            raise ValueError(
                f"shave_stop_margin_pct {self.shave_stop_margin_pct} must be at least "
                f"hold_margin_pct {self.hold_margin_pct}: a shave must end where it can be held"
            )
        return self


@dataclass(frozen=True, slots=True)
class SiteState:
    """What the planner needs to know about a site now.

    `outages_recent` counts mains failures in the last `policy.instability_window_h` hours
    (the shell counts them from its alarm history).
    """

    soc_pct: float
    capacity_wh: float
    load_w: float
    battery: Battery = field(default_factory=Battery)
    mains_present: bool = True
    outages_recent: int = 0
    outage_forecast: bool = False
    max_discharge_w: float = math.inf
    max_charge_w: float = math.inf
    mode: BatteryMode = BatteryMode.AUTO


@dataclass(frozen=True, slots=True)
class FleetDirective:
    """What fleet-level planning (demand response, staggered recharge) asks of one site.

    `discharge_w`: power to shed now (a demand-response share); `charge_not_before`: Unix
    seconds before which the site must not start recharging; `charge_limit_w`: a lower charge
    rate for the stagger.
    """

    discharge_w: float = 0.0
    charge_not_before: float | None = None
    charge_limit_w: float | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """The planner's answer. `code` is a stable short name for the rule that decided."""

    mode: BatteryMode
    code: str
    reason: str
    reserve_soc: float
    discharge_limit_w: float = 0.0
    charge_limit_w: float = 0.0
    target_soc: float | None = None
    verdict: Verdict | None = None

    def params(self) -> PeakShave | Charge | BatteryAuto:
        """The wire command's params (protocols.messages), whose ACTION names the action."""
        if self.mode is BatteryMode.PEAK_SHAVE:
            return PeakShave(discharge_limit_w=self.discharge_limit_w)
        if self.mode in (BatteryMode.CHARGE, BatteryMode.HOLD):
            assert self.target_soc is not None
            return Charge(charge_limit_w=self.charge_limit_w, target_soc=self.target_soc)
        return BatteryAuto()


def site_reserve_soc(state: SiteState, policy: PeakPolicy) -> float:
    """The reserve SOC for this site now, per the policy (same formula as the interlock)."""
    return reserve_soc(
        state.load_w,
        state.capacity_wh,
        backup_hours=policy.backup_hours,
        floor_pct=policy.floor_pct,
        efficiency=policy.efficiency,
        soh_pct=state.battery.soh_pct,
    )


def charge_limit_w(state: SiteState, policy: PeakPolicy) -> float:
    """The charge power the policy allows this site (W, at the battery)."""
    limit = min(policy.charge_c_rate * state.capacity_wh, state.max_charge_w)
    if policy.charge_limit_w is not None:
        limit = min(limit, policy.charge_limit_w)
    return max(0.0, limit)


def restore_limit_w(state: SiteState, policy: PeakPolicy) -> float:
    """The charge power that restores a backup outside the valley: `restore_c_rate` × capacity,
    within what the policy and the battery allow anyway (a limited rate: no rebound peak)."""
    return min(charge_limit_w(state, policy), policy.restore_c_rate * state.capacity_wh)


def discharge_limit_w(state: SiteState, policy: PeakPolicy, wanted_w: float = math.inf) -> float:
    """Discharge power: never more than the load (no export), the battery or the policy allow."""
    limit = min(max(0.0, state.load_w), state.max_discharge_w, wanted_w)
    if policy.max_discharge_w is not None:
        limit = min(limit, policy.max_discharge_w)
    return max(0.0, limit)


def day_verdict(state: SiteState, policy: PeakPolicy, tariff: Tariff, now: float) -> Verdict:
    """The economics of cycling today: the day's dearest shaved period against its cheapest."""
    prices = tariff.day_prices(now)
    shave = [v for p, v in prices.items() if p in policy.shave_periods]
    peak = max(shave) if shave else max(prices.values())
    valley = min(prices.values())
    return worth_cycling(
        state.battery,
        peak_price=peak,
        valley_price=valley,
        min_spread=policy.min_spread,
        min_margin=policy.min_margin,
    )


def plan_site(
    state: SiteState,
    policy: PeakPolicy,
    tariff: Tariff,
    now: float,
    *,
    directive: FleetDirective | None = None,
) -> Decision:
    """The battery mode for `state` at `now` (Unix seconds). See the module doc for the rules."""
    reserve = site_reserve_soc(state, policy)
    soc = state.soc_pct

    def auto(code: str, reason: str, verdict: Verdict | None = None) -> Decision:
        return Decision(BatteryMode.AUTO, code, reason, reserve, verdict=verdict)

    def charge(code: str, reason: str, target: float, limit: float) -> Decision:
        return Decision(
            BatteryMode.CHARGE, code, reason, reserve, charge_limit_w=limit, target_soc=target
        )

    def above_reserve(floor: float = reserve) -> bool:
        margin = 0.0 if state.mode is BatteryMode.PEAK_SHAVE else policy.start_margin_pct
        return soc > floor + margin

    if not policy.enabled:
        return auto("disabled", "peak shaving is disabled for this site")
    if not state.mains_present:
        return auto("mains_absent", "mains absent: the battery is carrying the site")

    unstable = state.outages_recent >= policy.outage_threshold
    if state.outage_forecast or unstable:
        why = (
            "outage forecast"
            if state.outage_forecast
            else f"{state.outages_recent} mains outages in the last "
            f"{policy.instability_window_h:g} h"
        )
        short = policy.recovery_soc - (
            0.0 if state.mode is BatteryMode.CHARGE else policy.charge_hysteresis_pct
        )
        if soc < short and charge_limit_w(state, policy) > 0:
            return charge(
                "unstable",
                f"{why}: recharge to {policy.recovery_soc:g} %",
                policy.recovery_soc,
                charge_limit_w(state, policy),
            )
        return auto("unstable", f"{why}: battery full, held in auto")

    if directive is not None and directive.discharge_w > 0:
        if not above_reserve():
            return auto(
                "at_reserve",
                f"demand response asks {directive.discharge_w:.0f} W but SOC {soc:.1f} % "
                f"is at the reserve {reserve:.1f} %",
            )
        limit = discharge_limit_w(state, policy, directive.discharge_w)
        if limit > 0:
            return Decision(
                BatteryMode.PEAK_SHAVE,
                "demand_response",
                f"demand response: discharge {limit:.0f} W above reserve {reserve:.1f} %",
                reserve,
                discharge_limit_w=limit,
            )

    verdict = day_verdict(state, policy, tariff, now)
    if not verdict.worth:
        return auto("uneconomic", f"cycling does not pay: {verdict.reason}", verdict)

    period = tariff.period_at(now)

    def hold(code: str, reason: str) -> Decision:
        return Decision(
            BatteryMode.HOLD,
            code,
            reason,
            reserve,
            charge_limit_w=HOLD_CHARGE_W,
            target_soc=hold_target(soc),
            verdict=verdict,
        )

    def restore_or_hold(floor: float, target: float, code: str, reason: str) -> Decision:
        """Below `floor` (or already restoring and short of `target`): restore to `target` at
        the limited restore rate — the backup first. Otherwise hold where it is."""
        # A fleet stagger slot still to come (after a DR event, in the valley) is a bounded wait
        # under the fleet's ceiling: the pack waits at its reserve (the backup is intact there)
        # rather than restoring the margin outside the ceiling; once the slot starts the
        # restore runs at no more than the slot's power.
        slot = directive if directive is not None and directive.charge_not_before else None
        waiting = slot is not None and now < (slot.charge_not_before or 0.0)
        if waiting:
            floor = min(floor, max(0.0, reserve - RESERVE_TOLERANCE_PCT))
        restoring = state.mode is BatteryMode.CHARGE and soc < target and not waiting
        if soc < floor or restoring:
            limit = restore_limit_w(state, policy)
            if slot is not None and not waiting and slot.charge_limit_w:
                limit = min(limit, slot.charge_limit_w)
            if limit <= 0:
                return auto("no_charge", f"{period.value}: the battery accepts no charge now")
            return charge(
                "restore",
                f"{period.value}: SOC {soc:.1f} % is under {floor:.1f} % (reserve "
                f"{reserve:.1f} %): restore to {target:.1f} % at {limit:.0f} W",
                target,
                limit,
            )
        return hold(code, reason)

    def hold_floor() -> tuple[float, float]:
        """Outside the peaks a hold keeps `hold_margin_pct` above the reserve."""
        floor = min(100.0, reserve + policy.hold_margin_pct)
        return floor, min(100.0, floor + policy.charge_hysteresis_pct)

    if period in policy.shave_periods:
        # Shaving stops where the pack can still be held until the valley (reserve + hold
        # margin, + the tolerance for a round's overshoot), so a shaved pack does not have to
        # be restored, all at once across the fleet, when the peak ends. Not shaving in a peak:
        # hold (auto would float-charge at the peak price); restore only if the backup is short
        # (the load rose under a held pack).
        stop = reserve
        if policy.hold_until_valley:
            stop = min(100.0, reserve + policy.shave_stop_margin_pct + RESERVE_TOLERANCE_PCT)
        at_floor = max(0.0, reserve - RESERVE_TOLERANCE_PCT)
        at_target = min(100.0, reserve + RESERVE_TOLERANCE_PCT)
        if not above_reserve(stop):
            return restore_or_hold(
                at_floor,
                at_target,
                "at_reserve",
                f"{period.value}: SOC {soc:.1f} % is at the shaving floor {stop:.1f} % (reserve "
                f"{reserve:.1f} %: {policy.backup_hours:g} h of {state.load_w:.0f} W + "
                f"{policy.floor_pct:g} %): held",
            )
        limit = discharge_limit_w(state, policy)
        if limit <= 0:
            return restore_or_hold(
                at_floor,
                at_target,
                "no_load",
                f"{period.value}: nothing to shave (load or limit is 0): held",
            )
        return Decision(
            BatteryMode.PEAK_SHAVE,
            "shave",
            f"{period.value}: discharge {limit:.0f} W, stop at {stop:.1f} % (reserve "
            f"{reserve:.1f} %)",
            reserve,
            discharge_limit_w=limit,
            verdict=verdict,
        )

    if period is Period.VALLEY:
        target = max(policy.target_soc, min(100.0, reserve))
        charging = state.mode is BatteryMode.CHARGE
        needs = soc < target if charging else soc < target - policy.charge_hysteresis_pct
        if not needs:
            return auto("charged", f"valley: SOC {soc:.1f} % is at target {target:g} %", verdict)
        limit = charge_limit_w(state, policy)
        if limit <= 0:
            return auto("no_charge", "valley: the battery accepts no charge now", verdict)
        if directive is not None:
            if directive.charge_not_before is not None and now < directive.charge_not_before:
                wait = directive.charge_not_before - now
                floor, restore_to = hold_floor()
                return restore_or_hold(
                    floor,
                    restore_to,
                    "staggered",
                    f"valley: recharge held {wait:.0f} s by the fleet stagger",
                )
            if directive.charge_limit_w is not None and directive.charge_limit_w > 0:
                limit = min(limit, directive.charge_limit_w)
        return charge(
            "recharge",
            f"valley: recharge to {target:g} % at {limit:.0f} W",
            target,
            limit,
        )

    short = soc < policy.target_soc - policy.charge_hysteresis_pct
    if policy.hold_until_valley and short and Period.VALLEY in tariff.day_prices(now):
        floor, restore_to = hold_floor()
        return restore_or_hold(
            floor,
            restore_to,
            "hold",
            f"{period.value}: SOC {soc:.1f} % held until the valley (recharge there, "
            f"staggered; reserve {reserve:.1f} % + {policy.hold_margin_pct:g} %)",
        )
    return auto("idle", f"{period.value}: battery in auto (charged, or no valley ahead)", verdict)


__all__ = [
    "HOLD_CHARGE_W",
    "RESERVE_TOLERANCE_PCT",
    "BatteryMode",
    "Decision",
    "FleetDirective",
    "PeakPolicy",
    "SiteState",
    "charge_limit_w",
    "day_verdict",
    "discharge_limit_w",
    "hold_target",
    "plan_site",
    "restore_limit_w",
    "site_reserve_soc",
]
