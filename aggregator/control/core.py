"""The control loop's pure core: fleet snapshot + events + memory + now → commands to send.

`plan_round` runs the planners for every site (`plan_site`, `plan_dormant`, the demand-response
`allocate` and the recharge `stagger`) and reconciles what each site should be doing with what
it was last told, per lease key (`battery`, `dormant`):

- **send only changes**: a command goes out when the wanted action differs from the last one
  sent, or its powers differ by more than the tolerance (both `power_tolerance_w` and
  `power_tolerance_pct`), or its SOC target by a point or more;
- **renew** a command that holds a lease (peak shave, charge, dormant) once `renew_fraction` of
  its lease has passed, so it never lapses while wanted; the safe defaults (battery auto, wake)
  hold no lease and are never renewed;
- **track acks**: a command rejected or failed by the agent, or not acknowledged within
  `ack_timeout_s`, is a failure; it is retried after a backoff that doubles from `retry_base_s`
  up to `retry_max_s`; `max_failures` in a row raise `control_not_followed`, the next applied
  command clears it. A return to the safe default is never held back by the backoff;
- **hold and stagger**: the planner holds a shaved pack until the valley (`BatteryMode.HOLD`,
  sent as `battery.charge` to its present SOC, because `battery.auto` would let the plant
  float-charge at full rate: the rebound peak). The recharge after a demand-response event, and
  at every valley start, is staggered so the fleet makes no rebound peak: a site whose slot has
  not come is held; once its slot starts it charges at the slot's power. The valley's ceiling
  keeps the fleet's night import plus the recharge under `valley_peak_fraction` of its day peak
  (`fleet.valley_ceiling`, from the fleet's battery-idle import over the last day).

Nothing here reads a clock or does I/O; the shell (`aggregator.control.loop`) assembles the
inputs, sends the intents and feeds back what happened (`bind_sent`, `mark_send_failed`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from aggregator.control.events import DrEvent
from aggregator.control.inputs import SiteInputs
from aggregator.control.settings import ControlSettings
from protocols.control.dormant import (
    ChannelRole,
    DormantMode,
    DormantState,
    after_decision,
    capacity_threshold_w,
    plan_dormant,
)
from protocols.control.dormant import track_low as _track_low
from protocols.control.fleet import (
    DrSite,
    ImportHistory,
    RechargeNeed,
    RechargePlan,
    RechargeSlot,
    allocate,
    stagger,
    valley_ceiling,
)
from protocols.control.peak import (
    HOLD_CHARGE_W,
    BatteryMode,
    Decision,
    FleetDirective,
    SiteState,
    hold_target,
    plan_site,
)
from protocols.control.peak import charge_limit_w as _charge_limit_w
from protocols.control.reserve import dispatchable_wh
from protocols.control.tariff import Period, valley_start
from protocols.messages import Action, BatteryAuto, Charge, Params, Wake

BATTERY_KEY = "battery"
DORMANT_KEY = "dormant"
KEYS = (BATTERY_KEY, DORMANT_KEY)
DEFAULT_ACTIONS = {BATTERY_KEY: Action.BATTERY_AUTO.value, DORMANT_KEY: Action.SITE_WAKE.value}

# Ack statuses as storage records them (aggregator.storage.types.CommandStatus values).
SENT, APPLIED, REJECTED, FAILED, EXPIRED = "sent", "applied", "rejected", "failed", "expired"
_FAILURES = frozenset({REJECTED, FAILED, EXPIRED})
# Auto decisions a DR stagger may turn into a hold or a slot charge (never the safety ones): a
# site the planner leaves in auto (lead-acid, or nearly full) that the plant would float.
_HOLDABLE = frozenset({"idle", "uneconomic"})
DR_RECHARGE_HOURS = 4.0
# A site's import in a DR allocation is the highest of its last rounds (battery idle), so the
# share covers cycling loads (an air-conditioner's compressor) the loop cannot follow.
DR_PEAK_ROUNDS = 10  # spread of a derived post-event recharge ceiling


@dataclass(frozen=True, slots=True)
class Tracked:
    """The last command sent on one lease key, as far as the loop knows."""

    action: str
    params: Mapping[str, Any]
    sent_at: float
    lease_s: int
    command_id: str | None = None
    status: str = SENT
    counted: bool = False  # its failure is already counted

    @property
    def expires_at(self) -> float:
        return self.sent_at + self.lease_s


@dataclass(frozen=True, slots=True)
class KeyMemory:
    last: Tracked | None = None
    failures: int = 0
    retry_at: float | None = None
    last_error: str = ""


@dataclass(frozen=True, slots=True)
class SiteMemory:
    keys: Mapping[str, KeyMemory] = field(default_factory=dict)
    battery_mode: BatteryMode = BatteryMode.AUTO
    dormant: DormantState = field(default_factory=DormantState)
    mains_seen: bool | None = None
    outages: tuple[float, ...] = ()  # when mains was seen to fail (Unix s)
    alarmed: bool = False
    idle_imports: tuple[float, ...] = ()  # battery-idle grid import of the last rounds (W)

    def key(self, name: str) -> KeyMemory:
        return self.keys.get(name, KeyMemory())


@dataclass(frozen=True, slots=True)
class FleetMemory:
    sites: Mapping[str, SiteMemory] = field(default_factory=dict)
    plans: Mapping[str, RechargePlan] = field(default_factory=dict)  # "dr:<id>", "valley:…"
    events_done: frozenset[str] = frozenset()  # events whose recharge has been planned
    history: ImportHistory = field(default_factory=ImportHistory)  # fleet battery-idle import


@dataclass(frozen=True, slots=True)
class Intent:
    """A command the shell should send now."""

    site: str
    key: str
    action: str
    params: Mapping[str, Any]
    lease_s: int
    why: str  # change | renew | retry
    reason: str  # the planner's reason


@dataclass(frozen=True, slots=True)
class AlarmIntent:
    site: str
    active: bool  # True: raise control_not_followed; False: clear it
    message: str


@dataclass(frozen=True, slots=True)
class SiteOutcome:
    """What the planners decided for one site this round (for logs, API and tests)."""

    site: str
    battery: str  # action wanted
    battery_code: str
    dormant: str
    dormant_code: str
    reason: str
    directive: FleetDirective | None = None
    reserve_soc: float | None = None


@dataclass(frozen=True, slots=True)
class Round:
    intents: list[Intent]
    alarms: list[AlarmIntent]
    memory: FleetMemory
    outcomes: dict[str, SiteOutcome]
    skipped: dict[str, str]  # site -> why it was left alone
    allocations: dict[str, float]  # event id -> allocated W


@dataclass(frozen=True, slots=True)
class Ack:
    """A tracked command's status as storage knows it."""

    status: str
    reason: str | None = None


