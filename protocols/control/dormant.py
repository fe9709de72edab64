"""The dormant planner: in a site's quiet hours, switch off its capacity layer, hibernate
surplus rectifier modules and relax the air-conditioning; wake at once when it matters.

Windows are local wall-clock hours (the site's zone), by default chosen from the site's own
hourly capacity-layer load profile: the `window_hours` contiguous hours with the least load
inside configured bounds (such as 00:00–06:00 or the trials' 21:00–09:00).

Entering needs all of: inside the window; mains present; room temperature below the wake limit
less a margin; the capacity layer's draw below `channel_load_threshold_w` per capacity channel
(its mean over the site's capacity channels, so one fleet-wide figure fits sites with one, two
or three capacity AAUs) for `entry_dwell_s`; at least
`min_state_s` since the last switch; room in the last hour for this entry and its wake
(switches + 2 ≤ `max_switches_per_hour`), so that even with wakes that are never refused no
hour ever holds more switches than the limit.

Waking is immediate, whatever the dwell or the switch count, on: mains failure, room
temperature at the limit, a load rise on the coverage (anchor) channels, or the window's end.

Only channels whose role is the capacity layer and that are not marked critical may be opened;
transmission, BBU, gateway/monitoring and the anchor layer never are (`may_open`). The agent's
interlock refuses them independently.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, tzinfo
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from protocols.clock import DEFAULT_TZ, local_hour, local_time, zone
from protocols.control.errors import ControlError
from protocols.control.tariff import parse_hhmm, parse_range
from protocols.messages import Dormant, Wake


class ChannelRole(StrEnum):
    """What a breaker channel feeds. Only CAPACITY can ever be cut by dormancy."""

    TRANSMISSION = "transmission"
    BBU = "bbu"
    GATEWAY = "gateway"
    MONITORING = "monitoring"
    ANCHOR = "anchor"  # the coverage layer the capacity layer depends on
    CAPACITY = "capacity"
    AUX = "aux"  # lighting, sockets: not touched by dormancy either


@dataclass(frozen=True, slots=True)
class Channel:
    """A smart-breaker channel: its number on the wire (1..64), what it feeds, and whether the
    site's config marks it critical (a critical channel is never opened, whatever its role)."""

    number: int
    role: ChannelRole
    critical: bool = False
    name: str = ""


def may_open(channel: Channel) -> bool:
    """Whether dormancy may open this channel: a non-critical capacity-layer channel only."""
    return channel.role is ChannelRole.CAPACITY and not channel.critical


def cuttable_channels(channels: Iterable[Channel]) -> tuple[int, ...]:
    """The channel numbers dormancy may open, ascending, each once. A number that any entry
    marks critical or gives another role is never among them (conflicting config fails safe)."""
    listed = list(channels)
    forbidden = {c.number for c in listed if not may_open(c)}
    return tuple(sorted({c.number for c in listed if may_open(c)} - forbidden))


@dataclass(frozen=True, slots=True)
class Window:
    """Local hours [start_h, end_h); end before start wraps midnight; equal means all day."""

    start_h: float
    end_h: float

    def __post_init__(self) -> None:
        for h in (self.start_h, self.end_h):
            if not 0 <= h <= 24:
                raise ControlError(f"window hour {h} is outside 0..24")

    @classmethod
    def parse(cls, text: str) -> Window:
        """'HH:MM-HH:MM' (wrapping allowed)."""
        parse_range(text)  # refuses malformed and empty ranges
        start_s, _, end_s = text.partition("-")
        return cls(parse_hhmm(start_s) / 60, parse_hhmm(end_s) / 60)

    @property
    def hours(self) -> float:
        span = (self.end_h - self.start_h) % 24
        return 24.0 if span == 0 else span

    def contains_hour(self, hour: float) -> bool:
        return (hour - self.start_h) % 24 < self.hours

    def contains(self, t: float, tz: str | tzinfo | None = None) -> bool:
        return self.contains_hour(local_hour(t, tz))

    def end_after(self, t: float, tz: str | tzinfo | None = None) -> float:
        """Unix seconds of the first window end after `t` (the `until` of a dormant command)."""
        d = local_time(t, tz)
        z = zone(tz) if not isinstance(tz, tzinfo) else tz
        day = d.date() - timedelta(days=1)
        for _ in range(3):
            midnight = datetime(day.year, day.month, day.day, tzinfo=z)
            end = (midnight + timedelta(hours=self.end_h)).timestamp()
            if end > t:
                return end
            day = day + timedelta(days=1)
        raise AssertionError("a window ends within two days")  # pragma: no cover

    def __str__(self) -> str:
        def hm(h: float) -> str:
            return f"{int(h):02d}:{round((h % 1) * 60):02d}"

        return f"{hm(self.start_h)}-{hm(self.end_h)}"


