"""Fleet demand response: share a grid-import cap among sites, then stagger the recharge.

`allocate` answers "the fleet (or a region) must draw at most X kW from t1 to t2": the reduction
needed is the sites' import with batteries idle minus the cap; it is shared in proportion to
each site's energy above its reserve, no site asked for more than it can hold for the whole
event (min of its battery discharge limit, its load — sites do not export — and its energy above
reserve spread over the event's duration). What one site cannot take is redistributed to the
others (water-filling); what nobody can take is reported as the shortfall.

`stagger` answers "these sites must recharge from t0 without making a new peak": it gives each
site a start time and a charge power so that the sum of the charge powers never exceeds the
ceiling, first come first served in a stable order (largest need first), each site at its own
rate limit, later sites starting as earlier ones finish.

`valley_ceiling` answers "how much may the fleet charge at once in this valley": the energy
spread over the valley (× `fill`), lowered so that the fleet's night import plus the recharge
stays under a fraction of its day peak (`ImportHistory`: the fleet's battery-idle import, the
highest per hour over the last day) — a valley recharge must not become the fleet's new peak.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from protocols.control.errors import ControlError

_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class DrSite:
    """A site's capacity to help. `import_w`: its grid import with the battery idle (≈ load)."""

    site: str
    load_w: float
    energy_above_reserve_wh: float
    max_discharge_w: float
    import_w: float | None = None

    @property
    def baseline_import_w(self) -> float:
        return self.load_w if self.import_w is None else self.import_w

    def capability_w(self, duration_s: float) -> float:
        """The most this site can shed, held for the whole event."""
        hours = duration_s / 3600.0
        by_energy = self.energy_above_reserve_wh / hours if hours > 0 else math.inf
        return max(0.0, min(self.max_discharge_w, self.load_w, by_energy))


@dataclass(frozen=True, slots=True)
class Allocation:
    """Per-site discharge (W) for the event, with the totals."""

    shares: dict[str, float]
    required_w: float  # reduction needed to meet the cap
    allocated_w: float
    shortfall_w: float  # required − allocated (0 when feasible)
    baseline_w: float  # fleet import with batteries idle
    cap_w: float

    @property
    def feasible(self) -> bool:
        return self.shortfall_w <= 1e-6

    @property
    def expected_import_w(self) -> float:
        return self.baseline_w - self.allocated_w


def allocate(sites: Sequence[DrSite], cap_w: float, duration_s: float) -> Allocation:
    """Share the reduction that brings the fleet's import under `cap_w` for `duration_s`."""
    if duration_s <= 0:
        raise ControlError(f"event duration must be > 0 s, got {duration_s}")
    names = [s.site for s in sites]
    if len(set(names)) != len(names):
        raise ControlError("duplicate site in a demand-response allocation")
    baseline = sum(max(0.0, s.baseline_import_w) for s in sites)
    required = max(0.0, baseline - cap_w)
    caps = {s.site: s.capability_w(duration_s) for s in sites}
    weights = {s.site: max(0.0, s.energy_above_reserve_wh) for s in sites}
    shares = dict.fromkeys(names, 0.0)
    remaining = required
    active = [n for n in names if caps[n] > _EPS and weights[n] > _EPS]
    while remaining > _EPS and active:
        total_w = sum(weights[n] for n in active)
        saturated: list[str] = []
        for n in active:
            offer = remaining * weights[n] / total_w
            room = caps[n] - shares[n]
            if offer >= room - _EPS:
                saturated.append(n)
        if saturated:
            # Fill the saturated sites to their limit, then share what is left among the rest.
            for n in saturated:
                remaining -= caps[n] - shares[n]
                shares[n] = caps[n]
            active = [n for n in active if n not in saturated]
            continue
        for n in active:
            shares[n] += remaining * weights[n] / total_w
        remaining = 0.0
    allocated = sum(shares.values())
    return Allocation(
        shares=shares,
        required_w=required,
        allocated_w=allocated,
        shortfall_w=max(0.0, required - allocated),
        baseline_w=baseline,
        cap_w=cap_w,
    )


@dataclass(frozen=True, slots=True)
class RechargeNeed:
    """Energy a site must put back (Wh, at the battery) and its charge rate limit (W)."""

    site: str
    energy_wh: float
    max_charge_w: float


@dataclass(frozen=True, slots=True)
class RechargeSlot:
    site: str
    start: float  # Unix seconds
    end: float
    charge_w: float