# -- reconciling wanted and sent -----------------------------------------------------------


def same_command(
    a_action: str, a: Mapping[str, Any], b_action: str, b: Mapping[str, Any], s: ControlSettings
) -> bool:
    """Whether two commands are the same for the purpose of "send only changes"."""
    if a_action != b_action or set(a) != set(b):
        return False
    for k, va in a.items():
        vb = b[k]
        if isinstance(va, bool) or not isinstance(va, int | float) or isinstance(vb, bool):
            if va != vb:
                return False
            continue
        if not isinstance(vb, int | float):
            return False
        fa, fb = float(va), float(vb)
        if k.endswith("_w"):
            tol = max(s.power_tolerance_w, abs(fb) * s.power_tolerance_pct / 100.0)
            if abs(fa - fb) > tol:
                return False
        elif k == "until":
            if abs(fa - fb) > 60_000:  # ms: the window end, within a minute
                return False
        elif abs(fa - fb) >= 1.0:  # SOC targets, °C offsets
            return False
    return True


def backoff_s(failures: int, s: ControlSettings) -> float:
    """Delay before the next retry after `failures` failures in a row (≥ 1)."""
    return min(s.retry_max_s, s.retry_base_s * 2.0 ** max(0, failures - 1))


def observe(km: KeyMemory, acks: Mapping[str, Ack], now: float, s: ControlSettings) -> KeyMemory:
    """Fold the latest ack (or its absence) into a key's memory; count a failure once."""
    last = km.last
    if last is None:
        return km
    if last.command_id is not None and last.command_id in acks:
        ack = acks[last.command_id]
        if ack.status != last.status:
            last = replace(last, status=ack.status)
            if ack.status in _FAILURES:
                km = replace(km, last_error=ack.reason or ack.status)
    if last.status == SENT and now - last.sent_at >= s.ack_timeout_s:
        last = replace(last, status=FAILED)
        km = replace(km, last_error=f"no ack within {s.ack_timeout_s:g} s")
    if last.status == APPLIED:
        return replace(km, last=last, failures=0, retry_at=None, last_error="")
    if last.status in _FAILURES and not last.counted:
        failures = km.failures + 1
        last = replace(last, counted=True)
        return replace(km, last=last, failures=failures, retry_at=now + backoff_s(failures, s))
    return replace(km, last=last)


