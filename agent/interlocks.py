"""The interlocks: what the agent refuses and what it undoes by itself, whatever it is told.

DESIGN.md "Interlocks": never discharge below the reserve SOC that keeps `backup_hours` of the
present load (and stop an ongoing discharge when it is reached); never open a critical breaker
channel; leave dormant mode at once on mains failure, high room temperature, a load rise on the
coverage channels, or the end of its window; keep AC setpoints inside the configured bounds and
never turn cooling off above the room-temperature limit.

Two rules of dormant mode are the agent's own reading of that contract:

- *Load rise* is measured against the coverage load once the site has settled into dormancy,
  not against the load before the capacity channels opened: the anchor/coverage cells take over
  the capacity layer's traffic, so the coverage load rises by itself on entry (on a site with a
  large capacity layer, by more than the limit: the entry would wake itself). The baseline is the
  first coverage reading taken `dormant_settle_s` or more after the channels were seen open;
  until then the rise rule waits (the other exits do not).
- *Blind dormancy* is not allowed: when an input a dormant exit depends on (room temperature,
  mains present, coverage load — those the site has devices for) has had no good reading for
  the readings' maximum age, the site leaves dormant mode (`inputs_unknown`), as a discharge
  stops when its SOC is unknown.

Pure: a `SiteView` (the latest readings, summarised) and the site's facts in, a `Verdict` or a
list of forced actions out. The reserve is `protocols.control.reserve.reserve_soc`, the very
function the aggregator's planner uses, so the two can never disagree about where it is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from agent.config import InterlocksConfig
from protocols.control.reserve import reserve_soc
from protocols.messages import (
    AcSetpoint,
    BatteryAuto,
    BreakerSet,
    Charge,
    Dormant,
    Params,
    PeakShave,
    RectifierEco,
    Wake,
)

ChannelRef = tuple[str, int]
"""(breaker device id, channel number on that device)."""

BATTERY_AUTO, BATTERY_CHARGE, BATTERY_DISCHARGE = 0, 1, 2
"""The canonical battery `mode` values (protocols/points.py)."""


@dataclass(frozen=True, slots=True)
class ChannelMap:
    """Site channel numbers (what commands carry) ↔ (breaker device, channel on it).

    Breakers are numbered in config order: the first breaker's channels are 1…n, the second's
    follow. With the usual single breaker, site channel N is the breaker's channel N.
    """

    channels: tuple[ChannelRef, ...] = ()

    @classmethod
    def build(cls, breakers: Iterable[tuple[str, int]]) -> ChannelMap:
        """From (breaker device id, channel count) in config order."""
        return cls(tuple((dev, n) for dev, count in breakers for n in range(1, count + 1)))

    def resolve(self, site_channel: int) -> ChannelRef | None:
        if 1 <= site_channel <= len(self.channels):
            return self.channels[site_channel - 1]
        return None

    def number(self, ref: ChannelRef) -> int:
        return self.channels.index(ref) + 1


@dataclass(frozen=True, slots=True)
class SiteFacts:
    """The interlock config with channel groups resolved to (device, channel) sets."""

    limits: InterlocksConfig
    channels: ChannelMap
    critical: frozenset[ChannelRef]
    coverage: frozenset[ChannelRef]
    capacity: frozenset[ChannelRef]
    has_battery: bool = True
    has_aircon: bool = True
    has_rectifier: bool = True
    has_mains: bool = True
    """Whether a meter reports `mains_present` (else an unknown mains state is no news)."""

    @classmethod
    def build(
        cls,
        limits: InterlocksConfig,
        channels: ChannelMap,
        *,
        has_battery: bool = True,
        has_aircon: bool = True,
        has_rectifier: bool = True,
        has_mains: bool = True,
    ) -> SiteFacts:
        def refs(m: Mapping[str, Sequence[int]]) -> frozenset[ChannelRef]:
            return frozenset((dev, n) for dev, chans in m.items() for n in chans)

        return cls(
            limits,
            channels,
            refs(limits.critical_channels),
            refs(limits.coverage_channels),
            refs(limits.capacity_channels),
            has_battery,
            has_aircon,
            has_rectifier,
            has_mains,
        )


@dataclass(frozen=True, slots=True)
class SiteView:
    """What the interlocks need to know about the site now; None = no trustworthy reading.

    `soc_age_s`: how old the SOC reading is (the interlocks accept the last good reading of a
    point up to a maximum age, so one lost poll does not blind them); the reserve is raised by
    what the present load could have drawn from the battery in that time.
    """

    now: float
    soc: float | None = None
    soc_age_s: float = 0.0
    soh: float | None = None
    load_w: float | None = None
    battery_mode: int | None = None
    battery_current: float | None = None
    mains_present: bool | None = None
    room_temp_c: float | None = None
    ac_setpoint_c: float | None = None
    coverage_load_w: float | None = None
    coverage_t_ms: int | None = None
    """When the oldest reading summed in `coverage_load_w` was taken (ms)."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """Allowed, or refused with a short `reason` code (sent in the ack) and a sentence."""

    allowed: bool
    reason: str = ""
    detail: str = ""


ALLOW = Verdict(True)


def _no(reason: str, detail: str) -> Verdict:
    return Verdict(False, reason, detail)


def reserve_of(view: SiteView, facts: SiteFacts) -> float | None:
    """The reserve SOC (%) for the present load, or None if it cannot be known.

    Compared with a SOC read `soc_age_s` ago, the reserve covers that time too: the battery
    may have carried the present load since (a worst case; it is seconds at most).
    """
    lim = facts.limits
    if view.load_w is None or lim.battery_capacity_wh is None:
        return None
    soh = view.soh if view.soh is not None and 0 < view.soh <= 100 else 100.0
    return reserve_soc(
        view.load_w,
        lim.battery_capacity_wh,
        backup_hours=lim.backup_hours + max(0.0, view.soc_age_s) / 3600.0,
        floor_pct=lim.reserve_floor_pct,
        efficiency=lim.discharge_efficiency,
        soh_pct=soh,
    )


def check(params: Params, view: SiteView, facts: SiteFacts) -> Verdict:
    """May this command run now? Checked before anything is written."""
    lim = facts.limits
    match params:
        case PeakShave():
            if not facts.has_battery:
                return _no("no_device", "the site has no controllable battery")
            if view.mains_present is False:
                return _no("mains_failure", "mains failed: the battery is the backup now")
            if view.soc is None:
                return _no("soc_unknown", "no good SOC reading: cannot check the reserve")
            reserve = reserve_of(view, facts)
            if reserve is None:
                return _no("load_unknown", "no good load reading: cannot compute the reserve")
            if view.soc <= reserve:
                return _no(
                    "below_reserve",
                    f"SOC {view.soc:.1f} % is at or below the reserve {reserve:.1f} % "
                    f"({lim.backup_hours:g} h of {view.load_w:.0f} W)",
                )
            return ALLOW
        case Charge():
            if not facts.has_battery:
                return _no("no_device", "the site has no controllable battery")
            return ALLOW
        case Dormant(channels=chans, until=until):
            return _check_dormant(chans, until, view, facts)
        case BreakerSet(channel=n, closed=closed):
            ref = facts.channels.resolve(n)
            if ref is None:
                return _no("unknown_channel", f"site has no breaker channel {n}")
            if not closed and ref in facts.critical:
                return _no("critical_channel", f"channel {n} ({ref[0]} ch{ref[1]}) is critical")
            return ALLOW
        case AcSetpoint(setpoint_c=sp):
            if not facts.has_aircon:
                return _no("no_device", "the site has no controllable air-conditioner")
            if not lim.ac_setpoint_min_c <= sp <= lim.ac_setpoint_max_c:
                return _no(
                    "ac_bounds",
                    f"setpoint {sp:g} °C outside "
                    f"{lim.ac_setpoint_min_c:g}..{lim.ac_setpoint_max_c:g}",
                )
            if sp > lim.ac_default_setpoint_c and view.room_temp_c is None:
                return _no("temp_unknown", "no good room temperature: cooling is not relaxed")
            hot = view.room_temp_c is not None and view.room_temp_c >= lim.room_temp_limit_c
            if hot and sp > lim.ac_default_setpoint_c:
                return _no(
                    "room_hot",
                    f"room {view.room_temp_c:.1f} °C ≥ {lim.room_temp_limit_c:g} °C: "
                    "cooling is not relaxed",
                )
            return ALLOW
        case RectifierEco(enabled=on):
            if not facts.has_rectifier:
                return _no("no_device", "the site has no controllable rectifier")
            if on and view.mains_present is False:
                return _no("mains_failure", "ECO is never entered on mains failure")
            return ALLOW
        case BatteryAuto() | Wake():
            return ALLOW
    return _no("unknown_action", f"no interlock rule for {type(params).__name__}")


def _check_dormant(
    chans: Sequence[int], until: int | None, view: SiteView, facts: SiteFacts
) -> Verdict:
    lim = facts.limits
    for n in chans:
        ref = facts.channels.resolve(n)
        if ref is None:
            return _no("unknown_channel", f"site has no breaker channel {n}")
        if ref in facts.critical:
            return _no("critical_channel", f"channel {n} ({ref[0]} ch{ref[1]}) is critical")
        if ref in facts.coverage:
            return _no("coverage_channel", f"channel {n} feeds the coverage layer")
        if ref not in facts.capacity:
            return _no("not_capacity", f"channel {n} is not a configured capacity channel")
    if view.mains_present is False:
        return _no("mains_failure", "mains failed: no dormant mode")
    if view.room_temp_c is None:
        return _no("temp_unknown", "no good room temperature reading")
    if view.room_temp_c >= lim.room_temp_limit_c:
        return _no("room_hot", f"room {view.room_temp_c:.1f} °C ≥ {lim.room_temp_limit_c:g} °C")
    if until is not None and until <= view.now * 1000:
        return _no("window_over", "the dormant window has already ended")
    return ALLOW


def dormant_setpoint(view: SiteView, facts: SiteFacts, offset_c: float) -> float:
    """The AC setpoint in dormant mode: raised by the offset, never above the upper bound."""
    lim = facts.limits
    base = view.ac_setpoint_c if view.ac_setpoint_c is not None else lim.ac_default_setpoint_c
    return max(lim.ac_setpoint_min_c, min(lim.ac_setpoint_max_c, base + offset_c))


@dataclass(frozen=True, slots=True)
class DormantHold:
    """What the agent remembers while the site is dormant, to know when to leave at once.

    `coverage_at_entry_w` is the load-rise baseline: None while the site settles (until
    `settle_until_ms`, then the first coverage reading taken at or after it; see `settle`).
    """

    until_ms: int | None
    coverage_at_entry_w: float | None
    channels: tuple[int, ...] = ()
    settle_until_ms: int | None = None

    @property
    def settling(self) -> bool:
        return self.settle_until_ms is not None


def settle(hold: DormantHold, view: SiteView) -> DormantHold | None:
    """The hold with its load-rise baseline taken, once a coverage reading taken after the
    settle time is at hand; None while there is nothing to change."""
    if hold.settle_until_ms is None or view.coverage_load_w is None:
        return None
    if view.coverage_t_ms is None or view.coverage_t_ms < hold.settle_until_ms:
        return None
    return replace(hold, coverage_at_entry_w=view.coverage_load_w, settle_until_ms=None)


@dataclass(frozen=True, slots=True)
class Forced:
    """An action the agent takes on its own: `params` to apply, and why (`reason` code)."""

    params: Params
    reason: str
    detail: str


def watch(
    view: SiteView,
    facts: SiteFacts,
    *,
    discharging: bool,
    dormant: DormantHold | None,
    warm: bool = True,
) -> list[Forced]:
    """What the agent must undo now, whatever the aggregator said.

    `discharging`: a peak-shave is in force (or the battery reports discharge mode). `warm`:
    the agent has been running for the readings' maximum age, so a missing reading means a
    silent device, not one not polled yet (no `inputs_unknown` exit before that).
    """
    out: list[Forced] = []
    if discharging:
        reserve = reserve_of(view, facts)
        if view.mains_present is False:
            pass  # the plant discharges anyway; stay in whatever the BMS does on an outage
        elif view.soc is None or reserve is None:
            out.append(Forced(BatteryAuto(), "soc_unknown", "SOC or load unknown during discharge"))
        elif view.soc <= reserve:
            out.append(
                Forced(
                    BatteryAuto(),
                    "reserve_reached",
                    f"SOC {view.soc:.1f} % reached the reserve {reserve:.1f} %",
                )
            )
    if dormant is not None:
        reason = _wake_reason(view, facts, dormant, warm=warm)
        if reason is not None:
            out.append(Forced(Wake(), reason[0], reason[1]))
    return out


def _wake_reason(
    view: SiteView, facts: SiteFacts, hold: DormantHold, *, warm: bool
) -> tuple[str, str] | None:
    lim = facts.limits
    if view.mains_present is False:
        return "mains_failure", "mains failed during dormant mode"
    if view.room_temp_c is not None and view.room_temp_c >= lim.room_temp_limit_c:
        return "room_hot", f"room {view.room_temp_c:.1f} °C ≥ {lim.room_temp_limit_c:g} °C"
    if hold.until_ms is not None and view.now * 1000 >= hold.until_ms:
        return "window_end", "the dormant window ended"
    unknown = [
        name
        for name, missing in (
            ("room temperature", facts.has_aircon and view.room_temp_c is None),
            ("mains state", facts.has_mains and view.mains_present is None),
            ("coverage load", bool(facts.coverage) and view.coverage_load_w is None),
        )
        if missing
    ]
    if unknown and warm:
        return "inputs_unknown", f"no good reading of the {', '.join(unknown)}"
    if hold.settling:
        return None
    base, now_w = hold.coverage_at_entry_w, view.coverage_load_w
    if base is not None and now_w is not None and base > 0:
        rise = 100.0 * (now_w - base) / base
        if rise > lim.dormant_load_rise_pct:
            return (
                "load_rise",
                f"coverage load {now_w:.0f} W is {rise:.0f} % above {base:.0f} W once settled",
            )
    return None


__all__ = [
    "ALLOW",
    "BATTERY_AUTO",
    "BATTERY_CHARGE",
    "BATTERY_DISCHARGE",
    "ChannelMap",
    "ChannelRef",
    "DormantHold",
    "Forced",
    "SiteFacts",
    "SiteView",
    "Verdict",
    "check",
    "dormant_setpoint",
    "reserve_of",
    "settle",
    "watch",
]