@dataclass(frozen=True, slots=True)
class RechargePlan:
    slots: tuple[RechargeSlot, ...]
    ceiling_w: float
    finish: float  # when the last site is done
    late: tuple[str, ...]  # sites finishing after the deadline (if one was given)

    def power_at(self, t: float) -> float:
        """Total planned charge power at `t`."""
        return sum(s.charge_w for s in self.slots if s.start <= t < s.end)

    def slot_for(self, site: str) -> RechargeSlot | None:
        return next((s for s in self.slots if s.site == site), None)

    def max_power_from(self, t: float) -> float:
        """The highest total charge power this plan asks for at or after `t`."""
        starts = [t, *(s.start for s in self.slots if s.start > t)]
        return max(self.power_at(u) for u in starts)


def stagger(
    needs: Sequence[RechargeNeed],
    start: float,
    ceiling_w: float,
    *,
    deadline: float | None = None,
) -> RechargePlan:
    """Start times and charge powers keeping the fleet's total recharge under `ceiling_w`."""
    if ceiling_w <= 0:
        raise ControlError(f"recharge ceiling must be > 0 W, got {ceiling_w}")
    queue = sorted(
        (n for n in needs if n.energy_wh > _EPS and n.max_charge_w > _EPS),
        key=lambda n: (-n.energy_wh, n.site),
    )
    running: list[RechargeSlot] = []
    slots: list[RechargeSlot] = []
    t = start
    for need in queue:
        power = min(need.max_charge_w, ceiling_w)
        while True:
            running = [s for s in running if s.end > t + _EPS]
            used = sum(s.charge_w for s in running)
            if used + power <= ceiling_w + _EPS:
                break
            t = min(s.end for s in running)  # wait for the next site to finish
        slot = RechargeSlot(need.site, t, t + need.energy_wh / power * 3600.0, power)
        running.append(slot)
        slots.append(slot)
    finish = max((s.end for s in slots), default=start)
    late = tuple(s.site for s in slots if deadline is not None and s.end > deadline + _EPS)
    return RechargePlan(tuple(slots), ceiling_w, finish, late)


DAY_S = 86_400.0
MIN_HISTORY_H = 20.0
"""A day-peak reference needs this much history (a loop started at 21:00 knows only the night)."""


@dataclass(frozen=True, slots=True)
class ImportHistory:
    """The fleet's grid import with batteries idle (what the no-action fleet would draw), its
    highest value per hour over the last day: the reference a night recharge must stay under."""

    hours: tuple[tuple[float, float], ...] = ()  # (hour start, highest W), oldest first

    def add(self, t: float, import_w: float) -> ImportHistory:
        hour = math.floor(t / 3600.0) * 3600.0
        kept = tuple((h, w) for h, w in self.hours if h > t - DAY_S)
        if kept and kept[-1][0] == hour:
            return ImportHistory((*kept[:-1], (hour, max(kept[-1][1], import_w))))
        return ImportHistory((*kept, (hour, import_w)))

    def peak_w(self, now: float) -> float | None:
        """The highest hour of the last day, once the history spans `MIN_HISTORY_H` hours."""
        kept = [(h, w) for h, w in self.hours if h > now - DAY_S]
        if not kept or now - kept[0][0] < MIN_HISTORY_H * 3600.0:
            return None
        return max(w for _, w in kept)


def valley_ceiling(
    needs: Sequence[RechargeNeed],
    hours: float,
    *,
    fill: float = 0.8,
    peak_w: float | None = None,
    night_w: float | None = None,
    planned_w: float = 0.0,
    peak_fraction: float = 0.9,
) -> float:
    """The fleet's charge ceiling for a valley recharge starting now, `hours` before its end.

    Spread: the total energy over `fill` of the valley, never below the largest site's rate.
    With the fleet's day peak (`peak_w`, battery idle) and its import now (`night_w`, battery
    idle) known, the ceiling is lowered to the headroom `peak_fraction` × peak − night −
    `planned_w` (charge already planned by other valleys' staggers), so the night's import plus
    the recharge stays under the day's peak — but never below the power that still finishes
    inside the valley (total energy / hours): after the valley the planner holds the packs until
    the next one, so a recharge cut shorter would leave them short for the next day's peaks.
    """
    if not needs:
        return 1.0
    hours = max(hours, 1e-6)
    total = sum(n.energy_wh for n in needs)
    spread = max(max(n.max_charge_w for n in needs), total / (hours * fill))
    if peak_w is None or night_w is None:
        return spread
    headroom = peak_fraction * peak_w - night_w - planned_w
    return max(1.0, min(spread, max(headroom, total / hours)))


__all__ = [
    "DAY_S",
    "MIN_HISTORY_H",
    "Allocation",
    "DrSite",
    "ImportHistory",
    "RechargeNeed",
    "RechargePlan",
    "RechargeSlot",
    "allocate",
    "stagger",
    "valley_ceiling",
]