def reconcile(
    key: str,
    want_action: str,
    want: Mapping[str, Any],
    km: KeyMemory,
    now: float,
    s: ControlSettings,
) -> tuple[str | None, KeyMemory]:
    """Whether to send the wanted command now (and why), and the memory once it is sent.

    `km` must already have observed this round's acks.
    """
    last = km.last
    default = want_action == DEFAULT_ACTIONS[key]
    if last is None:
        # Never told anything (or forgotten after a restart with no live lease): the site is
        # at its safe default, so a default is not a change.
        why = None if default else "change"
    elif not same_command(last.action, last.params, want_action, want, s):
        why = "change"
    elif last.status in _FAILURES:
        why = "retry"
    elif default:
        why = None  # defaults hold no lease: nothing to renew
    elif now >= last.sent_at + s.renew_after_s:
        why = "renew"
    else:
        why = None
    if why is None:
        return None, km
    if not default and km.retry_at is not None and now < km.retry_at and why != "renew":
        return None, km  # backing off; a return to default is never held back
    lease = 0 if default else s.lease_s
    sent = Tracked(want_action, dict(want), now, lease or s.lease_s)
    return why, replace(km, last=sent)


# -- demand response and stagger --------------------------------------------------------------


def _members(
    event: DrEvent, fleet: Sequence[SiteInputs], groups: Mapping[str, frozenset[str]]
) -> list[SiteInputs]:
    if event.group is None:
        return list(fleet)
    listed = groups.get(event.group, frozenset())
    return [x for x in fleet if x.region == event.group or x.site in listed]


def dr_site(
    x: SiteInputs, st: SiteState, s: ControlSettings, recent: Sequence[float] = ()
) -> DrSite:
    p = x.policy.peak_shaving
    above = dispatchable_wh(
        st.soc_pct,
        st.load_w,
        st.capacity_wh,
        backup_hours=p.backup_hours,
        floor_pct=p.floor_pct,
        efficiency=p.efficiency,
        soh_pct=st.battery.soh_pct,
    )
    m = x.measured
    baseline = None
    if m.import_w is not None:
        # Import with the battery idle: add back what discharging spares (or charging costs).
        baseline = max(0.0, m.import_w - (m.battery_w or 0.0) / s.rectifier_efficiency)
        baseline = max(baseline, *recent) if recent else baseline
    return DrSite(x.site, st.load_w, max(0.0, above), st.max_discharge_w, baseline)


def recharge_need(x: SiteInputs, st: SiteState, target: float | None = None) -> RechargeNeed | None:
    p = x.policy.peak_shaving
    goal = p.target_soc if target is None else target
    need = (goal - st.soc_pct) / 100.0 * st.capacity_wh * st.battery.soh_pct / 100.0
    rate = _charge_limit_w(st, p)
    if need <= 0 or rate <= 0:
        return None
    return RechargeNeed(x.site, need, rate)