def pick_window(hourly_load_w: Sequence[float], bounds: Window, hours: int) -> Window:
    """The `hours` contiguous whole hours inside `bounds` with the least total load.

    `hourly_load_w[h]` is the site's mean capacity-layer load in local hour h (24 values).
    Ties go to the earliest start (within the bounds). Bounds must start on a whole hour.
    """
    if len(hourly_load_w) != 24:
        raise ControlError(f"need 24 hourly values, got {len(hourly_load_w)}")
    if bounds.start_h % 1:
        raise ControlError("window bounds must start on a whole hour")
    span = math.floor(bounds.hours)
    hours = min(hours, span)
    if hours < 1:
        raise ControlError("a dormant window needs at least one hour")
    start0 = int(bounds.start_h)
    best: tuple[float, int] | None = None
    for offset in range(span - hours + 1):
        total = sum(hourly_load_w[(start0 + offset + k) % 24] for k in range(hours))
        if best is None or total < best[0] - 1e-9:
            best = (total, offset)
    assert best is not None
    start = (start0 + best[1]) % 24
    return Window(float(start), float((start + hours) % 24))


class DormantMode(StrEnum):
    AWAKE = "awake"
    DORMANT = "dormant"


class DormantPolicy(BaseModel):
    """Dormant-mode policy for one site or group; docs/control.md lists the defaults."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    window: str | None = None  # explicit "HH:MM-HH:MM"; None: chosen from history in bounds
    bounds: str = "00:00-06:00"
    window_hours: int = Field(5, ge=1, le=24)
    # Per capacity channel: an idle AAU draws 300-400 W (DOMAIN.md), one carrying only the night
    # trough's traffic ≈ 450-550 W, a full-size 5G site's by day ≥ 600 W.
    channel_load_threshold_w: float = Field(600.0, ge=0)
    entry_dwell_s: float = Field(900.0, ge=0)
    min_state_s: float = Field(1800.0, ge=0)
    max_switches_per_hour: int = Field(2, ge=2)
    rectifier_eco: bool = True
    ac_offset_c: float = Field(2.0, ge=0)
    ac_offset_max_c: float = Field(4.0, ge=0, le=10)
    room_temp_wake_c: float = 35.0
    room_temp_margin_c: float = Field(3.0, ge=0)
    coverage_rise_pct: float = Field(30.0, gt=0)
    coverage_rise_min_w: float = Field(200.0, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: object) -> object:
        if isinstance(data, dict) and "load_threshold_w" in data:
            raise ValueError(
                "load_threshold_w (the capacity layer's total) is now channel_load_threshold_w, "
                "per capacity channel (e.g. 600)"
            )
        return data

    @field_validator("window", "bounds")
    @classmethod
    def _window_text(cls, v: str | None) -> str | None:
        if v is not None:
            Window.parse(v)
        return v

    @model_validator(mode="after")
    def _check(self) -> DormantPolicy:
        if self.ac_offset_c > self.ac_offset_max_c:
            raise ValueError(
                f"ac_offset_c {self.ac_offset_c} is above ac_offset_max_c {self.ac_offset_max_c}"
            )
        return self


def resolve_window(policy: DormantPolicy, hourly_load_w: Sequence[float] | None = None) -> Window:
    """The site's window: explicit, else from its history within the bounds, else the bounds."""
    if policy.window is not None:
        return Window.parse(policy.window)
    bounds = Window.parse(policy.bounds)
    if hourly_load_w is None:
        return bounds
    return pick_window(hourly_load_w, bounds, policy.window_hours)


@dataclass(frozen=True, slots=True)
class DormantState:
    """Measurements now plus the memory the planner keeps between calls.

    `low_since`: when capacity-channel load last went below the threshold (see `track_low`);
    `coverage_at_entry_w`: coverage-channel load when the site went dormant (the rise baseline);
    `switches`: Unix seconds of recent switches (either way).
    """

    mains_present: bool = True
    room_temp_c: float = 25.0
    capacity_load_w: float = 0.0
    coverage_load_w: float = 0.0
    dormant: bool = False
    low_since: float | None = None
    coverage_at_entry_w: float | None = None
    last_switch: float | None = None
    switches: tuple[float, ...] = ()


def capacity_threshold_w(policy: DormantPolicy, channels: Iterable[Channel]) -> float:
    """The capacity layer's total draw below which it counts as quiet: the per-channel threshold
    times the number of capacity channels (at least one), the channels whose draw the caller
    sums into `capacity_load_w`."""
    n = len({c.number for c in channels if c.role is ChannelRole.CAPACITY})
    return policy.channel_load_threshold_w * max(1, n)


def track_low(
    low_since: float | None, load_w: float, threshold_w: float, now: float
) -> float | None:
    """Update `low_since` with a new capacity-load sample (None once the load is above);
    `threshold_w` is the layer's total, `capacity_threshold_w`."""
    if load_w >= threshold_w:
        return None
    return now if low_since is None else low_since


