"""Alarm rules and the raise/clear engine, pure: state + inputs + time → new state + events.

One `SiteAlarmState` per site. Inputs are the site's readings (canonical point names from
`protocols.points`), its online state and last-seen time, data-loss reports from its agent, and
the time. Nothing here reads a clock or touches the database: `aggregator.alarm_monitor` holds
the states, feeds them and persists the events.

Rules (kind — condition → severity by default, as a telecom NOC grades them, after ITU X.733):

    mains_failure     meter `mains_present` == 0                          major (site on battery)
    battery_low       battery `soc` < reserve SOC (protocols.control)      critical (outage close)
    high_temperature  aircon `room_temp` >= high                           major
    rectifier_fault   rectifier `module_fault` != 0                        minor (N+1 redundancy)
    comm_loss         every reading of a device at one poll is comm-error,
                      persisting `comm_loss.raise_after_s`                 major
    site_offline      death received, or nothing heard for `silence_s`     critical
    data_loss         the agent reports readings dropped from its outbox   warning

Dedupe: at most one active alarm per (site, kind, device). Hysteresis: battery_low clears at
reserve + `battery_clear_margin_pct`, high_temperature at `room_temp_clear_c`; between the two
thresholds nothing changes. A rule's `raise_after_s` asks the condition to hold that long first
(a pending raise), confirmed either by a later reading or by `evaluate_time`.

Times: an alarm raised or cleared by a reading carries the reading's time; by the time check, the
time given. Readings not newer than one already seen for the same device and point (a
historical batch after a newer live one) do not move alarms.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import Enum, StrEnum
from itertools import compress, repeat
from operator import is_not, itemgetter

from pydantic import BaseModel, ConfigDict, Field, model_validator

from aggregator.storage.types import LossRecord, Severity
from protocols.control.reserve import reserve_soc
from protocols.types import Quality, Reading, ReadingColumns


class AlarmKind(StrEnum):
    MAINS_FAILURE = "mains_failure"
    BATTERY_LOW = "battery_low"
    HIGH_TEMPERATURE = "high_temperature"
    RECTIFIER_FAULT = "rectifier_fault"
    COMM_LOSS = "comm_loss"
    SITE_OFFLINE = "site_offline"
    DATA_LOSS = "data_loss"


SITE_WIDE = ""
"""The `device` of alarms that belong to the site as a whole (offline, data loss)."""


class RuleConfig(BaseModel):
    """One rule's grading and debounce."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    severity: Severity
    raise_after_s: float = Field(default=0.0, ge=0)


class AlarmConfig(BaseModel):
    """Thresholds and rules; the `[alarms]` section of the aggregator's config."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mains_failure: RuleConfig = RuleConfig(severity=Severity.MAJOR)
    battery_low: RuleConfig = RuleConfig(severity=Severity.CRITICAL)
    high_temperature: RuleConfig = RuleConfig(severity=Severity.MAJOR, raise_after_s=60)
    rectifier_fault: RuleConfig = RuleConfig(severity=Severity.MINOR)
    comm_loss: RuleConfig = RuleConfig(severity=Severity.MAJOR, raise_after_s=60)
    site_offline: RuleConfig = RuleConfig(severity=Severity.CRITICAL)
    data_loss: RuleConfig = RuleConfig(severity=Severity.WARNING)

    room_temp_high_c: float = 35.0
    room_temp_clear_c: float = 32.0
    battery_low_soc_pct: float = Field(default=30.0, ge=0, le=100)
    """Reserve used when the site's load or battery capacity is not known from its readings."""
    battery_clear_margin_pct: float = Field(default=5.0, ge=0, le=50)
    backup_hours: float = Field(default=3.0, ge=0)
    reserve_floor_pct: float = Field(default=10.0, ge=0, le=100)
    battery_nominal_v: float = Field(default=48.0, gt=0)
    silence_s: float = Field(default=300.0, gt=0)
    data_loss_hold_s: float = Field(default=3600.0, gt=0)
    """A data-loss alarm clears after this long without a new loss report."""

    @model_validator(mode="after")
    def _hysteresis(self) -> AlarmConfig:
        if self.room_temp_clear_c >= self.room_temp_high_c:
            raise ValueError(
                f"alarms.room_temp_clear_c ({self.room_temp_clear_c}) must be below "
                f"alarms.room_temp_high_c ({self.room_temp_high_c})"
            )
        return self

    def rule(self, kind: AlarmKind) -> RuleConfig:
        rule: RuleConfig = getattr(self, kind.value)
        return rule