def ceiling_for(
    needs: Sequence[RechargeNeed], hours: float, s: ControlSettings, explicit: float | None = None
) -> float:
    """The fleet's recharge ceiling: given, configured, or spread over `hours` × `valley_fill`
    (never below the largest single site's rate, so every site can run)."""
    if explicit is not None:
        return explicit
    if s.recharge_ceiling_w is not None:
        return s.recharge_ceiling_w
    largest = max((n.max_charge_w for n in needs), default=1.0)
    total = sum(n.energy_wh for n in needs)
    spread = total / max(hours * s.valley_fill, 1e-6)
    return max(largest, spread)


def _slot_of(plans: Mapping[str, RechargePlan], site: str, now: float) -> RechargeSlot | None:
    """The slot from the newest plan holding `site` that has not finished."""
    best: RechargeSlot | None = None
    best_start = -math.inf
    for plan in plans.values():
        slot = plan.slot_for(site)
        if slot is None or slot.end <= now:
            continue
        start = min(sl.start for sl in plan.slots)
        if start > best_start:
            best, best_start = slot, start
    return best


# -- the round -------------------------------------------------------------------------------


def _battery_params(
    d: Decision, st: SiteState, x: SiteInputs, slot: RechargeSlot | None, now: float
) -> tuple[Params, str, str]:
    """The battery command: the planner's, or the stagger's hold / slot charge in its place."""
    p = x.policy.peak_shaving
    if slot is None or d.mode is not BatteryMode.AUTO or d.code not in _HOLDABLE:
        return d.params(), d.code, d.reason
    target = max(p.target_soc, min(100.0, d.reserve_soc))
    hysteresis = p.charge_hysteresis_pct
    if d.code in ("idle", "uneconomic"):
        target, hysteresis = 100.0, 0.5  # auto would float it to full: stagger that too
    if st.soc_pct >= target - hysteresis:
        return d.params(), d.code, d.reason
    if now < slot.start:
        if st.soc_pct <= d.reserve_soc + p.start_margin_pct:
            return d.params(), d.code, d.reason  # near the reserve: recharging beats staggering
        hold = _hold(st)
        return hold, "hold", f"recharge held until the fleet stagger's slot ({slot.start:.0f})"
    if now < slot.end:
        return (
            Charge(charge_limit_w=slot.charge_w, target_soc=target),
            "slot",
            f"staggered recharge to {target:g} % at {slot.charge_w:.0f} W",
        )
    return d.params(), d.code, d.reason


def _may_discharge(x: SiteInputs, st: SiteState) -> bool:
    p = x.policy.peak_shaving
    return p.enabled and not st.outage_forecast and st.outages_recent < p.outage_threshold


HOLD_W = HOLD_CHARGE_W


def _hold(st: SiteState) -> Charge:
    """ "Charge to the SOC you have" at a token rate: holds the battery where it is (auto would
    float-charge it at full rate), as the planner's own `BatteryMode.HOLD` maps to the wire."""
    return Charge(charge_limit_w=HOLD_W, target_soc=hold_target(st.soc_pct))


_SAFETY = frozenset({"disabled", "mains_absent", "unstable"})


def _dr_hold(d: Decision, st: SiteState) -> tuple[Params, str, str] | None:
    """During an event, a site in scope that is not discharging must not charge either (the
    allocation counted it at battery idle): hold it at its SOC — unless a safety rule decided,
    or it is below its reserve (then it recharges)."""
    if d.mode is BatteryMode.PEAK_SHAVE or d.code in _SAFETY:
        return None
    if st.soc_pct < d.reserve_soc - 0.5:
        return None
    return _hold(st), "dr_hold", "demand response: battery held (no charging during the event)"