@dataclass(frozen=True, slots=True)
class DormantDecision:
    mode: DormantMode
    code: str
    reason: str
    channels: tuple[int, ...] = ()
    rectifier_eco: bool = False
    ac_offset_c: float = 0.0
    until: float | None = None  # Unix seconds

    def params(self) -> Dormant | Wake:
        """The wire command's params (protocols.messages); `until` goes out in ms."""
        if self.mode is DormantMode.DORMANT:
            return Dormant(
                channels=self.channels,
                rectifier_eco=self.rectifier_eco,
                ac_offset_c=self.ac_offset_c,
                until=None if self.until is None else int(self.until * 1000),
            )
        return Wake()


def _awake(code: str, reason: str) -> DormantDecision:
    return DormantDecision(DormantMode.AWAKE, code, reason)


def plan_dormant(
    state: DormantState,
    policy: DormantPolicy,
    now: float,
    *,
    channels: Sequence[Channel],
    window: Window,
    tz: str | tzinfo | None = DEFAULT_TZ,
) -> DormantDecision:
    """Dormant or awake at `now`, with what to switch and why (see the module doc)."""
    if not policy.enabled:
        return _awake("disabled", "dormant mode is disabled for this site")

    # Wake triggers: checked first, and never held back by dwell or switch limits.
    if not state.mains_present:
        return _awake("mains_failure", "mains failure: wake")
    if state.room_temp_c >= policy.room_temp_wake_c:
        return _awake(
            "room_hot", f"room {state.room_temp_c:.1f} °C ≥ {policy.room_temp_wake_c:g} °C: wake"
        )
    if not window.contains(now, tz):
        return _awake("outside_window", f"outside the dormant window {window}")
    if state.dormant and state.coverage_at_entry_w is not None:
        base = state.coverage_at_entry_w
        rise = state.coverage_load_w - base
        if rise > max(base * policy.coverage_rise_pct / 100.0, policy.coverage_rise_min_w):
            return _awake(
                "traffic_rise",
                f"coverage load rose {rise:.0f} W above {base:.0f} W at entry: wake",
            )

    cut = cuttable_channels(channels)
    until = window.end_after(now, tz)
    dormant = DormantDecision(
        DormantMode.DORMANT,
        "dormant",
        f"dormant until the window ends ({window})",
        channels=cut,
        rectifier_eco=policy.rectifier_eco,
        ac_offset_c=min(policy.ac_offset_c, policy.ac_offset_max_c),
        until=until,
    )
    if state.dormant:
        return dormant

    # Entry conditions: everything must agree.
    if not cut and not policy.rectifier_eco and policy.ac_offset_c == 0:
        return _awake("nothing_to_do", "no capacity channel, ECO or AC offset to act on")
    if state.room_temp_c >= policy.room_temp_wake_c - policy.room_temp_margin_c:
        return _awake("room_warm", f"room {state.room_temp_c:.1f} °C too warm to enter")
    threshold = capacity_threshold_w(policy, channels)
    if state.capacity_load_w >= threshold:
        return _awake(
            "load_high",
            f"capacity load {state.capacity_load_w:.0f} W ≥ {threshold:g} W "
            f"({policy.channel_load_threshold_w:g} W per capacity channel)",
        )
    low_for = 0.0 if state.low_since is None else now - state.low_since
    if low_for < policy.entry_dwell_s:
        return _awake(
            "dwell", f"capacity load low for {low_for:.0f} s of {policy.entry_dwell_s:g} s"
        )
    if state.last_switch is not None and now - state.last_switch < policy.min_state_s:
        return _awake(
            "min_state",
            f"last switch {now - state.last_switch:.0f} s ago, minimum {policy.min_state_s:g} s",
        )
    # A wake is never refused, so an entry must leave room for its own wake in the hour.
    recent = [t for t in state.switches if now - t < 3600]
    if len(recent) + 2 > policy.max_switches_per_hour:
        return _awake(
            "switch_limit",
            f"{len(recent)} switches in the last hour (limit {policy.max_switches_per_hour})",
        )
    return dormant


def after_decision(state: DormantState, decision: DormantDecision, now: float) -> DormantState:
    """The memory to keep once `decision` has been acted on (switch history, entry baseline)."""
    going_dormant = decision.mode is DormantMode.DORMANT
    if going_dormant == state.dormant:
        return state
    switches = (*(t for t in state.switches if now - t < 3600), now)
    return replace(
        state,
        dormant=going_dormant,
        last_switch=now,
        switches=switches,
        coverage_at_entry_w=state.coverage_load_w if going_dormant else None,
    )


__all__ = [
    "Channel",
    "ChannelRole",
    "DormantDecision",
    "DormantMode",
    "DormantPolicy",
    "DormantState",
    "Window",
    "after_decision",
    "capacity_threshold_w",
    "cuttable_channels",
    "may_open",
    "pick_window",
    "plan_dormant",
    "resolve_window",
    "track_low",
]