AlarmKey = tuple[AlarmKind, str]
"""(kind, device): at most one active alarm per key and site."""


@dataclass(frozen=True, slots=True)
class Alarm:
    """One alarm, active while `cleared_ms` is None."""

    site: str
    kind: AlarmKind
    device: str
    severity: Severity
    point: str
    message: str
    raised_ms: int
    cleared_ms: int | None = None

    @property
    def key(self) -> AlarmKey:
        return (self.kind, self.device)


class Transition(StrEnum):
    RAISED = "raised"
    CLEARED = "cleared"


@dataclass(frozen=True, slots=True)
class AlarmEvent:
    transition: Transition
    alarm: Alarm


@dataclass(frozen=True, slots=True)
class Pending:
    """A condition seen but not yet held for its rule's `raise_after_s`."""

    since_ms: int
    point: str
    message: str


@dataclass(frozen=True, slots=True)
class SiteAlarmState:
    """Everything the rules remember about one site."""

    site: str
    active: Mapping[AlarmKey, Alarm] = field(default_factory=dict)
    pending: Mapping[AlarmKey, Pending] = field(default_factory=dict)
    seen: Mapping[tuple[str, str], int] = field(default_factory=dict)
    """(device, point) -> time of the newest reading considered (rule points only)."""
    device_seen: Mapping[str, int] = field(default_factory=dict)
    """device -> time of the newest poll considered for comm loss."""
    values: Mapping[str, float] = field(default_factory=dict)
    """Newest good values of the points the reserve needs (load, voltage, capacity, SOH)."""
    online: bool | None = None
    last_seen_ms: int | None = None
    last_loss_ms: int | None = None


Step = tuple[SiteAlarmState, list[AlarmEvent]]


class _Verdict(Enum):
    RAISE = "raise"
    CLEAR = "clear"
    HOLD = "hold"  # inside the hysteresis band, or no trustworthy value: change nothing


@dataclass(frozen=True, slots=True)
class _Observation:
    t_ms: int
    kind: AlarmKind
    device: str
    point: str
    verdict: _Verdict
    message: str = ""


_RULE_POINTS = {
    "mains_present": AlarmKind.MAINS_FAILURE,
    "soc": AlarmKind.BATTERY_LOW,
    "room_temp": AlarmKind.HIGH_TEMPERATURE,
    "module_fault": AlarmKind.RECTIFIER_FAULT,
}
# Rectifier `load_current` and `dc_voltage` give the DC load; battery `capacity_ah`, `voltage`
# and `soh` the usable energy. Together they place the reserve SOC.
_RESERVE_POINTS = frozenset({"load_current", "dc_voltage", "capacity_ah", "voltage", "soh"})
_WATCHED = frozenset(_RULE_POINTS) | _RESERVE_POINTS
_T = itemgetter(0)  # a Reading's time
_SECOND = itemgetter(1)  # a (device, time) poll's time


# --- the rules ---------------------------------------------------------------------------------


def site_reserve_soc(values: Mapping[str, float], cfg: AlarmConfig) -> float:
    """The reserve SOC (%) from the site's newest values, or the configured fallback.

    Load = rectifier load current × DC voltage; capacity = battery Ah × pack voltage (nominal if
    unknown) × SOH, as in `protocols.control.reserve`.
    """
    load_a = values.get("load_current")
    cap_ah = values.get("capacity_ah")
    if load_a is None or cap_ah is None or cap_ah <= 0:
        return cfg.battery_low_soc_pct
    dc_v = abs(values.get("dc_voltage", cfg.battery_nominal_v)) or cfg.battery_nominal_v
    pack_v = abs(values.get("voltage", cfg.battery_nominal_v)) or cfg.battery_nominal_v
    soh = values.get("soh", 100.0)
    if not 0 < soh <= 100:
        soh = 100.0
    return reserve_soc(
        abs(load_a) * dc_v,
        cap_ah * pack_v,
        backup_hours=cfg.backup_hours,
        floor_pct=cfg.reserve_floor_pct,
        soh_pct=soh,
    )


