"""Clocks: every time-dependent part takes one, so the whole system can run in simulated time.

`SimClock(start, speed)` is a pure function of the wall clock: separate processes given the same
`start` and `speed` (and the same wall-clock anchor) agree on simulated time without talking.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Protocol, runtime_checkable
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator

DEFAULT_TZ = "Asia/Shanghai"


@runtime_checkable
class Clock(Protocol):
    """Simulated or real time; `now()` is Unix seconds (UTC)."""

    def now(self) -> float: ...

    @property
    def speed(self) -> float: ...

    async def sleep(self, seconds: float) -> None:
        """Sleep `seconds` of this clock's time."""
        ...


class SystemClock:
    """The wall clock."""

    speed: float = 1.0

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


@dataclass(frozen=True)
class SimClock:
    """Simulated time running `speed` times faster than the wall clock from `start`.

    `anchor` is the wall-clock instant at which simulated time equals `start`; processes that
    share (start, speed, anchor) agree. Leave `anchor` unset in a single process.
    """

    start: float
    speed: float = 1.0
    anchor: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        if self.speed <= 0:
            raise ValueError(f"SimClock speed must be > 0, got {self.speed}")

    def now(self) -> float:
        return self.start + (time.time() - self.anchor) * self.speed

    def wall_delay(self, seconds: float) -> float:
        """Wall-clock seconds that `seconds` of simulated time take."""
        return max(0.0, seconds) / self.speed

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(self.wall_delay(seconds))


@dataclass
class ManualClock:
    """A clock that moves only when told: for pure tests and step-driven simulation."""

    t: float = 0.0
    speed: float = 1.0

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> float:
        self.t += seconds
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += max(0.0, seconds)
        await asyncio.sleep(0)


def configured_clock(
    start: str | float | None = None, speed: float = 1.0, anchor: float | None = None
) -> Clock:
    """The clock a config's `[clock]` section describes (agent, aggregator, simulators).

    Nothing set (start "now", speed 1, no anchor) is the wall clock. Otherwise a `SimClock`:
    `start` is the simulated time at the wall-clock instant `anchor` (default: now), so every
    process of a fleet given the same three values agrees on simulated time.
    """
    if start in (None, "now") and speed == 1.0 and anchor is None:
        return SystemClock()
    wall = time.time() if anchor is None else anchor
    t0 = wall if start is None or start == "now" else parse_time(start)
    return SimClock(start=t0, speed=speed, anchor=wall)


class ClockSettings(BaseModel):
    """A config's `[clock]` section: start, speed, anchor (default: the wall clock).

    The agent's and the aggregator's configs both hold one; every process of a simulated fleet
    is given the same three values so they agree on time without talking (`configured_clock`).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    start: str | float = "now"
    speed: float = Field(1.0, gt=0, le=100_000)
    anchor: float | None = None

    @field_validator("start")
    @classmethod
    def _start_parses(cls, value: str | float) -> str | float:
        if isinstance(value, str) and value != "now":
            try:
                parse_time(value)
            except ValueError as exc:
                raise ValueError(f"not 'now' or an ISO-8601 time ({exc})") from None
        return value

    def build(self) -> Clock:
        return configured_clock(self.start, self.speed, self.anchor)


def now_ms(clock: Clock) -> int:
    """The clock's time as Unix milliseconds, the unit on the wire."""
    return int(clock.now() * 1000)


def zone(name: str | None = None) -> tzinfo:
    """A time zone by IANA name, default the sites' usual Asia/Shanghai."""
    return ZoneInfo(name or DEFAULT_TZ)


def local_time(ts: float, tz: str | tzinfo | None = None) -> datetime:
    """Unix seconds as an aware datetime in the site's zone (tariff periods are local)."""
    z = tz if isinstance(tz, tzinfo) else zone(tz)
    return datetime.fromtimestamp(ts, UTC).astimezone(z)


def local_hour(ts: float, tz: str | tzinfo | None = None) -> float:
    """Hour of the local day as a float in [0, 24): 13.5 is 13:30."""
    d = local_time(ts, tz)
    return d.hour + d.minute / 60 + d.second / 3600 + d.microsecond / 3.6e9


def parse_time(value: str | float | int) -> float:
    """Unix seconds from a number or an ISO-8601 string (naive strings are UTC)."""
    if isinstance(value, int | float):
        return float(value)
    d = datetime.fromisoformat(value)
    if d.tzinfo is None:
        d = d.replace(tzinfo=UTC)
    return d.timestamp()


__all__ = [
    "DEFAULT_TZ",
    "Clock",
    "ClockSettings",
    "ManualClock",
    "SimClock",
    "SystemClock",
    "configured_clock",
    "local_hour",
    "local_time",
    "now_ms",
    "parse_time",
    "zone",
]