def plan_round(
    fleet: Sequence[SiteInputs],
    events: Iterable[DrEvent],
    memory: FleetMemory,
    acks: Mapping[str, Ack],
    now: float,
    settings: ControlSettings,
    *,
    groups: Mapping[str, frozenset[str]] | None = None,
) -> Round:
    """One control round for the whole fleet. See the module doc."""
    s = settings
    groups = groups or {}
    sites_mem = dict(memory.sites)
    plans = {k: v for k, v in memory.plans.items() if v.finish > now}
    events_done = set(memory.events_done)
    skipped: dict[str, str] = {}
    intents: list[Intent] = []
    alarms: list[AlarmIntent] = []
    outcomes: dict[str, SiteOutcome] = {}
    allocations: dict[str, float] = {}

    # Outage history first: the planners' "unstable" rule needs it.
    window_s = {x.site: x.policy.peak_shaving.instability_window_h * 3600 for x in fleet}
    idle_now: dict[str, float] = {}  # each site's battery-idle import this round
    for x in fleet:
        sm = sites_mem.get(x.site, SiteMemory())
        mains = x.measured.mains_present
        outages = tuple(t for t in sm.outages if now - t < window_s[x.site])
        if mains is False and sm.mains_seen is not False:
            outages = (*outages, now)
        idle = sm.idle_imports
        imp = x.measured.import_w
        if imp is not None:
            now_idle = max(0.0, imp - (x.measured.battery_w or 0.0) / s.rectifier_efficiency)
            idle = (*idle[-(DR_PEAK_ROUNDS - 1) :], now_idle)
            idle_now[x.site] = now_idle
        sites_mem[x.site] = replace(
            sm,
            outages=outages,
            mains_seen=mains if mains is not None else sm.mains_seen,
            idle_imports=idle,
        )

    # Which sites can be planned at all, and their peak-planner state.
    states: dict[str, SiteState] = {}
    usable: list[SiteInputs] = []
    for x in fleet:
        m = x.measured
        if not x.policy.enabled:
            skipped[x.site] = "control disabled by policy"
        elif not x.online:
            skipped[x.site] = "offline"
        elif m.newest_ms is None or now - m.newest_ms / 1000.0 > s.stale_s:
            skipped[x.site] = "no fresh readings"
        elif x.tariff is None:
            skipped[x.site] = "no tariff"
        else:
            usable.append(x)
            sm = sites_mem[x.site]
            st = x.peak_state(sm.battery_mode, len(sm.outages))
            if st is not None:
                states[x.site] = st

    # Demand response: share each running event's reduction among its sites.
    directives: dict[str, FleetDirective] = {}
    dr_members: set[str] = set()
    for ev in events:
        members = [x for x in _members(ev, usable, groups) if x.site in states]
        if ev.active(now):
            helpers = [
                dr_site(x, states[x.site], s, sites_mem[x.site].idle_imports)
                for x in members
                if states[x.site].mains_present
            ]
            # A site whose planner will not discharge (outage forecast, recent outages) still
            # counts in the fleet's import but takes no share.
            helpers = [
                h if _may_discharge(x, states[x.site]) else replace(h, energy_above_reserve_wh=0)
                for h, x in zip(
                    helpers, [m for m in members if states[m.site].mains_present], strict=True
                )
            ]
            if not helpers:
                continue
            dr_members.update(x.site for x in members)
            target_w = ev.cap_w * (1 - s.dr_margin_pct / 100.0)
            alloc = allocate(helpers, target_w, ev.effective_end - now)
            allocations[ev.id] = alloc.allocated_w
            for site, share in alloc.shares.items():
                if share > 0:
                    prev = directives.get(site)
                    if prev is None or share > prev.discharge_w:
                        directives[site] = FleetDirective(discharge_w=share)
        elif ev.effective_end <= now and ev.id not in events_done and ev.start < now:
            # After an event every member goes back to full (the plant floats it there anyway
            # once in auto), so every one of them is in the stagger.
            needs = [
                n for x in members if (n := recharge_need(x, states[x.site], 100.0)) is not None
            ]
            events_done.add(ev.id)
            if needs:
                ceiling = ceiling_for(needs, DR_RECHARGE_HOURS, s, ev.recharge_ceiling_w)
                plans[f"dr:{ev.id}"] = stagger(needs, now, ceiling)

    # The fleet's battery-idle import (what it would draw without control), per hour of the
    # last day: a valley recharge must not lift the night above the day's peak.
    fleet_idle = sum(idle_now.get(x.site, 0.0) for x in usable)
    history = memory.history.add(now, fleet_idle) if idle_now else memory.history

    # Valley start: one stagger per (tariff, valley) for the sites needing a recharge.
    by_valley: dict[str, list[SiteInputs]] = {}
    valley_end: dict[str, float] = {}
    for x in usable:
        if x.site not in states or x.tariff is None:
            continue
        seg = x.tariff.segment_at(now)
        if seg.period is not Period.VALLEY:
            continue
        start = valley_start(x.tariff, now)
        key = f"valley:{x.tariff.name}:{start:.0f}"
        if key in memory.plans or key in plans:
            continue
        by_valley.setdefault(key, []).append(x)
        valley_end[key] = seg.end
    for key, members in by_valley.items():
        needs = []
        for x in members:
            p = x.policy.peak_shaving
            st = states[x.site]
            if st.soc_pct < p.target_soc - p.charge_hysteresis_pct:
                n = recharge_need(x, st)
                if n is not None:
                    needs.append(n)
        if needs:
            if s.recharge_ceiling_w is not None:
                ceiling = s.recharge_ceiling_w
            else:
                ceiling = valley_ceiling(
                    needs,
                    (valley_end[key] - now) / 3600.0,
                    fill=s.valley_fill,
                    peak_w=history.peak_w(now),
                    night_w=fleet_idle if idle_now else None,
                    planned_w=sum(p.max_power_from(now) for p in plans.values()),
                    peak_fraction=s.valley_peak_fraction,
                )
            plans[key] = stagger(needs, now, ceiling, deadline=valley_end[key])
        else:
            # Nothing to stagger at this valley's start; remember it so late joiners charge
            # freely rather than replanning every round.
            plans[key] = RechargePlan((), 1.0, valley_end[key], ())

    # Each site: plan, reconcile, track.
    for x in usable:
        sm = sites_mem[x.site]
        st = states.get(x.site)
        tz = x.tz or x.policy.timezone
        slot = _slot_of(plans, x.site, now)
        directive = directives.get(x.site)
        if slot is not None:
            directive = FleetDirective(
                discharge_w=directive.discharge_w if directive else 0.0,
                charge_not_before=slot.start,
                charge_limit_w=slot.charge_w,
            )
        battery_params: Params | None = None
        b_code = "unknown"
        reason = ""
        reserve = None
        if st is not None:
            assert x.tariff is not None  # usable sites have one
            d = plan_site(st, x.policy.peak_shaving, x.tariff, now, directive=directive)
            battery_params, b_code, reason = _battery_params(d, st, x, slot, now)
            if x.site in dr_members and b_code not in ("demand_response",):
                hold = _dr_hold(d, st)
                if hold is not None:
                    battery_params, b_code, reason = hold
            reserve = d.reserve_soc
            sm = replace(sm, battery_mode=d.mode)
        # Dormant planner (needs no battery facts).
        m = x.measured
        cap_w = x.channel_load_w(ChannelRole.CAPACITY)
        cov_w = x.channel_load_w(ChannelRole.ANCHOR)
        dpol = x.policy.dormant
        channels = x.policy.breaker_channels()
        low_since = _track_low(
            sm.dormant.low_since, cap_w, capacity_threshold_w(dpol, channels), now
        )
        dstate = replace(
            sm.dormant,
            mains_present=m.mains_present is not False,
            room_temp_c=m.room_temp_c if m.room_temp_c is not None else 25.0,
            capacity_load_w=cap_w,
            coverage_load_w=cov_w,
            low_since=low_since,
        )
        dd = plan_dormant(dstate, dpol, now, channels=channels, window=x.window, tz=tz)
        sm = replace(sm, dormant=after_decision(dstate, dd, now))
        dormant_params: Params = dd.params()
        if dd.mode is DormantMode.AWAKE and m.room_temp_c is None and sm.dormant.dormant:
            dormant_params = Wake()

        keys = dict(sm.keys)
        wanted: list[tuple[str, Params, str]] = [(DORMANT_KEY, dormant_params, dd.reason)]
        if battery_params is not None:
            wanted.append((BATTERY_KEY, battery_params, reason))
        for key, params, why_text in wanted:
            km = observe(sm.key(key), acks, now, s)
            why, km2 = reconcile(key, params.ACTION.value, params.to_map(), km, now, s)
            keys[key] = km2
            if why is not None and km2.last is not None:
                intents.append(
                    Intent(x.site, key, km2.last.action, km2.last.params, s.lease_s, why, why_text)
                )
        # Keys not planned this round still fold their acks in.
        for key in KEYS:
            if key not in {w[0] for w in wanted}:
                keys[key] = observe(sm.key(key), acks, now, s)
        sm = replace(sm, keys=keys)
        failing = [k for k in KEYS if sm.key(k).failures >= s.max_failures]
        if failing and not sm.alarmed:
            km = sm.key(failing[0])
            alarms.append(
                AlarmIntent(
                    x.site,
                    True,
                    f"site does not follow control: {km.failures} failed "
                    f"{km.last.action if km.last else failing[0]} commands "
                    f"({km.last_error or 'no detail'})",
                )
            )
            sm = replace(sm, alarmed=True)
        elif sm.alarmed and all(sm.key(k).failures == 0 for k in KEYS):
            alarms.append(AlarmIntent(x.site, False, "site follows control again"))
            sm = replace(sm, alarmed=False)
        sites_mem[x.site] = sm
        outcomes[x.site] = SiteOutcome(
            x.site,
            battery_params.ACTION.value if battery_params is not None else "",
            b_code,
            dormant_params.ACTION.value,
            dd.code,
            reason,
            directive,
            reserve,
        )

    # Skipped sites still fold acks in (a failure must count even while a site is stale).
    for site in skipped:
        held = sites_mem.get(site)
        if held is not None:
            sites_mem[site] = replace(
                held, keys={k: observe(v, acks, now, s) for k, v in held.keys.items()}
            )

    return Round(
        intents,
        alarms,
        FleetMemory(sites_mem, plans, frozenset(events_done), history),
        outcomes,
        skipped,
        allocations,
    )