def _value_verdict(
    kind: AlarmKind, value: float, values: Mapping[str, float], cfg: AlarmConfig
) -> tuple[_Verdict, str]:
    if kind is AlarmKind.MAINS_FAILURE:
        if value:
            return _Verdict.CLEAR, ""
        return _Verdict.RAISE, "mains failure: grid supply absent, site on battery"
    if kind is AlarmKind.RECTIFIER_FAULT:
        if value:
            return _Verdict.RAISE, f"rectifier module fault (module_fault={value:g})"
        return _Verdict.CLEAR, ""
    if kind is AlarmKind.HIGH_TEMPERATURE:
        if value >= cfg.room_temp_high_c:
            return (
                _Verdict.RAISE,
                f"room temperature {value:.1f} °C at or above {cfg.room_temp_high_c:g} °C",
            )
        if value < cfg.room_temp_clear_c:
            return _Verdict.CLEAR, ""
        return _Verdict.HOLD, ""
    if kind is AlarmKind.BATTERY_LOW:
        reserve = site_reserve_soc(values, cfg)
        if value < reserve:
            return _Verdict.RAISE, f"battery SOC {value:.1f} % below reserve {reserve:.1f} %"
        if value >= reserve + cfg.battery_clear_margin_pct:
            return _Verdict.CLEAR, ""
        return _Verdict.HOLD, ""
    return _Verdict.HOLD, ""


def _offline_observation(
    online: bool | None, last_seen_ms: int | None, now_ms: int, cfg: AlarmConfig
) -> _Observation:
    silence_ms = int(cfg.silence_s * 1000)
    if online is False:
        verdict, message = _Verdict.RAISE, "site offline: agent death received"
    elif last_seen_ms is not None and now_ms - last_seen_ms > silence_ms:
        verdict = _Verdict.RAISE
        message = f"site offline: nothing heard for {(now_ms - last_seen_ms) / 1000:.0f} s"
    elif online is True or last_seen_ms is not None:
        verdict, message = _Verdict.CLEAR, ""
    else:
        verdict, message = _Verdict.HOLD, ""  # never heard of: nothing to say yet
    return _Observation(now_ms, AlarmKind.SITE_OFFLINE, SITE_WIDE, "", verdict, message)


class _Keep(Enum):
    """Sentinel: leave this field as it was (None is a value of its own)."""

    KEEP = "keep"


_KEEP = _Keep.KEEP


# --- the engine --------------------------------------------------------------------------------


