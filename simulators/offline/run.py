"""A fleet under one policy on one stepped clock: control rounds, the valley recharge stagger."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from protocols.control.fleet import (
    ImportHistory,
    RechargeNeed,
    RechargePlan,
    RechargeSlot,
    stagger,
    valley_ceiling,
)
from protocols.control.peak import charge_limit_w
from protocols.control.tariff import Period, Segment, Tariff, valley_start
from simulators.offline.site import OfflineSite

DEFAULT_INTERVAL_S = 60.0
"""Control interval: the aggregator's `[control] interval_s` default."""
VALLEY_FILL = 0.8
"""A valley recharge stagger finishes within this share of the valley (aggregator default)."""
VALLEY_PEAK_FRACTION = 0.9
"""Night import + recharge stays under this part of the day's fleet peak (aggregator default)."""
RECTIFIER_EFFICIENCY = 0.95


@dataclass
class OfflineRun:
    """Every site of a scenario under one policy (or none), on one stepped clock."""

    name: str
    sites: list[OfflineSite]
    plans: dict[str, RechargePlan] = field(default_factory=dict)
    fleet_peak_w: float = 0.0
    history: ImportHistory = field(default_factory=ImportHistory)
    idle_w: float | None = None  # the fleet's battery-idle import over the last interval
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
        recharge (`fleet.stagger`) under `fleet.valley_ceiling`: their energy spread over the
        valley, lowered to the headroom under the fleet's day peak (as the aggregator does)."""
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
            planned = sum(p.max_power_from(now) for p in self.plans.values())
            ceiling = valley_ceiling(
                needs,
                (ends[key] - now) / 3600.0,
                fill=VALLEY_FILL,
                peak_w=self.history.peak_w(now),
                night_w=self.idle_w,
                planned_w=planned,
                peak_fraction=VALLEY_PEAK_FRACTION,
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
            fleet_w = idle_w = 0.0
            for s in self.sites:
                s.advance(nxt, step)
                if s.intervals:
                    iv = s.intervals[-1]
                    fleet_w += iv.grid_w
                    idle_w += max(0.0, iv.grid_w - iv.battery_w / RECTIFIER_EFFICIENCY)
            self.fleet_peak_w = max(self.fleet_peak_w, fleet_w)
            self.idle_w = idle_w
            self.history = self.history.add(nxt, idle_w)
            t = nxt
            if progress is not None:
                progress((t - start) / (end - start))


__all__ = [
    "DEFAULT_INTERVAL_S",
    "VALLEY_FILL",
    "VALLEY_PEAK_FRACTION",
    "OfflineRun",
]