def bind_sent(memory: FleetMemory, intent: Intent, command_id: str, sent_at: float) -> FleetMemory:
    """Record the id (and actual send time) of a command the shell has sent for `intent`."""
    sm = memory.sites.get(intent.site, SiteMemory())
    km = sm.key(intent.key)
    if km.last is None:
        return memory
    km = replace(km, last=replace(km.last, command_id=command_id, sent_at=sent_at))
    return _with_key(memory, intent.site, intent.key, km)


def mark_send_failed(
    memory: FleetMemory, intent: Intent, error: str, now: float, settings: ControlSettings
) -> FleetMemory:
    """The shell could not send `intent` (no broker, unknown site): a failure like any other."""
    sm = memory.sites.get(intent.site, SiteMemory())
    km = sm.key(intent.key)
    if km.last is None:
        return memory
    failures = km.failures + 1
    km = replace(
        km,
        last=replace(km.last, status=FAILED, counted=True),
        failures=failures,
        retry_at=now + backoff_s(failures, settings),
        last_error=error,
    )
    return _with_key(memory, intent.site, intent.key, km)


def _with_key(memory: FleetMemory, site: str, key: str, km: KeyMemory) -> FleetMemory:
    sm = memory.sites.get(site, SiteMemory())
    sm = replace(sm, keys={**sm.keys, key: km})
    return replace(memory, sites={**memory.sites, site: sm})


def default_params(key: str) -> Params:
    return BatteryAuto() if key == BATTERY_KEY else Wake()


__all__ = [
    "BATTERY_KEY",
    "DORMANT_KEY",
    "Ack",
    "AlarmIntent",
    "FleetMemory",
    "Intent",
    "KeyMemory",
    "Round",
    "SiteMemory",
    "SiteOutcome",
    "Tracked",
    "backoff_s",
    "bind_sent",
    "ceiling_for",
    "mark_send_failed",
    "observe",
    "plan_round",
    "reconcile",
    "same_command",
]