class _Builder:
    """Mutable working copy of a SiteAlarmState for the length of one evaluate call."""

    def __init__(self, state: SiteAlarmState, cfg: AlarmConfig) -> None:
        self.base = state
        self.cfg = cfg
        self.active = dict(state.active)
        self.pending = dict(state.pending)
        self.events: list[AlarmEvent] = []

    def apply(self, obs: _Observation) -> None:
        rule = self.cfg.rule(obs.kind)
        key: AlarmKey = (obs.kind, obs.device)
        if obs.verdict is _Verdict.RAISE:
            if not rule.enabled or key in self.active:
                return  # dedupe: one active alarm per key
            pending = self.pending.get(key)
            since = pending.since_ms if pending is not None else obs.t_ms
            if obs.t_ms - since >= int(rule.raise_after_s * 1000):
                self.pending.pop(key, None)
                self._raise(key, obs.point, obs.message, obs.t_ms)
            elif pending is None:
                self.pending[key] = Pending(since, obs.point, obs.message)
            return
        self.pending.pop(key, None)
        if obs.verdict is _Verdict.CLEAR:
            self._clear(key, obs.t_ms)

    def promote(self, now_ms: int) -> None:
        """Raise pending conditions that have now held long enough."""
        for key, pending in list(self.pending.items()):
            rule = self.cfg.rule(key[0])
            if now_ms - pending.since_ms >= int(rule.raise_after_s * 1000):
                del self.pending[key]
                if rule.enabled and key not in self.active:
                    self._raise(key, pending.point, pending.message, now_ms)

    def clear_kind(self, kind: AlarmKind, t_ms: int) -> None:
        for key in [k for k in self.active if k[0] is kind]:
            self._clear(key, t_ms)

    def _raise(self, key: AlarmKey, point: str, message: str, t_ms: int) -> None:
        kind, device = key
        alarm = Alarm(
            site=self.base.site,
            kind=kind,
            device=device,
            severity=self.cfg.rule(kind).severity,
            point=point,
            message=message,
            raised_ms=t_ms,
        )
        self.active[key] = alarm
        self.events.append(AlarmEvent(Transition.RAISED, alarm))

    def _clear(self, key: AlarmKey, t_ms: int) -> None:
        alarm = self.active.pop(key, None)
        if alarm is not None:
            cleared = replace(alarm, cleared_ms=max(t_ms, alarm.raised_ms))
            self.events.append(AlarmEvent(Transition.CLEARED, cleared))

    def done(
        self,
        *,
        seen: Mapping[tuple[str, str], int] | None = None,
        device_seen: Mapping[str, int] | None = None,
        values: Mapping[str, float] | None = None,
        online: bool | _Keep | None = _KEEP,
        last_seen_ms: int | _Keep | None = _KEEP,
        last_loss_ms: int | _Keep | None = _KEEP,
    ) -> Step:
        b = self.base
        state = SiteAlarmState(
            site=b.site,
            active=self.active,
            pending=self.pending,
            seen=b.seen if seen is None else seen,
            device_seen=b.device_seen if device_seen is None else device_seen,
            values=b.values if values is None else values,
            online=b.online if isinstance(online, _Keep) else online,
            last_seen_ms=b.last_seen_ms if isinstance(last_seen_ms, _Keep) else last_seen_ms,
            last_loss_ms=b.last_loss_ms if isinstance(last_loss_ms, _Keep) else last_loss_ms,
        )
        return state, self.events


def evaluate_readings(state: SiteAlarmState, readings: Iterable[Reading], cfg: AlarmConfig) -> Step:
    """Apply a batch of the site's readings (any order; older-than-seen ones are ignored).

    Ingest calls this for every stored reading, so the per-reading work is done by C iterators
    (`map`, `compress`, `set`); Python only loops over the few rule points and over the polls
    of devices that are, or may become, in comm loss. An observation that cannot change
    anything (a clear or hold for a key with no active alarm, no pending raise and no raise in
    this batch) is never built: that is every reading of a healthy site.
    """
    cols = ReadingColumns.of(readings)  # what ingest passes: no Reading per reading
    seen = dict(state.seen)
    device_seen = dict(state.device_seen)
    values = dict(state.values)
    live: set[AlarmKey] = set(state.active) | set(state.pending)
    observations: list[_Observation] = []
    watched = compress(range(len(cols)), map(_WATCHED.__contains__, cols.point))
    rule_readings = sorted(map(cols.__getitem__, watched), key=_T)
    for r in rule_readings:
        if r.t <= seen.get((r.device, r.point), -1):
            continue
        seen[(r.device, r.point)] = r.t
        if r.quality is not Quality.GOOD or r.value is None:
            continue
        value = float(r.value)
        if r.point in _RESERVE_POINTS:
            values[r.point] = value
        kind = _RULE_POINTS.get(r.point)
        if kind is not None:
            verdict, message = _value_verdict(kind, value, values, cfg)
            if verdict is _Verdict.RAISE:
                live.add((kind, r.device))  # what follows for this key may clear it
            elif (kind, r.device) not in live:
                continue
            observations.append(_Observation(r.t, kind, r.device, r.point, verdict, message))
    # Comm loss: a poll is a device's readings at one time; it is dead when every one of them is
    # a comm error. Devices with no dead poll and no comm-loss alarm to clear only move on.
    polls = list(zip(cols.device, cols.t, strict=True))
    dead = set(polls).difference(
        compress(polls, map(is_not, cols.quality, repeat(Quality.COMM_ERROR)))
    )
    watch = {d for d, _ in dead}
    watch.update(d for kind, d in live if kind is AlarmKind.COMM_LOSS)
    ordered = sorted(dict.fromkeys(polls), key=_SECOND)
    for device, t in dict(ordered).items():  # each device's newest poll
        if device not in watch and t > device_seen.get(device, -1):
            device_seen[device] = t
    for device, t in ordered if watch else ():
        if device not in watch or t <= device_seen.get(device, -1):
            continue
        device_seen[device] = t
        if (device, t) in dead:
            verdict, message = _Verdict.RAISE, f"device {device!r} not answering (comm-error)"
        else:
            verdict, message = _Verdict.CLEAR, ""
        observations.append(_Observation(t, AlarmKind.COMM_LOSS, device, "", verdict, message))
    observations.sort(key=lambda o: o.t_ms)
    builder = _Builder(state, cfg)
    for obs in observations:
        builder.apply(obs)
    return builder.done(seen=seen, device_seen=device_seen, values=values)


def evaluate_status(
    state: SiteAlarmState,
    *,
    online: bool | None,
    last_seen_ms: int | None,
    now_ms: int,
    cfg: AlarmConfig,
) -> Step:
    """Apply the site's online state (birth/death) and last-seen time as of `now_ms`."""
    last = state.last_seen_ms
    if last_seen_ms is not None:
        last = last_seen_ms if last is None else max(last, last_seen_ms)
    builder = _Builder(state, cfg)
    builder.apply(_offline_observation(online, last, now_ms, cfg))
    return builder.done(online=online, last_seen_ms=last)


def evaluate_loss(state: SiteAlarmState, loss: LossRecord, cfg: AlarmConfig) -> Step:
    """Apply an agent's data-loss report: raise (once) and restart the hold time."""
    builder = _Builder(state, cfg)
    span = ""
    if loss.oldest_ms is not None and loss.newest_ms is not None:
        span = f" taken between {loss.oldest_ms} and {loss.newest_ms} ms"
    message = f"agent dropped {loss.count} readings{span} (outbox full)"
    if loss.count > 0:
        builder.apply(
            _Observation(loss.t_ms, AlarmKind.DATA_LOSS, SITE_WIDE, "", _Verdict.RAISE, message)
        )
    last = loss.t_ms if state.last_loss_ms is None else max(state.last_loss_ms, loss.t_ms)
    return builder.done(last_loss_ms=last)


def evaluate_time(state: SiteAlarmState, now_ms: int, cfg: AlarmConfig) -> Step:
    """The periodic check: silence → offline, pending raises held long enough, data-loss hold."""
    builder = _Builder(state, cfg)
    builder.apply(_offline_observation(state.online, state.last_seen_ms, now_ms, cfg))
    if (AlarmKind.SITE_OFFLINE, SITE_WIDE) not in builder.active:
        # While the site is offline its last values are old news: do not confirm them.
        builder.promote(now_ms)
    hold_ms = int(cfg.data_loss_hold_s * 1000)
    if state.last_loss_ms is not None and now_ms - state.last_loss_ms >= hold_ms:
        builder.clear_kind(AlarmKind.DATA_LOSS, now_ms)
    return builder.done()


def restore(site: str, alarms: Iterable[Alarm]) -> SiteAlarmState:
    """A site's state rebuilt from its persisted active alarms (after a restart)."""
    active = {a.key: a for a in alarms if a.site == site and a.cleared_ms is None}
    loss = active.get((AlarmKind.DATA_LOSS, SITE_WIDE))
    # A restored data-loss alarm restarts its hold from when it was raised, so it still clears.
    return SiteAlarmState(
        site=site, active=active, last_loss_ms=loss.raised_ms if loss is not None else None
    )


__all__ = [
    "SITE_WIDE",
    "Alarm",
    "AlarmConfig",
    "AlarmEvent",
    "AlarmKey",
    "AlarmKind",
    "LossRecord",
    "Pending",
    "RuleConfig",
    "Severity",
    "SiteAlarmState",
    "Step",
    "Transition",
    "evaluate_loss",
    "evaluate_readings",
    "evaluate_status",
    "evaluate_time",
    "restore",
    "site_reserve_soc",
]
